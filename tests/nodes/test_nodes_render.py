"""Every node's function on tiny real model files, without ComfyUI: load, encode, settings, render to MP4."""

from __future__ import annotations

import gc
import os
import types
import weakref
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from conftest import TINY_STREAM, RecordingHost, RecordingProgress, portrait

from knot_core.compilation import find_cxx
from knot_core.config import StreamConfig
from knot_core.engine.state import StreamState  # noqa: F401  (the model must not hold one)
from knot_core.engine.stream import StreamInputs, start_stream
from knot_core.errors import CheckpointError, ConfigError, InputError
from knot_core.pipeline import frame_stream
from knot_core.vae import StreamingDecoder, VAEConfig, WanVAE
from knot_core.video_reader import count_frames, probe, read_frames
from nodes import NODE_CLASS_MAPPINGS
from nodes.host import RenderInterrupted, StandaloneHost, use_host

N = NODE_CLASS_MAPPINGS


def _load(name="tiny.safetensors"):
    out = N["KnotForcingModelLoader"]().load(name, "fp32")
    return out["result"][0], out["ui"]["text"][0]


def _vae():
    return N["KnotForcingVAELoader"]().load("tiny_vae.safetensors", "fp32")[0]


def _reference(model, vae, image=None, **kw):
    args = dict(framing="crop", width=0, height=0, center_x=0.5, center_y=0.5)
    args.update(kw)
    return N["KnotForcingEncodeReference"]().encode(model, vae, portrait() if image is None else image, **args)[0]


def _render(model, vae, ref, **kw):
    args = dict(seed=7, length=1.0, length_unit="seconds", filename_prefix="test/run", max_image_frames=64)
    args.update(kw)
    return N["KnotForcingStreamingSampler"]().render(model, vae, ref, unique_id="5", **args)


def test_model_loader_lists_both_folders_and_shows_the_summary(models_dir):
    choices = N["KnotForcingModelLoader"].INPUT_TYPES()["required"]["model_name"][0]
    assert choices == ["tiny.safetensors", "tiny_t2v.safetensors"]
    loaded, text = _load()
    assert loaded.info.config.cond_layout == "noise_ref_mask" and loaded.info.sampler.resolution == (32, 32)
    assert "format:" in text and "in_dim 33" in text and "chunk_len 3, knot_len 1" in text
    t2v, _ = _load("tiny_t2v.safetensors")
    assert t2v.info.sampler.stream.strategy == "self_forcing"
    with pytest.raises(CheckpointError, match="not found"):  # a node reads no path, only the folders' names
        _load(str(models_dir / "diffusion_models" / "tiny_t2v.safetensors"))
    with pytest.raises(CheckpointError, match="'missing.safetensors' not found in models/knot_forcing or "
                                              "models/diffusion_models"):
        _load("missing.safetensors")


