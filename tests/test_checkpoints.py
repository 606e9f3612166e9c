"""Every checkpoint format, written here with real key names and tiny shapes, loads strictly into a
KnotDiT whose forward equals the directly built model; full-size Wan2.1-1.3B key sets are recognised;
bad files fail with one message naming what the file is and what was expected."""

from __future__ import annotations

import json
import logging
import math
import pathlib

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from knot_core.adapters import registry
from knot_core.checkpoint_formats import detect_format, infer_config, map_keys
from knot_core.checkpoints import check_text, describe_dit, load_dit, load_text_embedding, save_knot_model
from knot_core.config import PRESETS, StreamConfig
from knot_core.dit import KnotDiT
from knot_core.driving import DrivingAdapter
from knot_core.errors import CheckpointError
from knot_core.model_file import AdapterSpec

# head count and text length are not in foreign files' shapes: tiny files need them given
TINY = {"num_heads": 2, "text_len": 8}
LORA_TARGETS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
                "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")


# ---------------------------------------------------------------- helpers

def tiny_model(preset: str = "tiny", seed: int = 0) -> KnotDiT:
    torch.manual_seed(seed)
    m = KnotDiT(PRESETS[preset])
    with torch.no_grad():
        for p in m.parameters():  # move every weight (norms included) off its init so a wrong key shows
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


def run(m: KnotDiT) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, m.cfg.in_dim, 2, 4, 4, generator=g)  # (B, C, F, H, W)
    t = torch.tensor([[900.0, 400.0]])
    with torch.no_grad():
        return m(x, t, frame_positions=torch.arange(2), text_kv=m.encode_text(None)).float()


def sd(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in m.state_dict().items()}


