"""The demo model's small learned video autoencoder, with the Wan2.1 VAE's latent contract and decoder interface.

Why not a tiny config of the real Wan VAE (knot_core.vae): measured on the 2-core CPU, `VAEConfig(dim=8)` decodes
one latent frame (4 video frames at 64x64) in ~0.5 s (8 fps, a third of real time) and a training step on
4 clips of 9 frames takes 10-45 s, so neither real-time rendering nor a CPU training budget of minutes is
possible with its 3D causal convolutions. This codec keeps what the engine relies on: 16 latent channels at
stride (4, 8, 8), latent 0 = video frame 0 alone and latent k >= 1 = frames 4k-3 .. 4k (1 + 4(T-1) frames),
latents normalised per channel (stored `latent_mean` / `latent_std`), and a causal `StreamingDecoder.decode`
whose chunked output equals the one-shot decode (each latent is decoded from itself and its predecessor,
the only state kept between calls). Convolutions are 2D over the 4 frames stacked as channels; resolution changes
by pixel (un)shuffle (sub-pixel convolution: the finer grid's detail is computed at the coarser one, so the
96x96 output costs about what a 48x48 one would); 1x1 shortcuts carry 8x8 average colours into the latent and
back (bilinear). Our own design; weights are trained by train/train_codec.py (on 48x48 crops: the network is
fully convolutional) and ship in knot_core/models/demo_codec.safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import FRAMES_PER_LATENT, LATENT_CHANNELS
from .errors import InputError


@dataclass(frozen=True)
class CodecConfig:
    width: int = 64  # channels at the latent resolution; 3/4 then 1/2 of it at 2x and 4x, 12 (4 RGB frames) at 8x
    z_dim: int = LATENT_CHANNELS
    decoder_width: int | None = None  # the decoder's own width (None: `width`): decoding detail costs more

    @property
    def dec_width(self) -> int:
        return self.width if self.decoder_width is None else self.decoder_width

    @classmethod
    def of_state(cls, state: dict[str, Tensor]) -> CodecConfig:
        """The config a saved state dict was built with (widths from its first encoder and decoder convs)."""
        enc, dec = int(state["encoder.9.weight"].shape[1]), int(state["decoder.0.weight"].shape[0])
        return cls(width=enc, decoder_width=None if dec == enc else dec)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class ResBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv1, self.conv2 = _conv(dim, dim), _conv(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class Up(nn.Module):
    """2x upsampling by pixel shuffle: conv to 4*cout channels, then rearrange (sub-pixel convolution: the
    detail of the finer grid is computed at the coarser one, a quarter of the cost)."""

    def __init__(self, cin: int, cout: int, act: bool = True):
        super().__init__()
        self.conv, self.act = _conv(cin, 4 * cout), act

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_shuffle(self.conv(F.silu(x) if self.act else x), 2)


class Down(nn.Module):
    """2x downsampling by pixel unshuffle, then a conv: nothing is thrown away before the conv sees it."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _conv(4 * cin, cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pixel_unshuffle(x, 2))


