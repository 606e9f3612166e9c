"""render(job): resumed renders equal uninterrupted ones frame for frame, decoder state round trips bitwise,
and every user error is named before work starts without touching an existing output."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from knot_core.config import PRESETS, StreamConfig
from knot_core.dit import KnotDiT
from knot_core.errors import ConfigError, InputError
from knot_core.model_file import SamplerDefaults, save_knot_model
from knot_core.render import RenderJob, render, state_path
from knot_core.vae import StreamingDecoder, VAEConfig, WanVAE
from knot_core.video_reader import count_frames, probe, read_frames

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "media"
FRAMES = 57  # 9 + 4 chunks of 12 (chunk_len 3)


def frames_in_state(path: Path) -> int:
    import json

    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["render"])["frames_written"]


def write_tiny_files(folder: Path) -> dict[str, Path]:
    """A tiny KnotDiT (33-channel layout, 2 steps, 16 fps, 32x32), a tiny Wan VAE and a 64x64 photo."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    sampler = SamplerDefaults(StreamConfig(steps=(1000, 500)), fps=16, resolution=(32, 32))
    save_knot_model(KnotDiT(PRESETS["tiny-noise-ref-mask"]), folder / "model.safetensors", sampler=sampler)
    save_file(WanVAE(VAEConfig.tiny()).state_dict(), str(folder / "vae.safetensors"))
    photo = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)  # the 64 px minimum
    cv2.imwrite(str(folder / "ref.png"), photo)
    return {"reference": folder / "ref.png", "model": folder / "model.safetensors", "vae": folder / "vae.safetensors"}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return write_tiny_files(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def one_thread():
    # two shared cores: one torch thread per process is several times faster than two fighting
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def job(files, out: Path, **options) -> RenderJob:
    return RenderJob(out=out, **files, **{"frames": FRAMES, "crf": 0, **options})


def decoded(path: Path) -> list[np.ndarray]:
    return list(read_frames(path))


def test_resume_gives_the_frames_of_an_uninterrupted_render(files, tmp_path):
    whole, pieces = [], []
    full = render(job(files, tmp_path / "full.mp4"), on_chunk=lambda p: whole.append(p.frames))
    assert (full.frames, full.chunks, full.interrupted) == (FRAMES, 5, False)

    out = tmp_path / "cut.mp4"
    first = render(job(files, out, save_every=2), on_chunk=lambda p: pieces.append(p.frames),
                   should_stop=lambda: len(pieces) == 3)
    assert (first.frames, first.interrupted) == (33, True)  # 9 + 12 + 12: chunks 1-3, the state saved at stop
    assert count_frames(out) == 33 and state_path(out).is_file()
    second = render(job(files, out, resume=True), on_chunk=lambda p: pieces.append(p.frames))
    assert (second.frames, second.chunks, second.interrupted) == (FRAMES, 2, False)
    assert not state_path(out).exists()  # a finished job leaves no state behind

    # the frames the decoder produced (before encoding) are bitwise equal, chunk for chunk
    assert [p.shape[0] for p in pieces] == [p.shape[0] for p in whole] == [9, 12, 12, 12, 12]
    assert all(torch.equal(a, b) for a, b in zip(pieces, whole))
    # and so are the decoded MP4s (crf 0 is lossless H.264, so equal input gives equal pictures)
    a, b = decoded(tmp_path / "full.mp4"), decoded(out)
    assert len(a) == len(b) == FRAMES and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_resume_cuts_chunks_written_after_the_last_save(files, tmp_path):
    out, seen = tmp_path / "late.mp4", []
    # a crash after chunks were written but before their state was saved: the file runs ahead of the state
    render(job(files, out, save_every=2), on_chunk=lambda p: seen.append(1), should_stop=lambda: len(seen) == 2)
    saved = state_path(out).read_bytes()
    render(job(files, out, resume=True, save_every=10), on_chunk=lambda p: seen.append(1),
           should_stop=lambda: len(seen) == 4)  # writes chunks 3 and 4, saves at 45 frames
    state_path(out).write_bytes(saved)  # back to the state at 21 frames: chunks 3-4 must be cut
    assert count_frames(out) == 45
    render(job(files, out, resume=True))
    full = render(job(files, tmp_path / "ref.mp4"))
    a, b = decoded(tmp_path / "ref.mp4"), decoded(out)
    assert full.frames == len(b) == FRAMES and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.skipif(not (SHARED / "speech_en_44k_stereo.m4a").is_file(), reason="shared media absent (../shared)")
def test_resumed_audio_has_the_timeline_of_an_uninterrupted_render(files, tmp_path):
    import av

    speech = SHARED / "speech_en_44k_stereo.m4a"
    render(job(files, tmp_path / "a.mp4", audio=speech))
    seen = []
    render(job(files, tmp_path / "b.mp4", audio=speech), on_chunk=seen.append, should_stop=lambda: len(seen) == 2)
    render(job(files, tmp_path / "b.mp4", audio=speech, resume=True))

    def audio_packets(path):
        with av.open(str(path)) as c:
            return [(p.pts, p.duration) for p in c.demux(c.streams.audio[0]) if p.size]

    assert audio_packets(tmp_path / "a.mp4") == audio_packets(tmp_path / "b.mp4")  # no gap, no overlap
    info = probe(tmp_path / "b.mp4")
    assert info.has_audio and info.frames == FRAMES
    assert abs(info.audio_duration_s - FRAMES / 16) < 1e-3


def test_decoder_state_round_trip_is_bitwise(tmp_path):
    torch.manual_seed(0)
    vae = WanVAE(VAEConfig.tiny()).eval()
    z = torch.randn(1, 16, 7, 4, 4)
    a = StreamingDecoder(vae)
    a.decode(z[:, :, :3])
    saved = {k: v.clone() for k, v in a.state_tensors().items()}
    save_file(saved, str(tmp_path / "d.safetensors"))
    b = StreamingDecoder(vae)
    from safetensors.torch import load_file

    b.load_state_tensors(load_file(str(tmp_path / "d.safetensors")))
    assert (b.latents_decoded, b.frames_decoded) == (3, 9)
    assert torch.equal(a.decode(z[:, :, 3:]), b.decode(z[:, :, 3:]))


def test_existing_output_is_refused_and_left_untouched(files, tmp_path):
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"precious")
    with pytest.raises(InputError, match="already exists; choose another name, pass --overwrite"):
        render(job(files, out))
    with pytest.raises(InputError, match="nothing to resume"):
        render(job(files, out, resume=True))
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize("key, message", [
    ("reference", "reference image .* does not exist"), ("model", "model .* does not exist"),
    ("vae", "VAE .* does not exist")])
