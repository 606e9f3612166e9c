"""TAEHV tiny video autoencoders in the Wan 2.1 latent space: madebyollin's `taew2_1` and LightX2V's `lighttaew2_1`.

Reference: madebyollin/taehv `taehv.py` @ 1f14a56 (`TAEHV` with the Wan 2.1 settings: 16 latent channels, patch 1,
decoder time upscale (False, True, True); `StreamingTAEHV`) and LightX2V `models/video_encoders/hf/wan/vae_tiny.py`
(`WanVAE_tiny`). Weight-compatible with `taew2_1.pth` / `taew2_1.safetensors` (TAEHV repo) and
`lighttaew2_1.safetensors` (HF lightx2v/Autoencoders): the module tree below has the files' key names
(`decoder.{i}...`, `encoder.{i}...`), so the weights load strictly without renaming. Our own implementation.

Semantics, as the authors':
- All convolutions are 2-D; time mixes only through MemBlock (its input at the previous time step, zeros at the
  stream's start, is concatenated on channels), TPool (encoder: `stride` frames stacked on channels) and TGrow
  (decoder: a 1x1 conv to `stride`x channels, split into `stride` frames in order).
- Every latent decodes to 4 frames and the stream's first 3 are dropped (`frames_to_trim`), so T latents give
  4T - 3 = 1 + 4(T - 1) frames: the Wan VAE's count and timing (latent 0 -> frame 0, latent k -> frames 4k-3 .. 4k).
- Pixels are [0, 1] inside (decoder output clamped there); the codec interface maps them to [-1, 1].
- Latents: `taew2_1` takes the DiT's normalised latents as they are ("TAEHV encodes / decodes exactly what
  diffusion models use", TAEHV README); `lighttaew2_1` takes raw Wan latents (LightX2V decodes `z * std + mean`).
  The two files have the same keys and shapes, so nothing in the tensors tells them apart: as LightX2V
  (`"lighttae" in path`) and ComfyUI (exact file stems in models/vae_approx), the published file name decides,
  unless `latents=` is given.
Where the original walks a work queue one frame at a time, here each chunk goes through a block for all its
frames at once with the block's memory carried between chunks; the frames equal a one-shot decode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LATENT_CHANNELS, VAE_STRIDE
from .errors import CheckpointError, ConfigError, InputError

log = logging.getLogger(__name__)

LatentConvention = Literal["normalised", "raw"]
LATENT_CONVENTIONS: tuple[str, ...] = ("normalised", "raw")
DETECT_KEY = "decoder.22.bias"  # the RGB output conv: only TAEHV-family files have it (ComfyUI's test too)
FRAMES_PER_LATENT = VAE_STRIDE[0]  # decoder TGrow strides 1 * 2 * 2
FRAMES_TO_TRIM = FRAMES_PER_LATENT - 1  # raw frames dropped at a stream's start
TINY_FILE_HINT = ("the tiny decoders are taew2_1.safetensors / taew2_1.pth (github.com/madebyollin/taehv, MIT) and "
                  "lighttaew2_1.safetensors (huggingface.co/lightx2v/Autoencoders), kept in ComfyUI/models/vae_approx")
# Published stems (lower case) -> the latents the file decodes; LightX2V's own rule is `"lighttae" in path`.
_NAMED_CONVENTIONS: tuple[tuple[str, LatentConvention], ...] = (("lighttae", "raw"), ("taew2_1", "normalised"))
TINY_NAME_FRAGMENTS: tuple[str, ...] = ("taew2_1",)  # in both published names; lighttaew2_2 etc. are other spaces


@dataclass(frozen=True)
class TinyCodecConfig:
    """Widths of a TAEHV for 16-channel latents; the defaults are the released Wan 2.1 files."""

    decoder_widths: tuple[int, int, int, int] = (256, 128, 64, 64)
    encoder_width: int = 64  # 0: a decoder-only file
    latent_channels: int = LATENT_CHANNELS
    latents: LatentConvention = "normalised"

    def __post_init__(self) -> None:
        if len(self.decoder_widths) != 4 or min(self.decoder_widths) < 1 or self.encoder_width < 0:
            raise ConfigError(f"TinyCodecConfig decoder_widths={self.decoder_widths}, encoder_width="
                              f"{self.encoder_width}; need 4 positive decoder widths and encoder_width >= 0")
        if self.latents not in LATENT_CONVENTIONS:
            raise ConfigError(f"latents={self.latents!r}; allowed: {', '.join(LATENT_CONVENTIONS)}")

    @classmethod
    def tiny(cls, latents: LatentConvention = "normalised") -> TinyCodecConfig:
        """Same layout with 8 channels everywhere (tests and benchmarks; not a released model)."""
        return cls(decoder_widths=(8, 8, 8, 8), encoder_width=8, latents=latents)


# ----------------------------------------------------------------------------------------------- leaves

def _conv(n_in: int, n_out: int, *, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class Clamp(nn.Module):
    """Soft clamp of the latent to (-3, 3) before the first conv."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    """Residual block over [x, x at the previous time step]; keys `conv.0/2/4` (no `skip`: n_in == n_out)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(2 * n, n), nn.ReLU(), _conv(n, n), nn.ReLU(), _conv(n, n))

    def forward(self, x: Tensor, past: Tensor) -> Tensor:
        return F.relu(self.conv(torch.cat([x, past], 1)) + x)


