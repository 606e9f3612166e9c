"""Layers of the Wan2.1 video VAE, with a typed streaming cache.

Reference: `wan/modules/vae.py` in Wan-Video/Wan2.1. Attribute names and module indices follow it, so
`wan_2.1_vae.safetensors` (and ComfyUI's `comfy/ldm/wan/vae.py`, which uses the same keys) loads without
renaming: `residual.N`, `shortcut`, `norm`/`to_qkv`/`proj`, `resample.1`, `time_conv`, `head.N`, `gamma`.

Streaming. The encoder and decoder are causal in time: every temporal kernel-3 conv sees only the past, and
everything else acts frame by frame. The original keeps the past of each conv in one flat list that a shared
one-element cursor walks, with a string sentinel marking the first call of a temporal upsampler. Here each
block owns a small typed state (`FrameCache`, `ResidualState`, `UpsampleState`, `DownsampleState`) and every
`forward(x, state)` receives its own; `CausalCoder.new_state()` builds the tree for one stream. A conv's cache
holds its last 2 input frames (zeros before the first frame), so memory is flat however long the stream is,
and feeding the frames in any grouping gives the same result as feeding them all at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ResampleMode = Literal["upsample2d", "upsample3d", "downsample2d", "downsample3d"]


def _nbytes(t: Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


@dataclass
class FrameCache:
    """The last input frames of one causal temporal conv; None before the stream's first frame."""

    frames: Tensor | None = None  # [B, C, past, H, W]

    def nbytes(self) -> int:
        return _nbytes(self.frames)


@dataclass
class ResidualState:
    """Caches of the two kernel-3 convs of a ResidualBlock (`residual.2` and `residual.6`)."""

    first: FrameCache = field(default_factory=FrameCache)
    second: FrameCache = field(default_factory=FrameCache)

    def nbytes(self) -> int:
        return self.first.nbytes() + self.second.nbytes()


@dataclass
class UpsampleState:
    """Temporal upsampler: whether the stream's first frame went by, and the `time_conv` cache."""

    started: bool = False
    time_cache: FrameCache = field(default_factory=FrameCache)

    def nbytes(self) -> int:
        return self.time_cache.nbytes()


@dataclass
class DownsampleState:
    """Temporal downsampler: the last frame of the previous chunk (the stride-2 window overlaps it)."""

    previous: Tensor | None = None  # [B, C, 1, H, W]

    def nbytes(self) -> int:
        return _nbytes(self.previous)


BlockState = ResidualState | UpsampleState | DownsampleState | None


@dataclass
class CoderState:
    """Everything one stream of an encoder or decoder carries between calls."""

    conv1: FrameCache
    body: tuple[BlockState, ...]  # one entry per block of `CausalCoder.body()`, in forward order
    head: FrameCache

    def nbytes(self) -> int:
        body = sum(s.nbytes() for s in self.body if s is not None)
        return self.conv1.nbytes() + body + self.head.nbytes()