def test_missing_inputs_are_named(files, tmp_path, key, message):
    with pytest.raises(InputError, match=message):
        render(job({**files, key: tmp_path / "nope.bin"}, tmp_path / "o.mp4"))
    assert not (tmp_path / "o.mp4").exists()


def test_bad_settings_and_outputs_fail_before_work(files, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['chunk_size'\]; the settings are: strategy"):
        job(files, tmp_path / "o.mp4", settings={"chunk_size": 3})
    with pytest.raises(ConfigError, match="knot_len=3; must be in"):
        render(job(files, tmp_path / "o.mp4", settings={"knot_len": 3}))
    with pytest.raises(InputError, match="output directory .* does not exist"):
        render(job(files, tmp_path / "no" / "o.mp4"))
    with pytest.raises(InputError, match="is not a readable image"):
        (tmp_path / "bad.png").write_bytes(b"not an image")
        render(job({**files, "reference": tmp_path / "bad.png"}, tmp_path / "o.mp4"))
    with pytest.raises(ConfigError, match="no length given"):
        render(job(files, tmp_path / "o.mp4", frames=None))


def test_resume_with_other_settings_is_refused(files, tmp_path):
    out, seen = tmp_path / "s.mp4", []
    render(job(files, out), on_chunk=seen.append, should_stop=lambda: len(seen) == 1)
    with pytest.raises(InputError, match="the job differs from the interrupted one .*'seed': \\(0, 5\\)"):
        render(job(files, out, resume=True, seed=5))
    assert count_frames(out) == 9  # untouched by the refused resume


def test_job_from_mapping_reads_flags_and_settings(files, tmp_path):
    j = RenderJob.from_mapping({"reference": "r.png", "model": "m", "vae": "v", "out": "o.mp4", "chunk-len": 4,
                                "steps": "1000,500", "save_every": 3}, base_dir=tmp_path)
    assert j.settings == {"chunk_len": 4, "steps": (1000, 500)} and j.save_every == 3
    assert j.reference == tmp_path / "r.png" and j.name == "o.mp4"
    with pytest.raises(ConfigError, match="unknown job key 'sped'"):
        RenderJob.from_mapping({"reference": "r", "model": "m", "vae": "v", "out": "o.mp4", "sped": 1})


def test_iter_frames_yields_the_frames_render_writes(files, tmp_path):
    from knot_core.api import iter_frames

    written = []
    render(job(files, tmp_path / "w.mp4", frames=21), on_chunk=lambda p: written.append(p.frames))
    streamed = [c.frames for c in iter_frames(job(files, tmp_path / "unused.mp4", frames=21))]
    assert [f.shape for f in streamed] == [(9, 32, 32, 3), (12, 32, 32, 3)]
    assert all(torch.equal(a, b) for a, b in zip(streamed, written, strict=True))
    assert not (tmp_path / "unused.mp4").exists()


def test_default_saves_the_resume_state_by_time_not_per_chunk(files, tmp_path, monkeypatch):
    import knot_core.render as render_module

    out, present = tmp_path / "timed.mp4", []
    render(job(files, out), on_chunk=lambda p: present.append(state_path(out).exists()),
           should_stop=lambda: len(present) == 3)
    assert present == [False, False, False]  # 3 chunks in far less than 60 s: no per-chunk state of gigabytes
    assert frames_in_state(state_path(out)) == count_frames(out) == 33  # ... and stopping still saved it
    monkeypatch.setattr(render_module, "SAVE_INTERVAL_S", 0.0)
    out, present = tmp_path / "timed0.mp4", []
    render(job(files, out), on_chunk=lambda p: present.append(state_path(out).exists()),
           should_stop=lambda: len(present) == 2)
    assert present == [True, True]


def test_a_render_to_an_output_being_written_is_refused(files, tmp_path):
    import subprocess
    import sys

    from knot_core.output_lock import lock_path

    out = tmp_path / "same.mp4"
    code = "import sys, time\nfrom knot_core.output_lock import claim_output\nwith claim_output(sys.argv[1]):\n" \
           "    print('claimed', flush=True)\n    time.sleep(60)\n"
    other = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[1])
    try:
        assert other.stdout.readline().strip() == "claimed"
        for overwrite in (False, True):
            with pytest.raises(InputError, match=f"being written by process {other.pid}"):
                render(job(files, out, overwrite=overwrite))
        assert not out.exists() and not state_path(out).exists()
    finally:
        other.kill()
        other.wait()
    render(job(files, out, frames=9))  # the killed writer's lock is stale: taken over
    assert count_frames(out) == 9 and not lock_path(out).exists()


