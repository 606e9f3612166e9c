"""Wan2.1 VAE: architecture/keys, original decode semantics, streaming == one-shot, encode, normalisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from knot_core.errors import CheckpointError, ConfigError, InputError
from knot_core.vae import (
    DETECT_KEY,
    LATENT_MEAN,
    LATENT_STD,
    StreamingDecoder,
    VAEConfig,
    WanVAE,
    denormalize_latent,
    encode_image,
    load_vae,
    normalize_latent,
)
from knot_core.vae_layers import AttentionBlock, CausalConv3d, Resample, ResidualBlock


@pytest.fixture(scope="module")
def vae() -> WanVAE:
    torch.manual_seed(0)
    return WanVAE(VAEConfig.tiny()).eval()


def _latent(t: int, seed: int = 1, h: int = 2, w: int = 3) -> torch.Tensor:
    return torch.randn(1, 16, t, h, w, generator=torch.Generator().manual_seed(seed))


def _stream(vae: WanVAE, z: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    assert sum(sizes) == z.shape[2]
    dec, out, i = StreamingDecoder(vae, clamp=False), [], 0
    for n in sizes:
        out.append(dec.decode(z[:, :, i:i + n]))
        i += n
    return out


# --------------------------------------------------------------------------------------------- architecture

def test_full_size_matches_released_checkpoint_layout():
    with torch.device("meta"):
        model = WanVAE()
    sd = model.state_dict()
    assert len(sd) == 194
    assert sum(v.numel() for v in sd.values()) == 126_892_531
    shapes = {
        DETECT_KEY: (384, 1, 1, 1),
        "encoder.conv1.weight": (96, 3, 3, 3, 3),
        "encoder.downsamples.2.resample.1.weight": (96, 96, 3, 3),  # downsample2d
        "encoder.downsamples.5.time_conv.weight": (192, 192, 3, 1, 1),  # downsample3d
        "encoder.downsamples.3.shortcut.weight": (192, 96, 1, 1, 1),
        "encoder.middle.1.to_qkv.weight": (1152, 384, 1, 1),
        "encoder.middle.1.norm.gamma": (384, 1, 1),
        "encoder.head.2.weight": (32, 384, 3, 3, 3),
        "conv1.weight": (32, 32, 1, 1, 1),
        "conv2.weight": (16, 16, 1, 1, 1),
        "decoder.conv1.weight": (384, 16, 3, 3, 3),
        "decoder.upsamples.3.time_conv.weight": (768, 384, 3, 1, 1),  # upsample3d doubles channels
        "decoder.upsamples.3.resample.1.weight": (192, 384, 3, 3),
        "decoder.upsamples.4.residual.2.weight": (384, 192, 3, 3, 3),
        "decoder.upsamples.11.resample.1.weight": (96, 192, 3, 3),  # upsample2d, no time_conv
        "decoder.upsamples.14.residual.6.weight": (96, 96, 3, 3, 3),
        "decoder.head.2.weight": (3, 96, 3, 3, 3),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert "decoder.upsamples.11.time_conv.weight" not in sd
    assert not any(k.endswith(".bias") and ".gamma" in k for k in sd)


def test_config_validation_and_strides():
    cfg = VAEConfig()
    assert (cfg.temporal_stride, cfg.spatial_stride) == (4, 8)
    assert [cfg.frames_for_latents(t) for t in (0, 1, 2, 21)] == [0, 1, 5, 81]
    assert [cfg.latents_for_frames(n) for n in (1, 5, 81)] == [1, 2, 21]
    with pytest.raises(ConfigError, match="temporal_downsample"):
        VAEConfig(temporal_downsample=(True, True))
    with pytest.raises(ConfigError, match="dim=0"):
        VAEConfig(dim=0)


# ------------------------------------------------------------------------ decode: the original's semantics

def _causal(conv: CausalConv3d, x: torch.Tensor) -> torch.Tensor:
    """A causal conv over a whole sequence: zero frames in front (kernel - 1), 'same' in space."""
    kt, kh, kw = conv.kernel_size
    x = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2, kt - 1, 0))
    return F.conv3d(x, conv.weight, conv.bias, stride=conv.stride)  # explicit padding, unlike the module


def _rms(norm, x):
    return F.normalize(x, dim=1) * x.shape[1] ** 0.5 * norm.gamma


def _reference_decode(vae: WanVAE, z: torch.Tensor) -> torch.Tensor:
    """The original decoder restated over the whole sequence in one stateless pass.

    The original feeds one latent per call: at call 0 each temporal upsampler returns its input frame as is
    (no time_conv); from call 1 on its time_conv runs with a zero-initialised cache, so frame 0 never enters
    its history, and its 2C output channels are the two new frames (first half first). Every other
    kernel-3 conv sees all earlier frames with two zero frames before the first.
    """
    x = _causal(vae.conv2, denormalize_latent(z))
    dec = vae.decoder
    x = _causal(dec.conv1, x)
    for block in [*dec.middle, *dec.upsamples]:
        if isinstance(block, ResidualBlock):
            r = block.residual
            h = _causal(r[2], F.silu(_rms(r[0], x)))
            h = _causal(r[6], F.silu(_rms(r[3], h)))
            x = h + (_causal(block.shortcut, x) if isinstance(block.shortcut, CausalConv3d) else x)
        elif isinstance(block, AttentionBlock):
            x = block(x)
        else:
            assert isinstance(block, Resample)
            if block.mode == "upsample3d":
                c = x.shape[1]
                y = _causal(block.time_conv, x[:, :, 1:])  # [B, 2C, T-1, h, w]
                pairs = torch.stack([y[:, :c], y[:, c:]], dim=3).flatten(2, 3)  # a0 b0 a1 b1 ...
                x = torch.cat([x[:, :, :1], pairs], dim=2)
            x = torch.stack([block.resample(x[:, :, i]) for i in range(x.shape[2])], dim=2)
    h = dec.head
    return _causal(h[2], F.silu(_rms(h[0], x)))


def test_one_shot_decode_follows_the_original_semantics(vae):
    z = _latent(3, w=2).double()  # latent 0, latent 1 (zero time history), latent 2 (history from latent 1)
    v64 = WanVAE(VAEConfig.tiny()).double().eval()
    v64.load_state_dict(vae.state_dict())
    ref = _reference_decode(v64, z)
    assert ref.shape == (1, 3, 1 + 4 * 2, 16, 16)
    for per_call in (1, 3):
        out = v64.decode(z, latents_per_call=per_call, clamp=False)
        assert out.shape == ref.shape
        assert (out - ref).abs().max().item() < 1e-12


def test_first_latent_gives_one_frame_later_latents_four(vae):
    z = _latent(5)
    dec = StreamingDecoder(vae)
    counts = [dec.decode(z[:, :, i:i + 1]).shape[2] for i in range(5)]
    assert counts == [1, 4, 4, 4, 4]
    assert (dec.latents_decoded, dec.frames_decoded) == (5, 17)
    # Frame 0 depends on latent 0 alone; latent k's frames do not depend on later latents (causal).
    z2 = z.clone()
    z2[:, :, 3] += 1.0
    a, b = vae.decode(z, clamp=False), vae.decode(z2, clamp=False)
    assert torch.equal(a[:, :, :9], b[:, :, :9])
    assert (a[:, :, 9:13] - b[:, :, 9:13]).abs().max() > 1e-3


@pytest.fixture(scope="module")
def one_shot(vae) -> torch.Tensor:
    return vae.decode(_latent(11), latents_per_call=11, clamp=False)


def test_one_shot_equals_one_latent_per_call(vae, one_shot):
    per_latent = vae.decode(_latent(11), latents_per_call=1, clamp=False)  # the original's grouping
    assert one_shot.shape == (1, 3, 41, 16, 24)
    assert (per_latent - one_shot).abs().max().item() <= 1e-6
    assert one_shot.abs().max().item() > 0.1  # the comparison is not between near-zero outputs


@pytest.mark.parametrize("sizes", [[1, 3, 2, 4, 1], [3, 1, 2, 5], [2, 2, 2, 2, 2, 1]])
def test_streaming_equals_one_shot(vae, one_shot, sizes):
    chunks = _stream(vae, _latent(11), sizes)
    assert [c.shape[2] for c in chunks] == [1 + 4 * (sizes[0] - 1)] + [4 * n for n in sizes[1:]]
    streamed = torch.cat(chunks, dim=2)
    assert streamed.shape == one_shot.shape
    assert (streamed - one_shot).abs().max().item() <= 1e-6


def test_fresh_cache_per_chunk_would_differ(vae):
    """Guard that the property above is not vacuous: dropping the state between chunks changes the frames."""
    z = _latent(4)
    joined = vae.decode(z, clamp=False)
    restarted = torch.cat([vae.decode(z[:, :, :2], clamp=False), vae.decode(z[:, :, 2:], clamp=False)], dim=2)
    assert restarted.shape[2] == joined.shape[2] - 3  # a restarted stream emits 1 frame, not 4, for its first latent
    assert (restarted[:, :, :5] - joined[:, :, :5]).abs().max() == 0


def test_streaming_memory_is_flat_and_reset_restarts(vae):
    z = _latent(8)
    dec = StreamingDecoder(vae)
    first = dec.decode(z[:, :, :2])
    sizes = []
    for i in range(2, 8):
        dec.decode(z[:, :, i:i + 1])
        sizes.append(dec.cache_nbytes())
    assert sizes[0] > 0 and len(set(sizes)) == 1
    with pytest.raises(InputError, match=r"reset\(\)"):
        dec.decode(_latent(1, h=4, w=4))
    dec.reset()
    assert dec.cache_nbytes() == 0 and dec.frames_decoded == 0
    assert torch.equal(dec.decode(z[:, :, :2]), first)
    assert first.min() >= -1 and first.max() <= 1


def test_decode_rejects_bad_latents(vae):
    with pytest.raises(InputError, match=r"\[B, 16, T>=1, h, w\]"):
        vae.decode(torch.zeros(1, 4, 2, 3, 3))
    with pytest.raises(InputError, match="T>=1"):
        StreamingDecoder(vae).decode(torch.zeros(1, 16, 0, 3, 3))
    with pytest.raises(ConfigError, match="latents_per_call=0"):
        vae.decode(_latent(2), latents_per_call=0)


# ------------------------------------------------------------------------------------------------ encode

def _video(t: int, seed: int = 2, h: int = 16, w: int = 24) -> torch.Tensor:
    return torch.rand(1, 3, t, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_encode_shapes_and_causal_grouping(vae):
    v = _video(9)
    z = vae.encode(v)
    assert z.shape == (1, 16, 3, 2, 3) and z.dtype == torch.float32
    # Frame 0 alone makes latent 0; frames 1-4 make latent 1 (the original's grouping 1, 4, 4, ...).
    assert (vae.encode(v[:, :, :1]) - z[:, :, :1]).abs().max() <= 1e-6
    assert (vae.encode(v[:, :, :5]) - z[:, :, :2]).abs().max() <= 1e-6
    v2 = v.clone()
    v2[:, :, 5] = -v2[:, :, 5]
    z2 = vae.encode(v2)
    assert torch.equal(z2[:, :, :2], z[:, :, :2])
    assert (z2[:, :, 2] - z[:, :, 2]).abs().max() > 1e-4


def test_encode_image_gives_one_normalised_latent(vae):
    img = _video(1, h=32, w=48)[:, :, 0].expand(2, -1, -1, -1)
    z = encode_image(vae, img)
    assert z.shape == (2, 16, 1, 4, 6)
    assert torch.equal(z, vae.encode(img.unsqueeze(2)))
    assert torch.allclose(denormalize_latent(z), vae.encode_mu(img.unsqueeze(2)), atol=1e-5)
    with pytest.raises(InputError, match=r"\[B, 3, H, W\]"):
        encode_image(vae, torch.zeros(1, 3, 2, 16, 16))


def test_encode_validates_frames_size_and_range(vae):
    with pytest.raises(InputError, match=r"6 frames.*1 \+ 4k.*e\.g\. 5 or 9"):
        vae.encode(_video(6))
    with pytest.raises(InputError, match="multiples of 8"):
        vae.encode(_video(1, h=12))
    with pytest.raises(InputError, match=r"x \* 2 - 1"):
        vae.encode((_video(1) + 1) * 127)


def test_latent_normalisation():
    assert len(LATENT_MEAN) == len(LATENT_STD) == 16
    assert (LATENT_MEAN[0], LATENT_MEAN[7], LATENT_STD[0], LATENT_STD[15]) == (-0.7571, 1.5508, 2.8184, 1.9160)
    mean = torch.tensor(LATENT_MEAN).view(1, 16, 1, 1, 1)
    std = torch.tensor(LATENT_STD).view(1, 16, 1, 1, 1)
    assert normalize_latent(mean.expand(1, 16, 2, 1, 1)).abs().max() == 0
    assert torch.allclose(normalize_latent(mean + 2 * std), torch.full((1, 16, 1, 1, 1), 2.0), atol=1e-6)
    x = torch.randn(2, 16, 3, 4, 4)
    assert torch.allclose(denormalize_latent(normalize_latent(x)), x, atol=1e-5)


# ----------------------------------------------------------------------------------------------- loading

def _assert_same_weights(loaded: WanVAE, ref: WanVAE, dtype: torch.dtype = torch.float32) -> None:
    got, want = loaded.state_dict(), ref.state_dict()
    assert got.keys() == want.keys() and len(got) == 194
    assert all(torch.equal(got[k], want[k].to(dtype)) for k in want)
    assert all(v.dtype == dtype and v.device.type == "cpu" for v in got.values())


@pytest.mark.parametrize("prefix", ["", "vae.", "first_stage_model."])
def test_load_safetensors_with_or_without_prefix(vae, tmp_path, prefix):
    path = tmp_path / "wan_2.1_vae.safetensors"
    tensors = {prefix + k: v.contiguous() for k, v in vae.state_dict().items()}
    if prefix:  # a combined file: the other model's tensors are left alone
        tensors["model.diffusion_model.blocks.0.self_attn.q.weight"] = torch.zeros(2, 2)
    save_file(tensors, str(path))
    loaded = load_vae(path)
    assert loaded.config == VAEConfig.tiny() and not loaded.training
    _assert_same_weights(loaded, vae)
    z = _latent(2)
    assert torch.equal(loaded.decode(z), vae.decode(z))


def test_load_casts_dtype_and_reads_pth_and_state_dicts(vae, tmp_path):
    path = tmp_path / "Wan2.1_VAE.pth"
    torch.save(vae.state_dict(), path)
    half = load_vae(path, dtype=torch.bfloat16)
    _assert_same_weights(half, vae, torch.bfloat16)
    z = _latent(2)
    frames = half.decode(z)  # bf16 weights, float32 frames out
    assert frames.dtype == torch.float32 and frames.shape == (1, 3, 5, 16, 24)
    assert (frames - vae.decode(z)).abs().max() < 0.1
    sd = vae.state_dict()
    shared = load_vae(sd)  # e.g. the weights of a VAE ComfyUI already loaded: no copy when dtype/device match
    assert shared.conv2.weight.data_ptr() == sd["conv2.weight"].data_ptr()
    with pytest.raises(ConfigError, match="floating-point"):
        load_vae(sd, dtype=torch.int8)


def test_load_errors_say_what_the_file_is(vae, tmp_path):
    dit = {"blocks.0.self_attn.q.weight": torch.zeros(4, 4), "patch_embedding.weight": torch.zeros(4, 16, 1, 2, 2)}
    save_file(dit, str(tmp_path / "dit.safetensors"))
    with pytest.raises(CheckpointError, match=r"dit.safetensors: this looks like a Wan DiT \(diffusion model\) "
                                              r"file, not a VAE; the VAE is wan_2.1_vae.safetensors"):
        load_vae(tmp_path / "dit.safetensors")
    with pytest.raises(CheckpointError, match=r"'decoder.middle.0.residual.0.gamma' is not among its 1 tensors"):
        load_vae({"foo.weight": torch.zeros(1)})
    sd = vae.state_dict()
    with pytest.raises(CheckpointError, match=r"1 missing \['decoder.head.2.bias'\], 0 unexpected"):
        load_vae({k: v for k, v in sd.items() if k != "decoder.head.2.bias"})
    with pytest.raises(CheckpointError, match=r"1 unexpected \['decoder.extra'\]"):
        load_vae({**sd, "decoder.extra": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"decoder.head.2.bias has shape \(4,\); the Wan2.1 VAE needs \(3,\)"):
        load_vae({**sd, "decoder.head.2.bias": torch.zeros(4)})
    with pytest.raises(CheckpointError, match="48 latent channels"):
        load_vae({**sd, "conv2.weight": torch.zeros(48, 48, 1, 1, 1)})
    with pytest.raises(CheckpointError, match="not found"):
        load_vae(tmp_path / "missing.safetensors")
    torch.save({"generator": {"model.patch_embedding.weight": torch.zeros(2)}}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="model.pt: this looks like a Self Forcing / CausVid-style training"):
        load_vae(tmp_path / "model.pt")


def test_load_truncated_file_is_a_clear_error(vae, tmp_path):
    path = tmp_path / "wan_2.1_vae.safetensors"
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="probably truncated or corrupt.*download it again"):
        load_vae(path)
    pth = tmp_path / "vae.pth"
    torch.save(vae.state_dict(), pth)
    pth.write_bytes(pth.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="may be truncated or corrupt"):
        load_vae(pth)