def test_vae_from_comfy_reuses_the_weights(models_dir):
    vae = _vae()
    comfy_like = types.SimpleNamespace(first_stage_model=vae)  # ComfyUI's VAE wrapper holds the module there
    again = N["KnotForcingVAEFromComfy"]().convert(comfy_like, "fp32")[0]
    assert isinstance(again, WanVAE)
    for (k, a), (_, b) in zip(vae.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(InputError, match="expected ComfyUI's VAE"):
        N["KnotForcingVAEFromComfy"]().convert(object(), "fp32")


def test_encode_reference_sizes_and_errors(models_dir):
    model, _ = _load()
    vae = _vae()
    ref = _reference(model, vae)
    assert (ref.height, ref.width, tuple(ref.latent.shape)) == (32, 32, (1, 16, 1, 4, 4))
    wide = _reference(model, vae, torch.rand(1, 96, 192, 3), framing="face_crop", width=48, height=32)
    assert tuple(wide.latent.shape) == (1, 16, 1, 4, 6)
    mask = torch.ones(1, 96, 96)
    assert tuple(_reference(model, vae, keep_mask=mask).keep_mask.shape) == (4, 4)
    with pytest.raises(InputError, match="reference image is 48x48 px; a portrait needs at least 64 px"):
        _reference(model, vae, torch.rand(1, 48, 48, 3))
    with pytest.raises(InputError, match="no reference image"):
        _reference(model, vae, torch.rand(96, 96, 3))
    with pytest.raises(InputError, match="height=40 is not a positive multiple of 16"):
        _reference(model, vae, height=40)


def test_settings_widgets_are_stream_config_fields_and_errors_are_its_own():
    names = {f.name for f in fields(StreamConfig)}
    for cls in (N["KnotForcingKnotSettings"], N["KnotForcingRunningAhead"]):
        widgets = {k for k, v in cls.INPUT_TYPES()["required"].items()}
        assert widgets <= names, widgets - names
    build = N["KnotForcingKnotSettings"]().build
    settings = build("knot", 2, 1, 4, "1000, 600", 3.0, 0.25)[0]
    cfg = settings.resolve(StreamConfig())
    assert (cfg.chunk_len, cfg.knot_len, cfg.window_len, cfg.steps, cfg.shift, cfg.fusion_weight) == \
        (2, 1, 4, (1000, 600), 3.0, 0.25)
    for args in [("self_forcing", 3, 1, 6, "1000", 5.0, 0.5), ("knot", 2, 2, 6, "1000", 5.0, 0.5),
                 ("knot", 3, 1, 6, "500,750", 5.0, 0.5)]:
        with pytest.raises(ConfigError) as ours:
            build(*args)
        kwargs = dict(zip(["chunk_len", "knot_len", "window_len"], args[1:4]),
                      steps=tuple(int(s) for s in args[4].split(",")))
        with pytest.raises(ConfigError) as theirs:
            StreamConfig.for_strategy(args[0], **kwargs)
        assert str(ours.value) == str(theirs.value)
    with pytest.raises(ConfigError, match="steps='1000,x'"):
        build("knot", 3, 1, 6, "1000,x", 5.0, 0.5)
    ahead = N["KnotForcingRunningAhead"]().build(True, 12, 5, settings)[0]
    assert ahead.resolve(StreamConfig()).replace() == cfg.replace(ahead_init=12, ahead_step=5)
    alone = N["KnotForcingRunningAhead"]().build(False, 8, 4)[0]
    assert alone.resolve(TINY_STREAM) == TINY_STREAM.replace(running_ahead=False, ahead_init=8, ahead_step=4)


def test_render_writes_the_file_reports_each_chunk_and_matches_knot_core(models_dir, recording_host):
    model, _ = _load()
    vae = _vae()
    ref = _reference(model, vae)
    out = _render(model, vae, ref)
    path, video, images = out["result"]
    assert Path(path).is_file() and Path(path).name == "run_00001.mp4" and video == path
    info = probe(path)
    assert (info.frames, info.width, info.height) == (16, 32, 32)
    assert tuple(images.shape) == (16, 32, 32, 3)
    # the nodes add nothing to the numbers: the same stream straight from knot_core
    cfg, inputs = TINY_STREAM, StreamInputs((4, 4), reference=ref.latent)
    direct = torch.cat([p.frames for p in frame_stream(model.model, cfg, inputs,
                                                       start_stream(model.model, cfg, inputs, seed=7),
                                                       StreamingDecoder(vae), num_frames=9)])
    assert torch.equal((images[:9] * 255).round().to(torch.uint8), direct)
    chunk_events = [d for e, d in recording_host.events if e == "knotforcing.chunk"]
    assert [d["chunk"] for d in chunk_events] == [0, 1]
    assert [d["first_frame"] for d in chunk_events] == [0, 9]
    assert [d["frame_count"] for d in chunk_events] == [9, 7]
    assert [d["knot_boundary"] for d in chunk_events] == [None, 9]
    assert [d["ref_index"] for d in chunk_events] == [4, 7] and chunk_events[0]["node"] == "5"
    assert all(len(d["frames"]) == d["frame_count"] for d in chunk_events)
    assert recording_host.progress_bars[0].updates == [1, 2] and recording_host.progress_bars[0].total == 2
    assert recording_host.events[-1] == ("knotforcing.done", {
        "node": "5", "filename": "run_00001.mp4", "subfolder": "test", "type": "output", "frames": 16,
        "ended": "done", "interrupted": False, "text": "done: 16 frames in test/run_00001.mp4"})
    assert recording_host.freed == 1
    # core's video UI output (comfy_api PreviewVideo): the frontend plays an animated output that is not .png/.webp
    assert out["ui"]["images"] == [{"filename": "run_00001.mp4", "subfolder": "test", "type": "output"}]
    assert out["ui"]["animated"] == (True,)
    second = _render(model, vae, ref, length=9, length_unit="frames")["result"]
    assert Path(second[0]).name == "run_00002.mp4"
    assert torch.equal(second[2], images[:9])  # the same model twice: nothing carried between prompts


def test_long_video_returns_one_frame_and_says_so(models_dir, recording_host):
    model, _ = _load()
    vae = _vae()
    out = _render(model, vae, _reference(model, vae), length=9, length_unit="frames", max_image_frames=8)
    assert tuple(out["result"][2].shape) == (1, 32, 32, 3)
    last = (out["result"][2][0] * 255).round().to(torch.uint8).numpy()
    assert (last == recording_host.progress_bars[0].previews[-1]).all()
    assert "use the file" in out["ui"]["text"][1]
    assert count_frames(out["result"][0]) == 9


def test_interrupt_keeps_the_finished_chunks_and_the_next_run_is_clean(models_dir):
    model, _ = _load()
    vae = _vae()
    ref = _reference(model, vae)
    with use_host(RecordingHost(interrupt_after=2)) as h:
        with pytest.raises(RenderInterrupted):
            _render(model, vae, ref, length=60, length_unit="frames")
        done = h.events[-1][1]
        assert h.events[-1][0] == "knotforcing.done" and done["interrupted"] and done["frames"] == 9 + 12
        assert done["ended"] == "cancelled" and done["text"] == f"cancelled — 21 frames kept in test/{done['filename']}"
        path = Path(os.environ["KNOTFORCING_OUTPUT_DIR"]) / "test" / done["filename"]
        assert count_frames(path) == 21 and probe(path).frames == 21  # finalised: opens, exactly 2 chunks
        assert not h.interrupted()  # consumed by the raise
        first_run = h.progress_bars[0].previews  # last frame of each finished chunk, exact
        again = _render(model, vae, ref, length=21, length_unit="frames")["result"][2]
    assert len(list(read_frames(path))) == 21
    frames = (again * 255).round().to(torch.uint8).numpy()
    assert (frames[8] == first_run[0]).all() and (frames[20] == first_run[1]).all()


class _HookProgress(RecordingProgress):
    """As ComfyUI's progress hook: the update after `after` chunks raises (the interrupt, or any other error)."""

    def __init__(self, *args, after: int, error: BaseException) -> None:
        super().__init__(*args)
        self.after, self.error = after, error

    def update(self, done, preview=None):
        super().update(done, preview)
        if done == self.after:
            raise self.error


@pytest.mark.parametrize(("error", "ended"), [(RenderInterrupted("stop"), "cancelled"),
                                             (RuntimeError("oom"), "failed")])
def test_an_exception_in_a_chunk_still_ends_the_node_with_the_file(models_dir, error, ended):
    """ComfyUI's progress hook raises the interrupt inside on_chunk; the done event names the file and its frames."""
    model, _ = _load()
    vae = _vae()
    ref = _reference(model, vae)
    host = RecordingHost()
    host.progress = lambda total, node_id: _HookProgress(total, node_id, None, after=2, error=error)
    with use_host(host), pytest.raises(type(error)):
        _render(model, vae, ref, length=60, length_unit="frames")
    chunks = [d for e, d in host.events if e == "knotforcing.chunk"]
    event, done = host.events[-1]
    path = Path(os.environ["KNOTFORCING_OUTPUT_DIR"]) / "test" / done["filename"]
    assert event == "knotforcing.done" and done["ended"] == ended and done["interrupted"]
    assert done["frames"] == probe(path).frames == sum(d["frame_count"] for d in chunks) == 21  # every chunk shown
    assert done["text"] == f"{ended} — 21 frames kept in test/{done['filename']}"


def test_text_conditioning(models_dir, recording_host):
    model, _ = _load()
    vae = _vae()
    ref = _reference(model, vae)
    text = [[torch.randn(1, 5, 32), {"pooled_output": None}]]
    with_text = _render(model, vae, ref, text=text, length=9, length_unit="frames")["result"][2]
    without = _render(model, vae, ref, length=9, length_unit="frames")["result"][2]
    assert not torch.equal(with_text, without)
    with pytest.raises(CheckpointError, match=r"text embedding has shape \[1, 5, 4096\]"):
        _render(model, vae, ref, text=[[torch.randn(1, 5, 4096), {}]])


def test_bad_inputs_fail_before_sampling(models_dir, recording_host):
    model, _ = _load()
    vae = _vae()
    ref = _reference(model, vae)
    out_dir = Path(os.environ["KNOTFORCING_OUTPUT_DIR"])
    wrong_vae = WanVAE(VAEConfig(dim=8, z_dim=8))
    with pytest.raises(InputError, match="the VAE has 8 latent channels but the model works in 16"):
        _render(model, wrong_vae, ref)
    with pytest.raises(InputError, match="no reference"):
        _render(model, vae, None)
    with pytest.raises(InputError, match="no driving signal with an end"):
        _render(model, vae, ref, length_unit="signal")
    size_only = N["KnotForcingNoReference"]().make(32, 32)[0]
    with pytest.raises(InputError, match="anchors on a reference image but none was given"):
        _render(model, vae, size_only)
    with pytest.raises(InputError, match="multiples of 16"):
        N["KnotForcingNoReference"]().make(40, 32)
    assert not any(out_dir.rglob("*.mp4")) and not recording_host.events


def test_text_only_model_without_a_reference(models_dir, recording_host):
    t2v, _ = _load("tiny_t2v.safetensors")
    out = _render(t2v, _vae(), N["KnotForcingNoReference"]().make(48, 32)[0], length=9, length_unit="frames",
                  text=[[torch.randn(1, 4, 32), {}]])
    info = probe(out["result"][0])
    assert (info.frames, info.width, info.height) == (9, 48, 32)


def test_model_is_freed_after_a_render(models_dir):
    model, _ = _load()
    vae = _vae()
    with use_host(RecordingHost()):
        out = _render(model, vae, _reference(model, vae), length=9, length_unit="frames")
    ref = weakref.ref(model.model)
    assert not any(isinstance(v, torch.Tensor) and v.numel() > 0 for v in vars(model.model).values()
                   if not isinstance(v, torch.nn.Module))
    del model, out
    gc.collect()
    assert ref() is None  # nothing (host, caches, globals) keeps the weights alive


def test_standalone_host_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("KNOTFORCING_MODELS_DIR", str(tmp_path))
    (tmp_path / "vae" / "sub").mkdir(parents=True)
    (tmp_path / "vae" / "sub" / "a.safetensors").write_bytes(b"x")
    (tmp_path / "vae" / "notes.txt").write_text("x")
    h = StandaloneHost()
    assert h.list_models("vae") == ["sub/a.safetensors"]
    assert h.model_path("vae", "sub/a.safetensors") == tmp_path / "vae" / "sub" / "a.safetensors"
    assert h.model_path("vae", "b.safetensors") is None
    with pytest.raises(InputError, match="points outside the output folder"):
        h.output_file("../x", "mp4")


@pytest.mark.skipif(find_cxx() is None, reason="compile on the CPU needs a C++ compiler (the loader refuses it)")
def test_model_loader_compiles_the_blocks_on_request(models_dir):
    out = N["KnotForcingModelLoader"]().load("tiny.safetensors", "fp32", compile="default")
    block = out["result"][0].model.blocks[0]
    assert {"attention_inputs", "attention_output"} <= set(vars(block))  # compiled wrappers over the methods
    with pytest.raises(ConfigError, match="compile='fast'; allowed: none, default, max-autotune"):
        N["KnotForcingModelLoader"]().load("tiny.safetensors", "fp32", compile="fast")