def write_tone(path: Path, seconds: float, rate: int = 16000) -> Path:
    """A mono 16-bit WAV: a gliding tone with noise, so every AAC frame has content to encode."""
    import wave

    t = np.arange(int(seconds * rate)) / rate
    samples = 0.4 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * np.random.default_rng(1).standard_normal(t.size)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def packets(path: Path) -> dict[str, list[tuple[int, bytes]]]:
    import av

    found: dict[str, list[tuple[int, bytes]]] = {"video": [], "audio": []}
    with av.open(str(path)) as c:
        for p in c.demux():
            if p.size:
                found[p.stream.type].append((p.pts, bytes(p)))
    return found


@pytest.mark.parametrize("stop_after", [2, 3, 4])  # 21 frames (first segment), 33 (its end), 45 (past a restart)
def test_resume_is_bit_exact_at_the_default_crf_with_audio(files, tmp_path, stop_after):
    audio = write_tone(tmp_path / "tone.wav", FRAMES / 16 + 0.5)
    defaults = {"audio": audio, "crf": 18}  # crf 18 is lossy: x264's rate control carries state frame to frame
    render(job(files, tmp_path / "full.mp4", **defaults))
    seen = []
    out = tmp_path / "cut.mp4"
    first = render(job(files, out, **defaults), on_chunk=seen.append, should_stop=lambda: len(seen) == stop_after)
    assert first.interrupted and first.frames == [9, 21, 33, 45][stop_after - 1]
    render(job(files, out, resume=True, **defaults))

    a, b = packets(tmp_path / "full.mp4"), packets(out)
    assert len(a["video"]) == FRAMES and a["video"] == b["video"]  # every H.264 packet, bit for bit
    assert len(a["audio"]) > 50 and a["audio"] == b["audio"]  # every AAC packet, bit for bit
    x, y = decoded(tmp_path / "full.mp4"), decoded(out)
    assert len(x) == len(y) == FRAMES and all(np.array_equal(p, q) for p, q in zip(x, y))
    assert (tmp_path / "full.mp4").read_bytes() == out.read_bytes()  # the same file


