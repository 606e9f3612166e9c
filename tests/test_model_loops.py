"""Tiny files in LiveTalk's and Causal Forcing's layouts (real key names, real safetensors / .pt) are recognised by
`inspect` with the authors' loop as the recommendation; a user's `loop` overrides it (and picks the .pt section the
authors load); wrong files get one clear message."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from knot_core.adapters.avatar_audio import AvatarAudioAdapter, AvatarAudioConfig
from knot_core.checkpoints import describe_dit, load_dit, save_knot_model
from knot_core.cli import main
from knot_core.config import DiTConfig, StreamConfig
from knot_core.dit import KnotDiT
from knot_core.errors import CheckpointError
from knot_core.model_file import FORMAT_SAMPLERS
from knot_core.model_loops import LOOPS

TINY = dict(dim=64, ffn_dim=128, num_heads=2, freq_dim=32, text_dim=32, text_len=8)
FLAGS = ["--num-heads", "2", "--text-len", "8"]
KW = {"num_heads": 2, "text_len": 8}
COMFY_META = {"config": json.dumps({"transformer": {"causal_ar": True}})}


def _livetalk_model(in_layout: str = "noise_ref_mask", seed: int = 0) -> KnotDiT:
    torch.manual_seed(seed)
    model = KnotDiT(DiTConfig(num_layers=4, cond_layout=in_layout, **TINY))
    model.add_adapter("avatar_audio", AvatarAudioAdapter(AvatarAudioConfig(feature_dim=8, token_dim=4, dim=64,
                                                                           num_blocks=1)))
    return model


def _livetalk_keys(model: KnotDiT) -> dict[str, torch.Tensor]:
    """LiveTalk's model.safetensors: bare Wan keys plus audio_proj.* / audio_cond_projs.*, LoRA merged."""
    return {k.removeprefix("driving.avatar_audio."): v.clone() for k, v in model.state_dict().items()}


def _t2v(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in KnotDiT(DiTConfig(num_layers=2, **TINY)).state_dict().items()}


def _inspect(capsys, *args) -> dict[str, str]:
    assert main(["inspect", *map(str, args), *FLAGS]) == 0
    return {k: v.strip() for k, v in (line.split(":", 1) for line in capsys.readouterr().out.splitlines())}


def _error(capsys, *args) -> str:
    assert main(["inspect", *map(str, args), *FLAGS]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_livetalk_file_is_recognised_and_loads_strictly(tmp_path, capsys):
    model = _livetalk_model()
    save_file(_livetalk_keys(model), tmp_path / "model.safetensors")
    lines = _inspect(capsys, tmp_path / "model.safetensors")
    assert lines["format"].startswith("livetalk: LiveTalk-1.3B / merged OmniAvatar-1.3B layout")
    assert lines["conditioning"].startswith("in_dim 33, layout noise_ref_mask")
    assert lines["driving"] == "avatar_audio (avatar_audio)"
    assert lines["loop"] == "livetalk (named by the file)"
    assert lines["sampler"] == (
        "strategy longlive, chunk_len 3, knot_len 0, window_len 3, sink_len 9, sink_positions absolute, "
        "steps 1000,750,500,250, shift 5, fps 16, resolution 512x512, timestep_dtype bfloat16, reference_pin clean, "
        "audio_alignment livetalk")
    loaded, info = load_dit(tmp_path / "model.safetensors", dtype="fp32", **KW)
    assert info.sampler == LOOPS["livetalk"].sampler
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(),
                                                  strict=True))
    # LiveTalk's .pt fallback takes sd['model'], and a ComfyUI-style prefix: the same model
    torch.save({"model": _livetalk_keys(model)}, tmp_path / "model.pt")
    assert describe_dit(tmp_path / "model.pt", **KW).loop == "livetalk"
    save_file({f"model.diffusion_model.{k}": v for k, v in _livetalk_keys(model).items()}, tmp_path / "c.safetensors")
    assert describe_dit(tmp_path / "c.safetensors", **KW).format == "livetalk"
    # a merged AvatarForcing file has this very layout: its loop is one choice away
    chosen = describe_dit(tmp_path / "model.safetensors", loop="avatar_forcing", **KW)
    assert (chosen.loop_source, chosen.sampler) == ("chosen", FORMAT_SAMPLERS["avatarforcing"])


def test_converted_livetalk_keeps_its_loop(tmp_path, capsys):
    save_file(_livetalk_keys(_livetalk_model()), tmp_path / "model.safetensors")
    model, info = load_dit(tmp_path / "model.safetensors", dtype="fp32", **KW)
    save_knot_model(model, tmp_path / "knot.safetensors", info)
    lines = _inspect(capsys, tmp_path / "knot.safetensors")
    assert lines["format"].endswith("converted from livetalk")
    assert lines["loop"] == "livetalk (named by the file)"
    assert describe_dit(tmp_path / "knot.safetensors").sampler == LOOPS["livetalk"].sampler