class TPool(nn.Module):
    """`stride` consecutive frames stacked on channels, mixed by a 1x1 conv: (N*T, C) -> (N*T/stride, C)."""

    def __init__(self, n: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n * stride, n, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        _, c, h, w = x.shape
        return self.conv(x.reshape(-1, self.stride * c, h, w))


class TGrow(nn.Module):
    """A 1x1 conv to `stride`x channels, split into `stride` frames in order: (N*T, C) -> (N*T*stride, C)."""

    def __init__(self, n: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n, n * stride, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        _, c, h, w = x.shape
        return self.conv(x).reshape(-1, c, h, w)


# ----------------------------------------------------------------------------------------------- composites

def build_decoder(cfg: TinyCodecConfig) -> nn.Sequential:
    """Indices are the checkpoint's `decoder.{i}` (TAEHV l.227-234 with time upscale (False, True, True))."""
    a, b, c, d = cfg.decoder_widths
    return nn.Sequential(
        Clamp(), _conv(cfg.latent_channels, a), nn.ReLU(),
        MemBlock(a), MemBlock(a), MemBlock(a), nn.Upsample(scale_factor=2), TGrow(a, 1), _conv(a, b, bias=False),
        MemBlock(b), MemBlock(b), MemBlock(b), nn.Upsample(scale_factor=2), TGrow(b, 2), _conv(b, c, bias=False),
        MemBlock(c), MemBlock(c), MemBlock(c), nn.Upsample(scale_factor=2), TGrow(c, 2), _conv(c, d, bias=False),
        nn.ReLU(), _conv(d, 3))


def build_encoder(cfg: TinyCodecConfig) -> nn.Sequential:
    """Indices are the checkpoint's `encoder.{i}` (TAEHV l.210-216 with time downscale (True, True, False))."""
    n = cfg.encoder_width
    return nn.Sequential(
        _conv(3, n), nn.ReLU(),
        TPool(n, 2), _conv(n, n, stride=2, bias=False), MemBlock(n), MemBlock(n), MemBlock(n),
        TPool(n, 2), _conv(n, n, stride=2, bias=False), MemBlock(n), MemBlock(n), MemBlock(n),
        TPool(n, 1), _conv(n, n, stride=2, bias=False), MemBlock(n), MemBlock(n), MemBlock(n),
        _conv(n, cfg.latent_channels))


class BlockMemory:
    """What a stream keeps between chunks: each MemBlock's last input frame (None before the first)."""

    def __init__(self, blocks: nn.Sequential) -> None:
        self.frames: list[Tensor | None] = [None] * len(blocks)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.frames if t is not None)


def run_blocks(blocks: nn.Sequential, x: Tensor, memory: BlockMemory) -> Tensor:
    """x (B, T, C, H, W) through the blocks, all T frames at once per block; memory is read and advanced.

    A MemBlock's past for frame t is its own input at t-1: the previous chunk's last for t = 0.
    """
    batch = x.shape[0]
    x = x.flatten(0, 1)  # (B*T, C, H, W), frames of one batch item consecutive
    for i, block in enumerate(blocks):
        if isinstance(block, MemBlock):
            frames = x.unflatten(0, (batch, -1))  # (B, t, C, H, W)
            before = memory.frames[i]
            first = torch.zeros_like(frames[:, :1]) if before is None else before
            past = torch.cat([first, frames[:, :-1]], 1).flatten(0, 1)  # (B*t, C, H, W)
            memory.frames[i] = frames[:, -1:].clone()  # a copy: a view would keep the whole chunk alive
            x = block(x, past)
        else:
            x = block(x)
    return x.unflatten(0, (batch, -1))  # (B, T', C', H', W')


class TinyCodec(nn.Module):
    """A TAEHV for Wan 2.1 latents behind the render path's codec interface (pipeline.LatentCodec).

    `encoder` is absent from a decoder-only file; `encode` then says so.
    """

    def __init__(self, config: TinyCodecConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else TinyCodecConfig()
        self.decoder = build_decoder(self.config)
        self.encoder = build_encoder(self.config) if self.config.encoder_width else None

    @property
    def z_dim(self) -> int:
        return self.config.latent_channels

    @property
    def device(self) -> torch.device:
        return self.decoder[1].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder[1].weight.dtype

    def streaming_decoder(self) -> TinyStreamingDecoder:
        """A decoder for one new latent stream."""
        return TinyStreamingDecoder(self)

    def decode(self, latent: Tensor) -> Tensor:
        """Normalised latent [B, 16, T, h, w] -> frames [B, 3, 4T - 3, 8h, 8w] in [-1, 1], in one pass."""
        return TinyStreamingDecoder(self).decode(latent)

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        """Video [B, 3, 1+4k, H, W] in [-1, 1] -> normalised latent [B, 16, 1+k, H/8, W/8] (float32).

        Frame 0 is repeated to fill latent 0's four frames (the decoder's trim makes latent 0 frame 0 alone);
        for the one-frame reference this is exactly TAEHV's `encode_video` (which repeats the last frame).
        """
        from .latent_norm import normalize_latent

        if self.encoder is None:
            raise CheckpointError("this tiny decoder file holds no encoder (no 'encoder.*' tensors), so it cannot "
                                  "encode the reference; use taew2_1 (which has one) or the Wan2.1 VAE")
        if video.ndim != 5 or video.shape[1] != 3 or (video.shape[2] - 1) % FRAMES_PER_LATENT:
            raise InputError(f"video shape {tuple(video.shape)}; expected [B, 3, 1+4k, H, W] in [-1, 1]")
        if video.shape[3] % VAE_STRIDE[1] or video.shape[4] % VAE_STRIDE[2]:
            raise InputError(f"video size {video.shape[3]}x{video.shape[4]}; height and width must be multiples "
                             f"of {VAE_STRIDE[1]}")
        x = ((video.to(device=self.device, dtype=self.dtype) + 1) / 2).transpose(1, 2)  # (B, T, 3, H, W) in [0, 1]
        x = torch.cat([x[:, :1].expand(-1, FRAMES_TO_TRIM, -1, -1, -1), x], 1)  # (B, 4(k+1), 3, H, W)
        z = run_blocks(self.encoder, x, BlockMemory(self.encoder)).transpose(1, 2).float()  # (B, 16, 1+k, h, w)
        return normalize_latent(z) if self.config.latents == "raw" else z


class TinyStreamingDecoder:
    """Decodes one latent stream chunk by chunk; the frames equal a one-shot decode of the whole stream.

    `decode(chunk)` takes normalised latents [B, 16, t, h, w] (any t >= 1) and returns the new frames in [-1, 1]:
    4t - 3 for the stream's first chunk (its first 3 raw frames dropped), 4t after, as the Wan VAE's
    StreamingDecoder. Memory between chunks: one frame per MemBlock. `reset()` starts a new stream.
    """

    def __init__(self, codec: TinyCodec, *, clamp: bool = True) -> None:
        self.codec = codec
        self.clamp = clamp
        self.reset()

    def reset(self) -> None:
        self._memory = BlockMemory(self.codec.decoder)
        self._shape: tuple[int, int, int] | None = None  # (B, h, w) of the stream
        self.latents_decoded = 0
        self.frames_decoded = 0

    def cache_nbytes(self) -> int:
        return self._memory.nbytes()

    def state_tensors(self) -> dict[str, Tensor]:
        """The MemBlocks' last inputs (`mem.<decoder index>`) and counters, for a resumable save."""
        out = {f"mem.{i}": t for i, t in enumerate(self._memory.frames) if t is not None}
        shape = self._shape if self._shape is not None else (-1, -1, -1)
        out["counters"] = torch.tensor([self.latents_decoded, self.frames_decoded, *shape])
        return out

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Restore what `state_tensors` saved, from the same codec; the next `decode` continues bit for bit."""
        if "counters" not in tensors:
            raise InputError(f"decoder state lacks 'counters' (got {sorted(tensors)[:4]}); it was not saved by "
                             "TinyStreamingDecoder.state_tensors")
        self.reset()
        for i in range(len(self._memory.frames)):
            if f"mem.{i}" in tensors:
                self._memory.frames[i] = tensors[f"mem.{i}"].to(device=self.codec.device, dtype=self.codec.dtype)
        latents, frames, b, h, w = (int(x) for x in tensors["counters"])
        self.latents_decoded, self.frames_decoded = latents, frames
        self._shape = None if b < 0 else (b, h, w)

    @torch.no_grad()
    def decode(self, latent: Tensor) -> Tensor:
        from .latent_norm import denormalize_latent

        self._check(latent)
        z = denormalize_latent(latent) if self.codec.config.latents == "raw" else latent
        z = z.to(device=self.codec.device, dtype=self.codec.dtype).transpose(1, 2)  # (B, t, 16, h, w)
        frames = run_blocks(self.codec.decoder, z, self._memory)  # (B, 4t, 3, 8h, 8w) in ~[0, 1]
        if self.latents_decoded == 0:
            frames = frames[:, FRAMES_TO_TRIM:]
        self.latents_decoded += latent.shape[2]
        self.frames_decoded += frames.shape[1]
        frames = frames.transpose(1, 2).float()  # (B, 3, t', 8h, 8w)
        if self.clamp:
            frames = frames.clamp(0.0, 1.0)
        return frames * 2 - 1

    def _check(self, latent: Tensor) -> None:
        z_dim = self.codec.z_dim
        if latent.ndim != 5 or latent.shape[1] != z_dim or latent.shape[2] < 1:
            raise InputError(f"latent shape {tuple(latent.shape)}; expected [B, {z_dim}, T>=1, h, w]")
        shape = (latent.shape[0], latent.shape[3], latent.shape[4])
        if self._shape is not None and shape != self._shape:
            raise InputError(f"latent chunk has batch/size {shape}, but this stream started with {self._shape}; "
                             "call reset() before decoding a different stream")
        self._shape = shape


# ----------------------------------------------------------------------------------------------- loading

def is_tiny_codec_file(keys) -> bool:
    """Whether a checkpoint's tensor names are a TAEHV's (read from the keys, never the file name)."""
    return DETECT_KEY in keys and "decoder.1.weight" in keys


def latents_from_name(path: str | Path) -> LatentConvention:
    """Which latents a TAEHV file for a 16-channel space decodes, from its published name (see module doc)."""
    stem = Path(path).name.lower()
    for fragment, convention in _NAMED_CONVENTIONS:
        if fragment in stem:
            return convention
    if "taehv" in stem and "1_5" not in stem:
        raise CheckpointError(f"{Path(path).name}: taehv is TAEHV for Hunyuan Video, whose latent space is not Wan "
                              f"2.1's; {TINY_FILE_HINT}")
    raise CheckpointError(f"{Path(path).name}: a TAEHV tiny autoencoder, but its name does not say which latents it "
                          "decodes: taew2_1 takes normalised Wan 2.1 latents and lighttaew2_1 raw ones, and their "
                          "tensors are alike. Keep the published name (taew2_1.* or lighttaew2_1.*), or pass "
                          "latents='normalised' or 'raw' to load_tiny_codec")


def _config_from(name: str, shapes: dict[str, tuple[int, ...]], latents: LatentConvention | None,
                 path: Path) -> TinyCodecConfig:
    first, last = shapes["decoder.1.weight"], shapes.get("decoder.22.weight", ())
    if first[1] != LATENT_CHANNELS or last[:1] != (3,):
        raise CheckpointError(f"{name}: a TAEHV for {first[1]} latent channels and {last[:1]} output channels (a "
                              "Wan 2.2 / Hunyuan 1.5 / LTX tiny autoencoder); Knot Forcing decodes the Wan 2.1 latent "
                              f"space ({LATENT_CHANNELS} channels, 3 output channels); {TINY_FILE_HINT}")
    widths = tuple(shapes.get(f"decoder.{i}.weight", (0,))[0] for i in (1, 8, 14, 20))
    encoder = shapes.get("encoder.0.weight", (0,))[0]
    return TinyCodecConfig(decoder_widths=widths, encoder_width=encoder,
                           latents=latents if latents is not None else latents_from_name(path))


def describe_tiny_codec(path: str | Path) -> str:
    """What `inspect` shows for a TAEHV file: read from the header, no weights loaded."""
    from .checkpoints import open_checkpoint

    file = open_checkpoint(path, "a TAEHV tiny autoencoder")
    config = _config_from(Path(path).name, file.shapes, None, Path(path))
    dtypes = sorted(set(file.dtypes.values()))
    return "\n".join([
        "format: TAEHV tiny autoencoder for the Wan 2.1 latent space (taew2_1 / lighttaew2_1 layout)",
        f"decoder widths: {'/'.join(map(str, config.decoder_widths))}; encoder: "
        + (f"width {config.encoder_width}" if config.encoder_width else "none (decode only)"),
        f"latents it decodes: {config.latents} (from the file name); stored {', '.join(dtypes)}",
        "frames: 4T - 3 for T latents (the Wan VAE's count); use it as --vae for fast decoding"])


def _fit_tgrow(codec: TinyCodec, key: str, tensor: Tensor, rows: int) -> Tensor:
    """A TGrow weight trained with a larger stride keeps its last-timestep rows, as TAEHV's loader does."""
    grow = {f"decoder.{i}.conv.weight" for i, block in enumerate(codec.decoder) if isinstance(block, TGrow)}
    return tensor[-rows:] if key in grow and tensor.shape[0] > rows else tensor


def load_tiny_codec(path: str | Path, *, latents: LatentConvention | None = None,
                    dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> TinyCodec:
    """Load taew2_1 / lighttaew2_1 strictly from .safetensors or a weights-only .pth (never unpickled).

    latents: which latents the file decodes; None reads it from the published file name (latents_from_name).
    """
    from .checkpoints import open_checkpoint

    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"tiny decoder not found: {path}; {TINY_FILE_HINT}")
    file = open_checkpoint(path, "a TAEHV tiny autoencoder")
    if not is_tiny_codec_file(file.shapes):
        raise CheckpointError(f"{path.name}: not a TAEHV tiny autoencoder ('{DETECT_KEY}' is not among its "
                              f"{len(file.shapes)} tensors); {TINY_FILE_HINT}")
    config = _config_from(path.name, file.shapes, latents, path)
    with torch.device("meta"):
        codec = TinyCodec(config)
    expected = codec.state_dict()
    given = set(file.shapes)
    missing, unexpected = sorted(set(expected) - given), sorted(given - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path.name}: TAEHV keys do not match: {len(missing)} missing {missing[:4]}, "
                              f"{len(unexpected)} unexpected {unexpected[:4]}; {TINY_FILE_HINT}")
    state = {}
    with file.reader() as read:
        for key, ref in expected.items():
            tensor = _fit_tgrow(codec, key, read(key), ref.shape[0])
            if tuple(tensor.shape) != tuple(ref.shape):
                raise CheckpointError(f"{path.name}: tensor {key} has shape {tuple(tensor.shape)}; this TAEHV "
                                      f"needs {tuple(ref.shape)}; {TINY_FILE_HINT}")
            state[key] = tensor.to(device=device, dtype=dtype)
    codec.load_state_dict(state, strict=True, assign=True)
    log.info("loaded TAEHV tiny codec from %s (decoder widths %s, encoder %s, %s latents)", path.name,
             config.decoder_widths, config.encoder_width or "none", config.latents)
    return codec.eval().requires_grad_(False)