class CausalConv3d(nn.Conv3d):
    """Conv3d padded on the past only in time (2·pad_t frames) and symmetrically in space."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int | tuple[int, int, int],
                 stride: int | tuple[int, int, int] = 1, padding: int | tuple[int, int, int] = 0) -> None:
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        # Spatial zero padding is left to the conv itself (no padded copy); time is padded with the past.
        super().__init__(in_dim, out_dim, kernel_size, stride=stride, padding=(0, ph, pw))
        self.past = 2 * pt  # frames of history each output frame needs

    def forward(self, x: Tensor, cache: FrameCache | None = None) -> Tensor:
        if self.past:
            # A conv with history must be given its cache: there is no stateless path to drift apart from it.
            assert cache is not None, "causal conv with temporal context called without its FrameCache"
            b, c, _, h, w = x.shape
            past = cache.frames if cache.frames is not None else x.new_zeros(b, c, self.past, h, w)
            x = torch.cat([past.to(x), x], dim=2)  # [B, C, past+T, H, W]
            cache.frames = x[:, :, -self.past:].clone()  # clone: a view would pin the whole chunk
        return self._frame_by_frame(x)

    def _frame_by_frame(self, x: Tensor) -> Tensor:
        """The conv, one output frame per call: each frame is then computed by the same call whatever the
        chunking (CPU/GPU kernels choose their blocking by shape), so a stream is bitwise equal to one-shot."""
        kt, st = self.kernel_size[0], self.stride[0]
        n_out = (x.shape[2] - kt) // st + 1
        if n_out == 1:
            return super().forward(x)
        first = super().forward(x[:, :, :kt])  # [B, C', 1, H', W']
        out = first.new_empty(first.shape[0], first.shape[1], n_out, *first.shape[3:])  # [B, C', T', H', W']
        out[:, :, :1] = first
        for i in range(1, n_out):
            out[:, :, i:i + 1] = super().forward(x[:, :, i * st:i * st + kt])
        return out


class ChannelRMSNorm(nn.Module):
    """RMS norm over channels (dim 1) with a learned `gamma` (the original's `RMS_norm`, channel_first)."""

    def __init__(self, dim: int, images: bool = True, bias: bool = False) -> None:
        super().__init__()
        shape = (dim, 1, 1) if images else (dim, 1, 1, 1)
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        y = F.normalize(x, dim=1) * self.scale * self.gamma
        return y if self.bias is None else y + self.bias


class Upsample2x(nn.Module):
    """Nearest-exact 2x spatial upsampling, computed in float32 (nearest on bfloat16 is not supported everywhere)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x.float(), scale_factor=2.0, mode="nearest-exact").type_as(x)


def per_frame(fn: nn.Module, x: Tensor) -> Tensor:
    """Apply a 2D module to every frame of [B, C, T, H, W], one frame at a time.

    Why not one call on [B*T, C, H, W]: conv kernels pick their blocking by batch size, so a frame's values
    would depend on how many frames share its chunk (~1e-6 apart in float32), and streaming would differ
    from one-shot decoding by the grouping alone. Per frame, every grouping gives bitwise the same frames.
    """
    return torch.stack([fn(x[:, :, i]) for i in range(x.shape[2])], dim=2)  # [B, C', T, H', W']


class Resample(nn.Module):
    """Spatial 2x resampling, plus a temporal 2x step (`time_conv`) in the 3d modes."""

    def __init__(self, dim: int, mode: ResampleMode) -> None:
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(Upsample2x(), nn.Conv2d(dim, dim // 2, 3, padding=1))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def new_state(self) -> BlockState:
        if self.mode == "upsample3d":
            return UpsampleState()
        if self.mode == "downsample3d":
            return DownsampleState()
        return None

    def forward(self, x: Tensor, state: BlockState) -> Tensor:
        if isinstance(state, UpsampleState):
            x = self._double_time(x, state)
        x = per_frame(self.resample, x)
        if isinstance(state, DownsampleState):
            x = self._halve_time(x, state)
        return x

    def _double_time(self, x: Tensor, state: UpsampleState) -> Tensor:
        """Frame 0 of the stream passes unchanged; every later frame becomes two.

        The original's first call (latent 0) skips `time_conv`; later frames go through it with a zero
        history (frame 0 is never part of it), and its 2·C outputs are the two new frames in order.
        """
        parts = []
        if not state.started:
            state.started = True
            parts.append(x[:, :, :1])
            x = x[:, :, 1:]
        if x.shape[2]:
            b, c, t, h, w = x.shape
            y = self.time_conv(x, state.time_cache).view(b, 2, c, t, h, w)  # [B, 2, C, T, H, W]
            parts.append(torch.stack((y[:, 0], y[:, 1]), dim=3).reshape(b, c, 2 * t, h, w))
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]

    def _halve_time(self, x: Tensor, state: DownsampleState) -> Tensor:
        """The first chunk passes unchanged (the encoder feeds frame 0 alone); later even-length chunks
        are strided over with the previous chunk's last frame in front: windows (2j-1, 2j, 2j+1)."""
        previous, state.previous = state.previous, x[:, :, -1:].clone()
        if previous is None:
            return x
        return self.time_conv(torch.cat([previous, x], dim=2))  # [B, C, T/2, H, W]


class ResidualBlock(nn.Module):
    """norm → SiLU → conv → norm → SiLU → (dropout slot) → conv, plus a 1x1x1 shortcut when channels change."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        # Index 5 is Dropout(0.0) in the original; an Identity keeps the checkpoint's indices (2 and 6).
        self.residual = nn.Sequential(
            ChannelRMSNorm(in_dim, images=False), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            ChannelRMSNorm(out_dim, images=False), nn.SiLU(), nn.Identity(),
            CausalConv3d(out_dim, out_dim, 3, padding=1))
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def new_state(self) -> ResidualState:
        return ResidualState()

    def forward(self, x: Tensor, state: ResidualState) -> Tensor:
        r = self.residual
        h = r[2](r[1](r[0](x)), state.first)
        h = r[6](r[5](r[4](r[3](h))), state.second)
        return h + self.shortcut(x)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no temporal mixing, so no state)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = ChannelRMSNorm(dim)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def new_state(self) -> None:
        return None

    def forward(self, x: Tensor, state: None = None) -> Tensor:
        return x + per_frame(self._attend, x)

    def _attend(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        qkv = self.to_qkv(self.norm(x)).view(n, 1, 3 * c, h * w).transpose(2, 3)  # [N, 1, HW, 3C]
        q, k, v = qkv.contiguous().chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)  # [N, 1, HW, C]
        return self.proj(y.squeeze(1).transpose(1, 2).reshape(n, c, h, w))


def _middle(dim: int) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(dim, dim), AttentionBlock(dim), ResidualBlock(dim, dim))


def _head(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(ChannelRMSNorm(in_dim, images=False), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1))


class CausalCoder(nn.Module):
    """Shared forward of Encoder3d and Decoder3d: conv1 → body blocks → head, each with its own state."""

    conv1: CausalConv3d
    head: nn.Sequential

    def body(self) -> Iterator[nn.Module]:
        raise NotImplementedError

    def new_state(self) -> CoderState:
        return CoderState(conv1=FrameCache(), body=tuple(b.new_state() for b in self.body()), head=FrameCache())

    def forward(self, x: Tensor, state: CoderState) -> Tensor:
        x = self.conv1(x, state.conv1)
        for block, block_state in zip(self.body(), state.body, strict=True):
            x = block(x, block_state)
        h = self.head
        return h[2](h[1](h[0](x)), state.head)


class Encoder3d(CausalCoder):
    """Video [B, 3, T, H, W] → [B, z_dim, T', H/8, W/8] (z_dim here is 2·16: mean and log-variance)."""

    def __init__(self, dim: int, z_dim: int, dim_mult: Sequence[int], num_res_blocks: int,
                 temporal_downsample: Sequence[bool]) -> None:
        super().__init__()
        dims = [dim * u for u in (1, *dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        blocks: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i < len(dim_mult) - 1:
                blocks.append(Resample(out_dim, "downsample3d" if temporal_downsample[i] else "downsample2d"))
        self.downsamples = nn.Sequential(*blocks)
        self.middle = _middle(dims[-1])
        self.head = _head(dims[-1], z_dim)

    def body(self) -> Iterator[nn.Module]:
        yield from self.downsamples
        yield from self.middle


class Decoder3d(CausalCoder):
    """Latent [B, z_dim, T, h, w] → video [B, 3, T', 8h, 8w] (T' = 1 + 4(T-1) over a whole stream)."""

    def __init__(self, dim: int, z_dim: int, dim_mult: Sequence[int], num_res_blocks: int,
                 temporal_upsample: Sequence[bool]) -> None:
        super().__init__()
        dims = [dim * u for u in (dim_mult[-1], *reversed(dim_mult))]
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.middle = _middle(dims[0])
        blocks: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                in_dim //= 2  # every upsampler halves the channels it hands on
            for _ in range(num_res_blocks + 1):
                blocks.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i < len(dim_mult) - 1:
                blocks.append(Resample(out_dim, "upsample3d" if temporal_upsample[i] else "upsample2d"))
        self.upsamples = nn.Sequential(*blocks)
        self.head = _head(dims[-1], 3)

    def body(self) -> Iterator[nn.Module]:
        yield from self.middle
        yield from self.upsamples