def test_causal_forcing_pt_names_its_loops_and_the_chosen_loop_picks_the_authors_section(tmp_path, capsys):
    generator, ema, critic = _t2v(1), _t2v(2), _t2v(3)
    torch.save({f"{name}": {f"model.{k}": v for k, v in sd.items()}
                for name, sd in (("generator", generator), ("generator_ema", ema), ("critic", critic))},
               tmp_path / "causal_forcing.pt")
    path = tmp_path / "causal_forcing.pt"
    lines = _inspect(capsys, path)
    assert lines["format"].startswith("forcing_pt:")
    assert lines["loop"] == ("the format's defaults; files of causal_forcing_chunkwise, causal_forcing_framewise, "
                             "causal_forcing_pp_2step, causal_forcing_pp_1step have this same layout: name one with "
                             "loop= (--loop)")
    lines = _inspect(capsys, path, "--loop", "causal_forcing_chunkwise")
    assert lines["loop"] == "causal_forcing_chunkwise (chosen by the user)"
    assert lines["sampler"].startswith("strategy self_forcing, chunk_len 3, knot_len 0, window_len 18, sink_len 0, "
                                       "steps 1000,750,500,250, shift 5, fps 16, resolution 480x832")
    chunkwise, _ = load_dit(path, dtype="fp32", loop="causal_forcing_chunkwise", **KW)
    assert all(torch.equal(chunkwise.state_dict()[k], v) for k, v in generator.items())  # 'generator', no EMA
    lines = _inspect(capsys, path, "--loop", "causal_forcing_pp_2step")
    assert lines["sampler"].endswith("first_chunk_steps 1000,750,500,250")
    assert "window_len 20" in lines["sampler"] and "steps 1000,500," in lines["sampler"]
    framewise, _ = load_dit(path, dtype="fp32", loop="causal_forcing_framewise", **KW)
    assert all(torch.equal(framewise.state_dict()[k], v) for k, v in ema.items())  # with --use_ema


@pytest.mark.parametrize("prefix", ["model.diffusion_model.", ""])
def test_comfyui_repackaged_causal_forcing_is_the_framewise_loop(tmp_path, capsys, prefix):
    """What ComfyUI core's AR template loads: Wan keys with the causal_ar config metadata."""
    weights = _t2v(4)
    save_file({prefix + k: v for k, v in weights.items()}, tmp_path / "causal_forcing-framewise.safetensors",
              metadata=COMFY_META)
    lines = _inspect(capsys, tmp_path / "causal_forcing-framewise.safetensors")
    assert lines["causal"] == "yes"
    assert lines["loop"] == "causal_forcing_framewise (named by the file)"
    assert lines["sampler"] == ("strategy self_forcing, chunk_len 1, knot_len 0, window_len 20, sink_len 0, "
                                "steps 1000,750,500,250, shift 5, fps 16, resolution 480x832")
    model, info = load_dit(tmp_path / "causal_forcing-framewise.safetensors", dtype="fp32", **KW)
    assert info.sampler == LOOPS["causal_forcing_framewise"].sampler
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    save_file({prefix + k: v for k, v in weights.items()}, tmp_path / "plain.safetensors")
    assert describe_dit(tmp_path / "plain.safetensors", **KW).loop == ""  # no metadata: nothing named


def test_wrong_files_get_one_clear_message(tmp_path, capsys):
    t2v_with_audio = _livetalk_keys(_livetalk_model("noise"))
    save_file(t2v_with_audio, tmp_path / "a.safetensors")
    err = _error(capsys, tmp_path / "a.safetensors")
    assert "audio adapter" in err and "takes 16 channels" in err and "take 33" in err
    # OmniAvatar's pytorch_model.pt: LoRA pairs + patch_embedding + audio, no base block weights
    full = _livetalk_keys(_livetalk_model())
    delta = {k: v for k, v in full.items() if not k.startswith("blocks.")}
    delta["blocks.0.self_attn.q.lora_A.default.weight"] = torch.zeros(4, 64)
    delta["blocks.0.self_attn.q.lora_B.default.weight"] = torch.zeros(64, 4)
    torch.save(delta, tmp_path / "pytorch_model.pt")
    err = _error(capsys, tmp_path / "pytorch_model.pt")
    assert "LoRA delta" in err and "merge_lora.py" in err
    # a loop made for another layout
    save_file(_t2v(5), tmp_path / "t2v.safetensors")
    err = _error(capsys, tmp_path / "t2v.safetensors", "--loop", "livetalk")
    assert "loop='livetalk' is for a DiT with the 'noise_ref_mask' input layout" in err
    with pytest.raises(CheckpointError, match="not a known model loop; choose one of: livetalk"):
        describe_dit(tmp_path / "t2v.safetensors", loop="self_forcing_dmd", **KW)


