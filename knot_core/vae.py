"""The Wan2.1 video VAE: encode, one-shot decode and streaming decode.

Reference: `wan/modules/vae.py` in Wan-Video/Wan2.1 (`WanVAE_` with dim 96, z 16, mult [1,2,4,4], 2 residual
blocks, temporal downsampling [False, True, True]). Weight-compatible with `wan_2.1_vae.safetensors` and the
original `Wan2.1_VAE.pth` (194 tensors, 126,892,531 parameters); ComfyUI's `comfy/ldm/wan/vae.py` uses the same keys.

Semantics follow the original exactly:
- encode: frame 0 alone, then chunks of 4 frames, through one causal state; μ is the first half of `conv1`.
- decode: the original feeds one latent frame per call through one causal state; latent 0 gives 1 frame and
  every later latent 4 (1 + 4(T-1) in all). Here the layers' typed state makes any grouping give the same
  frames, so `StreamingDecoder` decodes chunk by chunk with memory flat in the stream's length.
- latents are normalised per channel (Wan21): z = (μ − mean) / std; decode un-normalises first.
`load_vae` reads either file (or a state dict, e.g. ComfyUI's VAE weights) strictly, under any key prefix;
`load_codec` also takes the TAEHV tiny autoencoders (knot_core.tiny_codec), told apart by their keys.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .config import LATENT_CHANNELS
from .errors import CheckpointError, ConfigError, InputError
from .latent_norm import LATENT_MEAN, LATENT_STD, denormalize_latent, normalize_latent, widen  # noqa: F401
from .vae_layers import CausalConv3d, CoderState, Decoder3d, Encoder3d, FrameCache, ResidualState, UpsampleState

logger = logging.getLogger(__name__)

DETECT_KEY = "decoder.middle.0.residual.0.gamma"  # present in every Wan VAE file, absent from DiT files


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of a Wan2.1-style VAE; the defaults are the released model.

    `temporal_downsample` is the original's `temperal_downsample`; the decoder upsamples in reverse order.
    """

    dim: int = 96
    z_dim: int = LATENT_CHANNELS
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)

    def __post_init__(self) -> None:
        if self.dim < 1 or self.z_dim < 1 or self.num_res_blocks < 1:
            raise ConfigError(f"VAEConfig dim={self.dim}, z_dim={self.z_dim}, num_res_blocks={self.num_res_blocks};"
                              " each must be >= 1")
        if len(self.dim_mult) < 2 or any(m < 1 for m in self.dim_mult):
            raise ConfigError(f"VAEConfig dim_mult={self.dim_mult}; need >= 2 positive multipliers, e.g. (1, 2, 4, 4)")
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ConfigError(f"VAEConfig temporal_downsample={self.temporal_downsample} has "
                              f"{len(self.temporal_downsample)} entries; dim_mult={self.dim_mult} needs "
                              f"{len(self.dim_mult) - 1} (one per downsampling stage)")

    @classmethod
    def tiny(cls) -> VAEConfig:
        """Same architecture with 8 base channels (for tests and benchmarks; not a released model)."""
        return cls(dim=8)

    @property
    def temporal_stride(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    @property
    def spatial_stride(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    def frames_for_latents(self, latent_frames: int) -> int:
        """Video frames decoded from a stream of `latent_frames` latents (1 + 4(T-1) for Wan2.1)."""
        return 1 + self.temporal_stride * (latent_frames - 1) if latent_frames > 0 else 0

    def latents_for_frames(self, frames: int) -> int:
        """Latent frames encoded from `frames` video frames (which must be 1 + 4k)."""
        return 1 + (frames - 1) // self.temporal_stride


class WanVAE(nn.Module):
    """The Wan2.1 VAE (`encoder`, `conv1`, `conv2`, `decoder`, as in the checkpoint)."""

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else VAEConfig()
        self.config = cfg
        self.encoder = Encoder3d(cfg.dim, cfg.z_dim * 2, cfg.dim_mult, cfg.num_res_blocks, cfg.temporal_downsample)
        self.conv1 = CausalConv3d(cfg.z_dim * 2, cfg.z_dim * 2, 1)
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder3d(cfg.dim, cfg.z_dim, cfg.dim_mult, cfg.num_res_blocks,
                                 tuple(reversed(cfg.temporal_downsample)))

    @property
    def dtype(self) -> torch.dtype:
        return self.conv2.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv2.weight.device

    @property
    def z_dim(self) -> int:
        """Latent channels (16)."""
        return self.config.z_dim

    def streaming_decoder(self) -> StreamingDecoder:
        """A decoder for one new latent stream: the render path's codec interface (pipeline.LatentCodec)."""
        return StreamingDecoder(self)

    @torch.no_grad()
    def encode_mu(self, video: Tensor) -> Tensor:
        """Video [B, 3, 1+4k, H, W] in [-1, 1] → μ [B, 16, 1+k, H/8, W/8] (float32, not normalised)."""
        self._check_video(video)
        stride = self.config.temporal_stride
        state = self.encoder.new_state()
        x = video.to(device=self.device, dtype=self.dtype)
        # Frame 0 alone, then chunks of `stride` frames, as the original (its downsamplers need this grouping).
        chunks = [x[:, :, :1]] + [x[:, :, i:i + stride] for i in range(1, x.shape[2], stride)]
        mus = [self.conv1(self.encoder(c, state))[:, :self.config.z_dim] for c in chunks]  # each [B, 16, t, h, w]
        return widen(torch.cat(mus, dim=2))

    def encode(self, video: Tensor) -> Tensor:
        """Video [B, 3, 1+4k, H, W] in [-1, 1] → normalised latent [B, 16, 1+k, H/8, W/8] (float32)."""
        return normalize_latent(self.encode_mu(video))

    def decode(self, latent: Tensor, *, latents_per_call: int = 1, clamp: bool = True) -> Tensor:
        """Normalised latent [B, 16, T, h, w] → frames [B, 3, 1+4(T-1), 8h, 8w] (float32).

        One fresh stream fed `latents_per_call` latents at a time (1 is the original's grouping and the
        least memory; every grouping gives the same frames). clamp=True clips to [-1, 1] as the original.
        """
        if latents_per_call < 1:
            raise ConfigError(f"latents_per_call={latents_per_call}; must be >= 1")
        _check_latent(latent, self.config.z_dim)
        stream = StreamingDecoder(self, clamp=clamp)
        step = latents_per_call
        return torch.cat([stream.decode(latent[:, :, i:i + step]) for i in range(0, latent.shape[2], step)], dim=2)

    def _check_video(self, video: Tensor) -> None:
        s, ts = self.config.spatial_stride, self.config.temporal_stride
        if video.ndim != 5 or video.shape[1] != 3:
            raise InputError(f"video shape {tuple(video.shape)}; expected [B, 3, T, H, W] "
                             "(an image is T=1; ComfyUI IMAGE [B, H, W, 3] goes through prepare_reference)")
        _, _, t, h, w = video.shape
        if t < 1 or (t - 1) % ts:
            raise InputError(f"video has {t} frames; the Wan2.1 VAE encodes 1 + {ts}k frames "
                             f"(e.g. {1 + ts * max(0, (t - 1) // ts)} or {1 + ts * ((t - 1) // ts + 1)}); "
                             "trim or pad the clip")
        if h % s or w % s:
            raise InputError(f"video size {h}x{w}; height and width must be multiples of {s}")
        lo, hi = float(video.min()), float(video.max())
        if lo < -1.01 or hi > 1.01:
            raise InputError(f"video values span [{lo:.3g}, {hi:.3g}]; expected [-1, 1] "
                             "(map 0..1 pixels with x * 2 - 1)")


class StreamingDecoder:
    """Decodes one latent stream chunk by chunk; the frames equal a one-shot decode of the whole stream.

    Owns the decoder state of one stream: ~2 frames per causal conv, so memory does not grow with length.
    `decode(chunk)` takes normalised latents [B, 16, t, h, w] (any t >= 1) and returns the new frames:
    1 + 4(t-1) for the stream's first chunk, 4t after. `reset()` starts a new stream.
    """

    def __init__(self, vae: WanVAE, *, clamp: bool = True) -> None:
        self.vae = vae
        self.clamp = clamp
        self.latents_decoded = 0
        self.frames_decoded = 0
        self._state: CoderState = vae.decoder.new_state()
        self._shape: tuple[int, int, int] | None = None  # (B, h, w) of the stream

    def reset(self) -> None:
        self._state = self.vae.decoder.new_state()
        self._shape = None
        self.latents_decoded = 0
        self.frames_decoded = 0

    def cache_nbytes(self) -> int:
        """Bytes held between chunks (the causal caches)."""
        return self._state.nbytes()

    def state_tensors(self) -> dict[str, Tensor]:
        """The stream's causal caches and counters as flat named tensors (for a resumable save).

        Names follow the state tree: `conv1`, `head`, `body.<i>.first|second` (residual blocks),
        `body.<i>.time_cache|started` (temporal upsamplers); caches not yet filled are left out.
        """
        out: dict[str, Tensor] = {}
        _put(out, "conv1", self._state.conv1)
        _put(out, "head", self._state.head)
        for i, block in enumerate(self._state.body):
            if isinstance(block, ResidualState):
                _put(out, f"body.{i}.first", block.first)
                _put(out, f"body.{i}.second", block.second)
            elif isinstance(block, UpsampleState):
                _put(out, f"body.{i}.time_cache", block.time_cache)
                out[f"body.{i}.started"] = torch.tensor([int(block.started)])
        shape = self._shape if self._shape is not None else (-1, -1, -1)
        out["counters"] = torch.tensor([self.latents_decoded, self.frames_decoded, *shape])
        return out

    def load_state_tensors(self, tensors: Mapping[str, Tensor]) -> None:
        """Restore what `state_tensors` saved, from the same VAE; the next `decode` continues bit for bit."""
        state = self.vae.decoder.new_state()
        if "counters" not in tensors:
            raise InputError(f"decoder state lacks 'counters' (got {sorted(tensors)[:4]}); it was not saved by "
                             "StreamingDecoder.state_tensors")
        device, dtype = self.vae.device, self.vae.dtype
        _take(tensors, "conv1", state.conv1, device, dtype)
        _take(tensors, "head", state.head, device, dtype)
        for i, block in enumerate(state.body):
            if isinstance(block, ResidualState):
                _take(tensors, f"body.{i}.first", block.first, device, dtype)
                _take(tensors, f"body.{i}.second", block.second, device, dtype)
            elif isinstance(block, UpsampleState):
                _take(tensors, f"body.{i}.time_cache", block.time_cache, device, dtype)
                block.started = bool(tensors[f"body.{i}.started"][0]) if f"body.{i}.started" in tensors else False
        latents, frames, b, h, w = (int(x) for x in tensors["counters"])
        self._state, self.latents_decoded, self.frames_decoded = state, latents, frames
        self._shape = None if b < 0 else (b, h, w)

    @torch.no_grad()
    def decode(self, latent: Tensor) -> Tensor:
        self._check(latent)
        z = denormalize_latent(latent).to(device=self.vae.device, dtype=self.vae.dtype)
        frames = widen(self.vae.decoder(self.vae.conv2(z), self._state))  # [B, 3, t', 8h, 8w]
        self.latents_decoded += latent.shape[2]
        self.frames_decoded += frames.shape[2]
        return frames.clamp_(-1.0, 1.0) if self.clamp else frames

    def _check(self, latent: Tensor) -> None:
        _check_latent(latent, self.vae.config.z_dim)
        shape = (latent.shape[0], latent.shape[3], latent.shape[4])
        if self._shape is not None and shape != self._shape:
            raise InputError(f"latent chunk has batch/size {shape}, but this stream started with {self._shape}; "
                             "call reset() before decoding a different stream")
        self._shape = shape


def _put(out: dict[str, Tensor], name: str, cache: FrameCache) -> None:
    if cache.frames is not None:
        out[name] = cache.frames


def _take(tensors: Mapping[str, Tensor], name: str, cache: FrameCache, device: torch.device,
          dtype: torch.dtype) -> None:
    if name in tensors:
        cache.frames = tensors[name].to(device=device, dtype=dtype)


def _check_latent(latent: Tensor, z_dim: int) -> None:
    if latent.ndim != 5 or latent.shape[1] != z_dim or latent.shape[2] < 1:
        raise InputError(f"latent shape {tuple(latent.shape)}; expected [B, {z_dim}, T>=1, h, w] "
                         "(ComfyUI LATENT['samples'] has this layout)")


def encode_image(vae: WanVAE, image: Tensor) -> Tensor:
    """Image [B, 3, H, W] or [B, 3, 1, H, W] in [-1, 1] → normalised latent [B, 16, 1, H/8, W/8] (float32)."""
    if image.ndim == 4:
        image = image.unsqueeze(2)
    if image.ndim != 5 or image.shape[2] != 1:
        raise InputError(f"image shape {tuple(image.shape)}; expected [B, 3, H, W] or [B, 3, 1, H, W] "
                         "(use prepare_reference for ComfyUI IMAGE [B, H, W, 3])")
    return vae.encode(image)


# ----------------------------------------------------------------------------------------------- loading

VAE_FILE_HINT = ("the VAE is wan_2.1_vae.safetensors (ComfyUI models/vae) or Wan2.1_VAE.pth from the Wan2.1 release: "
                 f"194 tensors with keys like '{DETECT_KEY}'")

# Key fragments of files users mistake for the VAE, and what they are.
_FOREIGN_FILES: tuple[tuple[str, str], ...] = (
    ("self_attn.q.weight", "a Wan DiT (diffusion model) file"),
    ("patch_embedding.weight", "a Wan DiT (diffusion model) file"),
    ("generator", "a Self Forcing / CausVid-style training checkpoint (DiT weights under 'generator')"),
    ("SelfAttention.q.weight", "a umT5 text encoder file"),
    ("feature_projection", "a wav2vec2 audio encoder file"),
    ("vision_model", "a CLIP vision encoder file"),
    ("decoder.22.bias", "a TAEHV tiny autoencoder (taew2_1 / lighttaew2_1): load it with load_codec (the "
                        "Knot Forcing VAE Loader node and --vae do)"),
)


class _SafetensorsView(Mapping):
    """Read-only mapping over an open safetensors file; tensors are read one at a time from the mmap."""

    def __init__(self, handle) -> None:
        self._handle = handle
        self._keys = list(handle.keys())
        self._key_set = set(self._keys)

    def __contains__(self, key: object) -> bool:  # without reading the tensor
        return key in self._key_set

    def __getitem__(self, key: str) -> Tensor:
        if key not in self._key_set:
            raise KeyError(key)
        return self._handle.get_tensor(key)

    def shape(self, key: str) -> tuple[int, ...]:
        """From the header, without reading the data."""
        return tuple(self._handle.get_slice(key).get_shape())

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _shape(tensors: Mapping[str, Tensor], key: str) -> tuple[int, ...] | None:
    if key not in tensors:
        return None
    return tensors.shape(key) if isinstance(tensors, _SafetensorsView) else tuple(tensors[key].shape)


@contextmanager
def _open_tensors(source: str | os.PathLike | Mapping[str, Tensor]) -> Iterator[tuple[str, Mapping[str, Tensor]]]:
    if isinstance(source, Mapping):
        yield "state dict", source
        return
    path = Path(source)
    if not path.is_file():
        raise CheckpointError(f"VAE file not found: {path}; {VAE_FILE_HINT}")
    if path.suffix in (".pt", ".pth", ".ckpt", ".bin"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as e:  # weights_only refused an object: nothing was executed
            raise CheckpointError(f"{path.name} holds pickled Python objects besides tensors, so it was not loaded "
                                  f"(unpickling can run arbitrary code); give a weights-only file. {VAE_FILE_HINT}") \
                from e
        except (RuntimeError, OSError, EOFError, ValueError) as e:
            raise CheckpointError(f"{path.name}: cannot be read as a torch checkpoint ({type(e).__name__}); it may "
                                  f"be truncated or corrupt, download it again. {VAE_FILE_HINT}") from e
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{path.name}: holds a {type(state).__name__}, not a state dict; {VAE_FILE_HINT}")
        yield path.name, state
        return
    from safetensors import SafetensorError, safe_open

    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except SafetensorError as e:
        raise CheckpointError(f"{path.name}: not a readable safetensors file ({e}); it is probably truncated or "
                              f"corrupt (an interrupted download), download it again. {VAE_FILE_HINT}") from e
    with handle:
        yield path.name, _SafetensorsView(handle)


def _vae_prefix(name: str, keys: list[str]) -> str:
    prefixes = sorted({k[:-len(DETECT_KEY)] for k in keys if k.endswith(DETECT_KEY)})
    if len(prefixes) == 1:
        return prefixes[0]
    if len(prefixes) > 1:
        raise CheckpointError(f"{name}: holds several VAEs under the prefixes {prefixes}; "
                              "pass the state dict of one of them")
    for fragment, what in _FOREIGN_FILES:
        if any(fragment in k for k in keys):
            raise CheckpointError(f"{name}: this looks like {what}, not a VAE; {VAE_FILE_HINT}")
    raise CheckpointError(f"{name}: not a Wan2.1 VAE: '{DETECT_KEY}' is not among its {len(keys)} tensors "
                          f"(first keys: {keys[:3]}); {VAE_FILE_HINT}")


def _config_from(name: str, tensors: Mapping[str, Tensor], prefix: str) -> VAEConfig:
    conv2 = _shape(tensors, prefix + "conv2.weight")
    if conv2 and conv2[0] != LATENT_CHANNELS:
        raise CheckpointError(f"{name}: a VAE with {conv2[0]} latent channels (the Wan2.2 VAE has 48); "
                              f"Knot Forcing runs on the Wan2.1 latent space ({LATENT_CHANNELS}); {VAE_FILE_HINT}")
    conv_in = _shape(tensors, prefix + "encoder.conv1.weight")  # (dim, 3, 3, 3, 3)
    return VAEConfig(dim=conv_in[0]) if conv_in and len(conv_in) == 5 and conv_in[0] > 0 else VAEConfig()


def _check_keys(name: str, expected: Mapping[str, Tensor], tensors: Mapping[str, Tensor], prefix: str) -> None:
    given = [k[len(prefix):] for k in tensors if k.startswith(prefix)]
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{name}: Wan2.1 VAE keys do not match (under prefix {prefix!r}): "
                              f"{len(missing)} missing {missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}; "
                              f"{VAE_FILE_HINT}")
    for key, ref in expected.items():
        shape = _shape(tensors, prefix + key)
        if shape != tuple(ref.shape):
            raise CheckpointError(f"{name}: tensor {prefix + key} has shape {shape}; the Wan2.1 VAE needs "
                                  f"{tuple(ref.shape)}; {VAE_FILE_HINT}")


def load_vae(source: str | os.PathLike | Mapping[str, Tensor], *, dtype: torch.dtype = torch.float32,
             device: str | torch.device = "cpu") -> WanVAE:
    """Load a Wan2.1 VAE strictly from a .safetensors/.pth file or a state dict (any key prefix).

    The base width is read from the weights (96 in the released file; smaller in test files). Tensors are
    read one at a time from the memory-mapped file and cast straight to `dtype` on `device`, so only one
    copy of the weights is ever held; tensors of a state dict already in that dtype/device are shared.
    """
    if not dtype.is_floating_point:
        raise ConfigError(f"dtype={dtype}; the VAE needs a floating-point dtype (float32, bfloat16, float16)")
    with _open_tensors(source) as (name, tensors):
        keys = list(tensors)
        prefix = _vae_prefix(name, keys)
        config = _config_from(name, tensors, prefix)
        with torch.device("meta"):
            vae = WanVAE(config)
        expected = vae.state_dict()
        _check_keys(name, expected, tensors, prefix)
        state = {k: tensors[prefix + k].to(device=device, dtype=dtype) for k in expected}
    vae.load_state_dict(state, strict=True, assign=True)
    ignored = len(keys) - len(expected)
    logger.info("loaded Wan VAE from %s (dim %d, prefix %r, %d other tensors ignored)", name, config.dim, prefix,
                ignored)
    return vae.eval().requires_grad_(False)


def load_codec(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu"):
    """The codec a file holds, from its keys: the Wan2.1 VAE (`WanVAE`) or a TAEHV tiny autoencoder
    (`tiny_codec.TinyCodec`: taew2_1, lighttaew2_1). Both meet pipeline.LatentCodec."""
    from .checkpoints import open_checkpoint
    from .tiny_codec import is_tiny_codec_file, load_tiny_codec

    if Path(path).is_file() and is_tiny_codec_file(open_checkpoint(path, "a VAE").shapes):
        return load_tiny_codec(path, dtype=dtype, device=device)
    return load_vae(path, dtype=dtype, device=device)