def lora_weights(cfg, rank: int, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Wan weight key -> (A (r, in), B (out, r)) on every Linear of the attention blocks."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i in range(cfg.num_layers):
        for t in LORA_TARGETS:
            fan_out, fan_in = (cfg.ffn_dim, cfg.dim) if t == "ffn.0" else (cfg.dim, cfg.ffn_dim) if t == "ffn.2" \
                else (cfg.dim, cfg.dim)
            out[f"blocks.{i}.{t}.weight"] = (torch.randn(rank, fan_in, generator=g) * 0.05,
                                             torch.randn(fan_out, rank, generator=g) * 0.05)
    return out


def peft_lora_dict(lora, prefix: str = "base_model.model.") -> dict[str, torch.Tensor]:
    """The bare dict `get_peft_model_state_dict` writes (adapter name dropped)."""
    out = {}
    for key, (a, b) in lora.items():
        module = key.removesuffix(".weight")
        out[f"{prefix}{module}.lora_A.weight"], out[f"{prefix}{module}.lora_B.weight"] = a, b
    return out


class RuntimeLoRA(nn.Module):
    """Unmerged reference: PEFT's forward W x + b + (alpha/r) B (A x)."""

    def __init__(self, base: nn.Linear, a: torch.Tensor, b: torch.Tensor, scale: float):
        super().__init__()
        self.base, self.a, self.b, self.scale = base, a, b, scale
        self.weight = base.weight  # dtype probes in the DiT read it

    def forward(self, x):
        return self.base(x) + self.scale * ((x @ self.a.T) @ self.b.T)


def with_runtime_lora(m: KnotDiT, lora, scale: float) -> KnotDiT:
    for key, (a, b) in lora.items():
        parent_name, leaf = key.removesuffix(".weight").rsplit(".", 1)
        parent = m.get_submodule(parent_name)
        setattr(parent, leaf, RuntimeLoRA(getattr(parent, leaf), a, b, scale)) if not leaf.isdigit() else \
            parent.__setitem__(int(leaf), RuntimeLoRA(parent[int(leaf)], a, b, scale))
    return m


class TinyAudioAdapter(DrivingAdapter):
    """AvatarForcing's audio adapter layout (audio_proj.proj/norm_out, audio_cond_projs.N), tiny, for the registry."""

    adapter_type = "avatar_audio"
    signal = "audio"

    def __init__(self, in_features: int, width: int, dim: int, count: int):
        super().__init__()
        self.audio_proj = nn.Module()
        self.audio_proj.proj = nn.Linear(in_features, width)
        self.audio_proj.norm_out = nn.LayerNorm(width)
        self.audio_cond_projs = nn.ModuleList(nn.Linear(width, dim) for _ in range(count))
        self.config = {"in_features": in_features, "width": width, "count": count}


TINY_AUDIO_SPEC = AdapterSpec(
    type="avatar_audio",
    build=lambda c, cfg: TinyAudioAdapter(c["in_features"], c["width"], cfg.dim, c["count"]),
    config_from_shapes=lambda s, cfg: {"in_features": s["audio_proj.proj.weight"][1],
                                       "width": s["audio_proj.proj.weight"][0],
                                       "count": sum(k.endswith(".weight") and k.startswith("audio_cond_projs.")
                                                    for k in s)},
    config_of=lambda m: dict(m.config))


@pytest.fixture
def no_adapters(monkeypatch):
    monkeypatch.setattr(registry, "ADAPTER_REGISTRY", {})
    monkeypatch.setattr(registry, "KNOWN_ADAPTER_MODULES", {})


@pytest.fixture
def audio_registered(monkeypatch):
    monkeypatch.setattr(registry, "ADAPTER_REGISTRY", {"avatar_audio": TINY_AUDIO_SPEC})


def avatar_state(m: KnotDiT, lora, audio: TinyAudioAdapter) -> dict[str, torch.Tensor]:
    """AvatarForcing's generator: prefix model., PEFT base_layer + lora_A/B.default, audio modules beside."""
    out = {}
    for k, v in sd(m).items():
        module, leaf = k.rsplit(".", 1)
        if f"{module}.weight" in lora:
            out[f"model.{module}.base_layer.{leaf}"] = v
        else:
            out[f"model.{k}"] = v
    for key, (a, b) in lora.items():
        module = key.removesuffix(".weight")
        out[f"model.{module}.lora_A.default.weight"], out[f"model.{module}.lora_B.default.weight"] = a, b
    out.update({f"model.{k}": v for k, v in sd(audio).items()})
    return out


# ---------------------------------------------------------------- formats load and match

def test_wan_native_and_comfyui_safetensors_load_identically(tmp_path):
    m = tiny_model()
    save_file(sd(m), tmp_path / "wan.safetensors")
    save_file({f"model.diffusion_model.{k}": v for k, v in sd(m).items()}, tmp_path / "comfy.safetensors",
              metadata={"config": json.dumps({"transformer": {"causal_ar": True}})})
    ref = run(m)
    for name, fmt, causal in (("wan", "wan", None), ("comfy", "comfyui", True)):
        loaded, info = load_dit(tmp_path / f"{name}.safetensors", dtype=torch.float32, **TINY)
        assert (info.format, info.causal, info.config) == (fmt, causal, PRESETS["tiny"])
        assert info.param_count == sum(p.numel() for p in m.parameters())
        assert torch.equal(run(loaded), ref)


def test_forcing_pt_prefers_ema_and_strips_fsdp_segments(tmp_path):
    ema, raw = tiny_model(seed=0), tiny_model(seed=1)
    fsdp = {f"model._fsdp_wrapped_module.{k.replace('blocks.0.', 'blocks.0._fsdp_wrapped_module.')}": v
            for k, v in sd(ema).items()}
    torch.save({"generator": {f"model.{k}": v for k, v in sd(raw).items()}, "generator_ema": fsdp,
                "step": 1200}, tmp_path / "self_forcing.pt")
    loaded, info = load_dit(tmp_path / "self_forcing.pt", dtype=torch.float32, **TINY)
    assert info.format == "forcing_pt" and info.sampler.stream.strategy == "self_forcing"
    assert torch.equal(run(loaded), run(ema))
    # a Rolling Forcing file has the same layout: choosing its loop gives Rolling Forcing's settings
    rolling = info.stream_config(strategy="rolling_forcing")
    assert rolling == StreamConfig.for_strategy("rolling_forcing") and rolling.commit_window_len == 18
    assert info.stream_config(window_len=5) == info.sampler.stream.replace(window_len=5)


@pytest.mark.parametrize("packing", ["separate_bare", "same_file_section"])
def test_longlive_lora_merge_equals_runtime_lora(tmp_path, packing):
    base = tiny_model()
    lora = lora_weights(base.cfg, rank=4, seed=3)
    generator = {f"model.{k}": v for k, v in sd(base).items()}
    if packing == "separate_bare":
        torch.save({"generator": generator}, tmp_path / "base.pt")
        torch.save(peft_lora_dict(lora), tmp_path / "lora.pt")
        kwargs = {"lora": tmp_path / "lora.pt"}
    else:
        torch.save({"generator": generator, "generator_lora": peft_lora_dict(lora)}, tmp_path / "base.pt")
        kwargs = {}
    merged, info = load_dit(tmp_path / "base.pt", dtype=torch.float32, **TINY, lora_alpha=8.0, **kwargs)
    assert info.format == "longlive" and info.lora_merged and info.lora_scale == 2.0  # alpha 8 / rank 4
    assert info.sampler.stream.strategy == "longlive"
    # one layer by hand: W x + b + (alpha/r) B A x
    x = torch.randn(5, 64)
    a, b = lora["blocks.1.self_attn.v.weight"]
    want = base.blocks[1].self_attn.v(x) + 2.0 * (x @ a.T) @ b.T
    torch.testing.assert_close(merged.blocks[1].self_attn.v(x), want, rtol=0, atol=1e-5)
    # whole forward against the unmerged reference
    torch.testing.assert_close(run(merged), run(with_runtime_lora(tiny_model(), lora, 2.0)), rtol=0, atol=1e-4)
    assert not torch.allclose(run(merged), run(base), atol=1e-3)  # the LoRA did something


def test_avatarforcing_merges_peft_at_half_and_attaches_audio(tmp_path, audio_registered):
    base = tiny_model("tiny-noise-ref-mask")
    lora = lora_weights(base.cfg, rank=128, seed=4)  # r 128 as released; alpha 64 is not in the file
    audio = TinyAudioAdapter(in_features=40, width=8, dim=64, count=3)
    torch.save({"generator": avatar_state(base, lora, audio)}, tmp_path / "model.pt")
    merged, info = load_dit(tmp_path / "model.pt", dtype=torch.float32, **TINY)
    assert (info.format, info.config.cond_layout, info.config.in_dim) == ("avatarforcing", "noise_ref_mask", 33)
    assert info.lora_scale == 0.5 and info.sampler.fps == 25
    loop = info.sampler.stream  # AvatarForcing's own windowed loop, not Knot Forcing
    assert (loop.strategy, loop.chunk_len, loop.window_len) == ("avatar_forcing", 4, 2)
    assert loop.steps == (1000, 800, 400, 200)
    assert [(a.name, a.config) for a in info.adapters] == [("avatar_audio", audio.config)]
    torch.testing.assert_close(merged.driving["avatar_audio"].audio_cond_projs[2].weight,
                               audio.audio_cond_projs[2].weight, rtol=0, atol=0)
    torch.testing.assert_close(run(merged), run(with_runtime_lora(base, lora, 0.5)), rtol=0, atol=1e-4)
    # alpha override
    _, info2 = load_dit(tmp_path / "model.pt", dtype=torch.float32, **TINY, lora_alpha=128.0)
    assert info2.lora_scale == 1.0


def test_avatarforcing_without_adapter_class_keeps_audio_weights_through_convert(tmp_path, no_adapters, caplog):
    base = tiny_model("tiny-noise-ref-mask")
    lora = lora_weights(base.cfg, rank=128, seed=4)
    audio = TinyAudioAdapter(in_features=40, width=8, dim=64, count=3)
    torch.save({"generator_ema": avatar_state(base, lora, audio)}, tmp_path / "model.pt")
    with caplog.at_level(logging.WARNING):
        merged, info = load_dit(tmp_path / "model.pt", dtype=torch.float32, **TINY)
    assert "avatar_audio" in caplog.text and len(merged.driving) == 0
    assert sorted(info.unattached) == sorted(f"driving.avatar_audio.{k}" for k in sd(audio))
    save_knot_model(merged, tmp_path / "ours.safetensors", info)
    again, info3 = load_dit(tmp_path / "ours.safetensors", dtype=torch.float32)
    assert info3.adapters[0].attached is False and torch.equal(
        info3.unattached["driving.avatar_audio.audio_proj.proj.weight"], audio.audio_proj.proj.weight)
    assert torch.equal(run(again), run(merged))


def test_own_format_round_trip_with_adapter_sampler_and_dtype(tmp_path, audio_registered):
    m = tiny_model("tiny-noise-ref-mask")
    m.add_adapter("avatar_audio", TinyAudioAdapter(40, 8, 64, 3))
    _, info = load_dit(_write_avatar(tmp_path, m), dtype=torch.float32, **TINY)
    save_knot_model(m, tmp_path / "ours.safetensors", info)
    loaded, info2 = load_dit(tmp_path / "ours.safetensors", dtype=torch.float32)
    assert (info2.format, info2.config, info2.sampler) == ("knot", m.cfg, info.sampler)
    assert info2.lora_merged and info2.lora_scale == 0.5 and info2.adapters == info.adapters
    assert torch.equal(run(loaded), run(m))
    assert all(torch.equal(a, b) for a, b in zip(sd(loaded).values(), sd(m).values(), strict=True))
    # stored in bf16, loaded as fp16 and fp32
    save_knot_model(m, tmp_path / "bf16.safetensors", info, dtype=torch.bfloat16)
    for dtype in (torch.float16, torch.float32):
        half, hinfo = load_dit(tmp_path / "bf16.safetensors", dtype=dtype)
        assert hinfo.dtype == dtype and {p.dtype for p in half.parameters()} == {dtype}
    bf, _ = load_dit(tmp_path / "bf16.safetensors", dtype="bf16")
    assert torch.equal(run(bf), run(m.to(torch.bfloat16)))
    assert (tmp_path / "bf16.safetensors").stat().st_size < (tmp_path / "ours.safetensors").stat().st_size * 0.51


def _write_avatar(tmp_path: pathlib.Path, m: KnotDiT) -> pathlib.Path:
    """A zero-rank-effect AvatarForcing file of m (B = 0), so merged weights equal m's."""
    lora = {k: (a, torch.zeros_like(b)) for k, (a, b) in lora_weights(m.cfg, 128, 5).items()}
    torch.save({"generator": avatar_state(m, lora, m.driving["avatar_audio"])}, tmp_path / "avatar.pt")
    return tmp_path / "avatar.pt"


# ---------------------------------------------------------------- full-size key sets (meta device)

def _meta_shapes(preset: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in KnotDiT(PRESETS[preset]).state_dict().items()}


def _config_of(shapes, metadata=None):
    fmt = detect_format(shapes, metadata)
    keys = map_keys(shapes, fmt)
    return fmt, infer_config({m: shapes[k] for k, m in keys.items() if not m.startswith("driving.")})


def test_full_size_key_sets_are_recognised():
    wan = _meta_shapes("wan2.1-t2v-1.3b")
    assert len(wan) == 825 and sum(math.prod(s) for s in wan.values()) == 1_418_996_800
    comfy_meta = {"config": json.dumps({"transformer": {"causal_ar": True}})}
    cases = {
        "wan": (wan, None),
        "comfyui": ({f"model.diffusion_model.{k}": s for k, s in wan.items()}, comfy_meta),
        "forcing_pt": ({f"generator_ema.model.{k}": s for k, s in wan.items()}
                       | {f"generator.model.{k}": s for k, s in wan.items()}, None),
        "longlive": ({f"generator.model.{k}": s for k, s in wan.items()}
                     | {f"generator_lora.base_model.model.{k[:-7]}.lora_{side}.weight": (256, s[1]) if side == "A"
                        else (s[0], 256) for k, s in wan.items() for side in "AB"
                        if k.endswith(".weight") and any(f".{t}.weight" in k for t in LORA_TARGETS)}, None),
    }
    for name, (shapes, meta) in cases.items():
        fmt, cfg = _config_of(shapes, meta)
        assert (fmt.name, cfg) == (name, PRESETS["wan2.1-t2v-1.3b"]), name
    assert _config_of(*cases["comfyui"])[0].causal is True
    assert detect_format(cases["longlive"][0]).lora.targets == 300  # 30 blocks x 10 Linears
    lora_only = {k: s for k, s in cases["longlive"][0].items() if k.startswith("generator_lora.")}
    fmt = detect_format(lora_only)
    assert (fmt.name, fmt.lora.rank, fmt.lora.targets) == ("lora", 256, 300)


def test_full_size_avatarforcing_key_set():
    wan = _meta_shapes("wan2.1-1.3b-noise-ref-mask")
    shapes = {}
    for k, s in wan.items():
        module, leaf = k.rsplit(".", 1)
        if any(module.endswith(t) for t in LORA_TARGETS):
            shapes[f"generator.model.{module}.base_layer.{leaf}"] = s
            if leaf == "weight":
                shapes[f"generator.model.{module}.lora_A.default.weight"] = (128, s[1])
                shapes[f"generator.model.{module}.lora_B.default.weight"] = (s[0], 128)
        else:
            shapes[f"generator.model.{k}"] = s
    shapes |= {"generator.model.audio_proj.proj.weight": (32, 43008), "generator.model.audio_proj.proj.bias": (32,),
               "generator.model.audio_proj.norm_out.weight": (32,), "generator.model.audio_proj.norm_out.bias": (32,)}
    shapes |= {f"generator.model.audio_cond_projs.{i}.{p}": (1536, 32) if p == "weight" else (1536,)
               for i in range(14) for p in ("weight", "bias")}
    fmt, cfg = _config_of(shapes)
    assert (fmt.name, fmt.adapters, fmt.lora.rank, fmt.lora.targets) == ("avatarforcing", ("avatar_audio",), 128, 300)
    assert cfg == PRESETS["wan2.1-1.3b-noise-ref-mask"] and cfg.in_dim == 33
    driving = [m for m in map_keys(shapes, fmt).values() if m.startswith("driving.")]
    assert len(driving) == 32 and "driving.avatar_audio.audio_cond_projs.13.weight" in driving


# ---------------------------------------------------------------- bad files: one clear message each

def _error(path, **kwargs) -> str:
    with pytest.raises(CheckpointError) as err:
        load_dit(path, dtype=torch.float32, **kwargs)
    return str(err.value)


def test_truncated_safetensors(tmp_path):
    save_file(sd(tiny_model()), tmp_path / "wan.safetensors")
    data = (tmp_path / "wan.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-1000])
    msg = _error(tmp_path / "cut.safetensors", **TINY)
    header_len = int.from_bytes(data[:8], "little")
    assert f"lists {len(data) - 8 - header_len} bytes of tensor data but only {len(data) - 1008 - header_len} " \
        "are present" in msg and "truncated safetensors" in msg and "get it again" in msg


def test_sd_unet_vae_and_text_encoder_are_named(tmp_path):
    unet = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
            "model.diffusion_model.out.2.weight": torch.zeros(4, 4, 3, 3)}
    vae = {"decoder.middle.0.residual.0.gamma": torch.zeros(4, 1, 1, 1), "encoder.conv1.weight": torch.zeros(4, 3, 1)}
    for name, tensors, needle in (("unet", unet, "Stable Diffusion UNet"), ("vae", vae, "a Wan VAE")):
        save_file(tensors, tmp_path / f"{name}.safetensors")
        msg = _error(tmp_path / f"{name}.safetensors")
        assert needle in msg and "expected a Wan2.1 DiT checkpoint" in msg


def test_in_dim_must_match_requested_conditioning(tmp_path):
    save_file(sd(tiny_model()), tmp_path / "t2v.safetensors")
    msg = _error(tmp_path / "t2v.safetensors", **TINY, cond_layout="noise_ref_mask")
    assert "in_dim 16 (noise)" in msg and "'noise_ref_mask' needs in_dim 33" in msg


def test_lora_without_base(tmp_path):
    torch.save({"generator_lora": peft_lora_dict(lora_weights(PRESETS["tiny"], 4, 0))}, tmp_path / "lora.pt")
    msg = _error(tmp_path / "lora.pt")
    assert "LoRA without base weights (20 low-rank pairs, rank 4)" in msg and "--lora" in msg


def test_pickled_objects_are_never_unpickled(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    torch.save({"generator": {"model.patch_embedding.weight": torch.zeros(1)}, "config": Payload()},
               tmp_path / "evil.pt")
    msg = _error(tmp_path / "evil.pt")
    assert "pickled Python objects" in msg and "not loaded" in msg and not marker.exists()


def test_missing_file_says_where_to_put_it(tmp_path):
    msg = _error(tmp_path / "nope.safetensors")
    assert str(tmp_path / "nope.safetensors") in msg
    assert "ComfyUI/models/diffusion_models/" in msg and "models/knot_forcing/" in msg and "convert" in msg


def test_strict_loading_lists_missing_keys_and_heads_need_override(tmp_path):
    state = sd(tiny_model())
    del state["blocks.1.ffn.2.bias"]
    save_file(state, tmp_path / "partial.safetensors")
    msg = _error(tmp_path / "partial.safetensors", **TINY)
    assert "missing (1): blocks.1.ffn.2.bias" in msg and "Wan2.1 native" in msg
    msg = _error(tmp_path / "partial.safetensors")
    assert "dim=64 is not a multiple of Wan's head_dim 128" in msg and "num_heads" in msg


def test_wrong_lora_file_and_foreign_lora(tmp_path):
    m = tiny_model()
    torch.save({"generator": {f"model.{k}": v for k, v in sd(m).items()}}, tmp_path / "base.pt")
    save_file(sd(m), tmp_path / "not_lora.safetensors")
    assert "was given as a LoRA but is Wan2.1 native" in _error(tmp_path / "base.pt", **TINY,
                                                                 lora=tmp_path / "not_lora.safetensors")
    big = lora_weights(PRESETS["tiny"], 4, 0) | {"blocks.7.self_attn.q.weight": (torch.zeros(4, 64),
                                                                                torch.zeros(64, 4))}
    torch.save(peft_lora_dict(big), tmp_path / "lora.pt")
    assert "1 LoRA pairs target layers the base model does not have, e.g. base_model.model.blocks.7.self_attn.q" \
        in _error(tmp_path / "base.pt", **TINY, lora=tmp_path / "lora.pt")


# ---------------------------------------------------------------- describe, text

def test_describe_reads_headers_only(tmp_path):
    m = tiny_model("tiny-noise-mask-latent")
    save_file({k: v.to(torch.bfloat16) for k, v in sd(m).items()}, tmp_path / "i2v.safetensors")
    info = describe_dit(tmp_path / "i2v.safetensors", **TINY)
    assert (info.config.in_dim, info.dtype, info.param_count) == (36, torch.bfloat16,
                                                                   sum(p.numel() for p in m.parameters()))


def test_load_text_embedding_shapes_and_keys(tmp_path, caplog):
    emb = torch.randn(7, 4096)
    save_file({"anything": emb}, tmp_path / "one.safetensors")
    save_file({"context": emb[None], "mask": torch.ones(1, 7)}, tmp_path / "named.safetensors")
    for name in ("one", "named"):
        got = load_text_embedding(tmp_path / f"{name}.safetensors")
        assert got.shape == (1, 7, 4096) and torch.equal(got[0], emb)
    save_file({"a": emb, "b": emb.clone()}, tmp_path / "two.safetensors")
    save_file({"x": torch.zeros(7, 768)}, tmp_path / "clip.safetensors")
    with pytest.raises(CheckpointError, match="expected one tensor, or one named context"):
        load_text_embedding(tmp_path / "two.safetensors")
    with pytest.raises(CheckpointError, match=r"has shape \[7, 768\]; expected \[L, 4096\]"):
        load_text_embedding(tmp_path / "clip.safetensors")
    save_file(sd(tiny_model()), tmp_path / "wan.safetensors")
    info = describe_dit(tmp_path / "wan.safetensors", **TINY)
    with caplog.at_level(logging.WARNING):
        assert check_text(info, None) is None
    assert "zero embeddings" in caplog.text
    with pytest.raises(CheckpointError, match=r"needs \[B, L, 32\]"):
        check_text(info, torch.zeros(1, 5, 4096))