def test_loader_node_offers_the_loops():
    nodes = pytest.importorskip("nodes.model_nodes")
    widget = nodes.KnotForcingModelLoader.INPUT_TYPES()["optional"]["loop"]
    assert widget[0] == ["auto", *LOOPS] and widget[1]["default"] == "auto"


def test_loop_settings_are_the_published_ones():
    lt = LOOPS["livetalk"].sampler.stream
    assert (lt.chunk_len, lt.sink_len, lt.window_len, lt.sink_len + lt.window_len + lt.chunk_len) == (3, 9, 3, 15)
    cf = {n: LOOPS[n].sampler.stream for n in LOOPS if n.startswith("causal_forcing")}
    assert {n: (s.chunk_len + s.window_len, s.steps, s.first_chunk_steps) for n, s in cf.items()} == {
        "causal_forcing_chunkwise": (21, (1000, 750, 500, 250), ()),
        "causal_forcing_framewise": (21, (1000, 750, 500, 250), ()),
        "causal_forcing_pp_2step": (21, (1000, 500), (1000, 750, 500, 250)),
        "causal_forcing_pp_1step": (21, (1000,), (1000, 750, 500, 250)),
    }


def _write_wav(path, seconds: float) -> None:
    import wave

    t = torch.arange(int(16000 * seconds)) / 16000
    samples = (0.3 * torch.sin(2 * torch.pi * 220 * t) * 32767).to(torch.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(samples.numpy().tobytes())


def test_a_livetalk_file_renders_with_its_own_loop_and_audio_front_end(tmp_path):
    """End to end: nothing but the file chooses LiveTalk's loop, 16 fps and its audio alignment."""
    transformers = pytest.importorskip("transformers")
    import cv2
    import numpy as np

    from knot_core.render import RenderJob, render
    from knot_core.render_session import load_job
    from knot_core.vae import VAEConfig, WanVAE
    from knot_core.video_reader import probe

    torch.manual_seed(0)
    w2v = transformers.Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=1, intermediate_size=32,
                                      conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                                      vocab_size=8)
    transformers.Wav2Vec2Model(w2v).save_pretrained(tmp_path / "wav2vec2")
    # head_dim 128 as in every Wan (a render infers the head count from it)
    model = KnotDiT(DiTConfig(num_layers=4, cond_layout="noise_ref_mask", dim=128, ffn_dim=128, num_heads=1,
                              freq_dim=32, text_dim=32))
    model.add_adapter("avatar_audio", AvatarAudioAdapter(AvatarAudioConfig(feature_dim=3 * 16, token_dim=4, dim=128,
                                                                           num_blocks=1)))
    save_file(_livetalk_keys(model), tmp_path / "model.safetensors")
    save_file(WanVAE(VAEConfig.tiny()).state_dict(), str(tmp_path / "vae.safetensors"))
    cv2.imwrite(str(tmp_path / "ref.png"), (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    _write_wav(tmp_path / "speech.wav", 3.0)
    job = RenderJob(reference=tmp_path / "ref.png", model=tmp_path / "model.safetensors",
                    vae=tmp_path / "vae.safetensors", out=tmp_path / "out.mp4", audio=tmp_path / "speech.wav",
                    wav2vec=tmp_path / "wav2vec2", width=32, height=32, frames=57, dtype="fp32", device="cpu")
    plan, _ = load_job(job)
    assert plan.cfg == LOOPS["livetalk"].sampler.stream and plan.fps == 16
    (audio,) = plan.inputs.signals
    assert audio.alignment == "livetalk" and audio.num_frames == 3 * 16 + 1
    result = render(job)
    assert result.frames == 57 and probe(tmp_path / "out.mp4").fps == 16


def test_knot_settings_on_a_loop_override_only_their_widgets():
    types = pytest.importorskip("nodes.types")
    settings_nodes = pytest.importorskip("nodes.settings_nodes")
    livetalk = LOOPS["livetalk"].sampler.stream
    settings = settings_nodes.KnotForcingKnotSettings().build("model", -1, -1, 4, "", -1, -1)[0]
    assert isinstance(settings, types.KnotSettings)
    assert settings.resolve(livetalk) == livetalk.replace(window_len=4)  # sink 9 absolute, bf16, clean pin kept
    same = settings_nodes.KnotForcingKnotSettings().build("longlive", 3, 0, 4, "1000,750,500,250", 5.0, 0.5)[0]
    assert same.resolve(livetalk).timestep_dtype == "bfloat16" and same.resolve(livetalk).sink_len == 9
    other = settings_nodes.KnotForcingKnotSettings().build("self_forcing", 1, 0, 20, "1000,500", 5.0, 0.5)[0]
    assert other.resolve(livetalk) == StreamConfig.for_strategy("self_forcing", chunk_len=1, knot_len=0,
                                                                window_len=20, steps=(1000, 500), shift=5.0,
                                                                fusion_weight=0.5)  # another strategy: its own