class DemoCodec(nn.Module):
    """encode: video [B, 3, 1+4k, H, W] in [-1, 1] -> normalised latent [B, 16, 1+k, H/8, W/8];
    decode: latent -> video, through `StreamingDecoder`."""

    def __init__(self, cfg: CodecConfig = CodecConfig()):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        w2, w4 = 3 * w // 4, w // 2  # channels at 2x and 4x the latent resolution
        channels = 3 * FRAMES_PER_LATENT
        self.encoder = nn.Sequential(Down(channels, w4), nn.SiLU(), Down(w4, w2), ResBlock(w2), nn.SiLU(),
                                     Down(w2, w), ResBlock(w), ResBlock(w), nn.SiLU(), _conv(w, cfg.z_dim))
        self.encoder_skip = nn.Conv2d(channels, cfg.z_dim, 1)  # 8x8 average colours straight into the latent
        w = cfg.dec_width
        w2, w4 = 3 * w // 4, w // 2
        self.decoder = nn.Sequential(_conv(2 * cfg.z_dim, w), ResBlock(w), ResBlock(w), Up(w, w2), ResBlock(w2),
                                     Up(w2, w4), ResBlock(w4), Up(w4, channels))
        self.decoder_skip = nn.Conv2d(2 * cfg.z_dim, channels, 1)  # coarse colours, upsampled bilinearly
        self.register_buffer("latent_mean", torch.zeros(cfg.z_dim))
        self.register_buffer("latent_std", torch.ones(cfg.z_dim))

    def groups(self, video: Tensor) -> Tensor:
        """[B, 3, 1+4k, H, W] -> per-latent frame stacks [B, 1+k, 12, H, W] (frame 0 repeated 4x for latent 0)."""
        b, _, t, h, w = video.shape
        if t < 1 or (t - 1) % FRAMES_PER_LATENT:
            raise InputError(f"video has {t} frames; this codec encodes 1 + 4k frames (trim or pad the clip)")
        first = video[:, :, :1].expand(-1, -1, FRAMES_PER_LATENT, -1, -1)
        rest = video[:, :, 1:]
        stacks = torch.cat([first, rest], 2).view(b, 3, -1, FRAMES_PER_LATENT, h, w)  # (B, 3, T, 4, H, W)
        return stacks.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, 3 * FRAMES_PER_LATENT, h, w)

    def encode_raw(self, video: Tensor) -> Tensor:
        """Un-normalised latent [B, 16, T, h, w]."""
        g = self.groups(video)  # (B, T, 12, H, W)
        frames = g.flatten(0, 1)  # (B*T, 12, H, W)
        z = self.encoder(frames) + self.encoder_skip(F.avg_pool2d(frames, 8))  # (B*T, 16, h, w)
        return z.view(g.shape[0], g.shape[1], *z.shape[1:]).transpose(1, 2)

    def encode(self, video: Tensor) -> Tensor:
        z = self.encode_raw(video)
        return (z - self.latent_mean.view(1, -1, 1, 1, 1)) / self.latent_std.view(1, -1, 1, 1, 1)

    def decode_pairs(self, z: Tensor, prev: Tensor) -> Tensor:
        """Un-normalised latents z and their predecessors prev [N, 16, h, w] -> 4 frames each [N, 4, 3, H, W]."""
        pair = torch.cat([z, prev], 1)  # (N, 32, h, w)
        coarse = F.interpolate(self.decoder_skip(pair), scale_factor=8, mode="bilinear", align_corners=False)
        out = self.decoder(pair) + coarse  # (N, 12, H, W): detail on top of the coarse colours
        return out.unflatten(1, (FRAMES_PER_LATENT, 3))

    def decode(self, latent: Tensor) -> Tensor:
        return StreamingDecoder(self).decode(latent)

    # the render path's codec interface (knot_core.pipeline.LatentCodec), shared with the Wan2.1 VAE
    @property
    def z_dim(self) -> int:
        return self.cfg.z_dim

    @property
    def device(self) -> torch.device:
        return self.encoder_skip.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder_skip.weight.dtype

    def streaming_decoder(self) -> StreamingDecoder:
        """A decoder for one new latent stream."""
        return StreamingDecoder(self)


class StreamingDecoder:
    """Decodes one latent stream chunk by chunk (any chunk length); output equals the one-shot decode.

    decode(latent [B, 16, t, h, w]) -> frames [B, 3, t', 8h, 8w] in [-1, 1]: t' = 1 + 4(t-1) for the stream's
    first chunk, 4t after. The state between calls is the previous latent frame only.
    """

    def __init__(self, codec: DemoCodec, *, clamp: bool = True):
        self.codec, self.clamp = codec, clamp
        self.prev: Tensor | None = None
        self.latents_decoded = 0
        self.frames_decoded = 0

    def reset(self) -> None:
        self.prev, self.latents_decoded, self.frames_decoded = None, 0, 0

    def state_tensors(self) -> dict[str, Tensor]:
        """The stream's state as flat named tensors (a render's resume file): the previous latent and counters."""
        out = {"counters": torch.tensor([self.latents_decoded, self.frames_decoded])}
        if self.prev is not None:
            out["prev"] = self.prev
        return out

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Restore what `state_tensors` saved; the next `decode` continues bit for bit."""
        self.latents_decoded, self.frames_decoded = (int(v) for v in tensors["counters"])
        prev = tensors.get("prev")
        self.prev = None if prev is None else prev.to(self.codec.latent_mean.device)

    @torch.no_grad()
    def decode(self, latent: Tensor) -> Tensor:
        if latent.ndim != 5 or latent.shape[1] != self.codec.cfg.z_dim or latent.shape[2] < 1:
            raise InputError(f"latent shape {tuple(latent.shape)}; expected [B, {self.codec.cfg.z_dim}, T>=1, h, w]")
        mean, std = self.codec.latent_mean.view(1, 1, -1, 1, 1), self.codec.latent_std.view(1, 1, -1, 1, 1)
        z = latent.transpose(1, 2).float() * std + mean  # (B, t, 16, h, w) un-normalised
        first = z[:, :1] if self.prev is None else self.prev
        prev = torch.cat([first, z[:, :-1]], 1)  # latent 0 is its own predecessor
        b, t = z.shape[:2]
        frames = self.codec.decode_pairs(z.flatten(0, 1), prev.flatten(0, 1))  # (B*t, 4, 3, H, W)
        frames = frames.view(b, t * FRAMES_PER_LATENT, *frames.shape[2:])  # (B, 4t, 3, H, W)
        if self.prev is None:
            frames = frames[:, FRAMES_PER_LATENT - 1:]  # latent 0 -> video frame 0 only
        self.prev = z[:, -1:]
        self.latents_decoded += t
        self.frames_decoded += frames.shape[1]
        frames = frames.transpose(1, 2)  # (B, 3, t', H, W)
        return frames.clamp(-1.0, 1.0) if self.clamp else frames