def test_silently_wrong_inputs_are_refused_before_any_file(files, tmp_path):
    from knot_core.errors import CheckpointError

    out = tmp_path / "x.mp4"
    text = tmp_path / "nan.safetensors"
    save_file({"context": torch.full((4, 32), float("nan"))}, str(text))  # tiny preset: text_dim 32
    with pytest.raises(CheckpointError, match="nan.safetensors holds NaN or infinite values"):
        render(job(files, out, text=text))
    from knot_core.checkpoints import check_text, describe_dit

    with pytest.raises(CheckpointError, match="text embedding holds NaN or infinite values"):  # a node's tensor
        check_text(describe_dit(files["model"]), torch.full((1, 4, 32), float("nan")))

    wav = write_tone(tmp_path / "speech.wav", 3.0)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(wav.read_bytes()[:200])  # a 200-byte copy of a 3 s WAV
    with pytest.raises(InputError, match=r"is truncated: its header declares 3.00 s .* holds 0.005 s"):
        render(job(files, out, audio=cut, frames=None))

    # 4096x4096 on a model trained at 32x32: refused with the memory estimate, before any frame
    with pytest.raises(InputError, match=r"--width 4096 --height 4096 is 16384x the area this model was trained at "
                                         r"\(32x32\): it would render untrained noise and need at least [0-9.]+ GiB: "
                                         r"K/V caches [0-9.]+, activations [0-9.]+, VAE caches [0-9.]+"):
        render(job(files, out, width=4096, height=4096))
    assert not out.exists() and not state_path(out).exists()
    render(job(files, out, width=64, height=64, frames=9))  # 4x the trained area is allowed
    assert probe(out).width == 64


def test_the_memory_estimate_counts_the_kv_caches_exactly():
    from knot_core.render_size import kv_bytes

    dit, cfg = PRESETS["wan2.1-t2v-1.3b"], StreamConfig()
    # README "Speed": 4.4 GiB of bf16 K/V at 480x832 (1.47 GiB each for keys, rotated keys, values)
    assert abs(kv_bytes(dit, cfg, (60, 104), 2) / 2**30 - 4.4) < 0.05


def test_a_model_with_adapters_render_cannot_feed_is_refused_not_dropped(files, tmp_path):
    demo_model = Path(__file__).resolve().parents[1] / "knot_core" / "models" / "demo.safetensors"
    with pytest.raises(InputError, match=r"driven by the \['motion'\] signal\(s\), which render has no input for"):
        render(job({**files, "model": demo_model}, tmp_path / "d.mp4"))
    assert not (tmp_path / "d.mp4").exists()


def test_the_reference_size_rule_is_the_nodes(files, tmp_path):
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((48, 40, 3), np.uint8))
    with pytest.raises(InputError, match="reference image is 40x48 px; a portrait needs at least 64 px"):
        render(job({**files, "reference": small}, tmp_path / "s.mp4"))
