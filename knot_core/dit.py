"""The Wan2.1 DiT with per-frame timesteps and cache-backed self-attention.

Architecture and parameter names follow Wan2.1 (`wan/modules/model.py`): weight-compatible
with Wan2.1-T2V-1.3B and the causal students distilled from it (Self Forcing, CausVid,
LongLive, Rolling Forcing, AvatarForcing, ComfyUI's AR checkpoints) after the key mapping
in `checkpoints.py`. What differs from Wan is only where keys come from: a block's
self-attention attends to [context K/V supplied by an `AttentionContext` (reference anchor,
sliding window), own K/V], and positions are whatever the caller says (bounded, relative).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DiTConfig
from .driving import DrivingAdapter, DrivingTokens
from .rope import RopeTable, rotate


class AttentionContext(Protocol):
    """Extra keys/values each self-attention layer attends to, and where its own K/V go.

    write(layer, k, v) receives the layer's own un-rotated keys and values (a forward that
    commits frames stores them); keys_values(layer, k, v) takes its own rotated keys and
    values, each (B, S, heads, head_dim), and returns the K/V to attend to: [context | own].
    """

    def write(self, layer: int, k: Tensor, v: Tensor) -> None: ...

    def keys_values(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]: ...


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """Wan's timestep embedding: cos half first, then sin, computed in float64. t: (...,) -> (..., dim)."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    args = t.to(torch.float64)[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class WanRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class QKVO(nn.Module):
    """Wan's attention projections (q, k, v, o) with RMSNorm on q and k over the full width."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(cfg.dim, cfg.dim) for _ in range(4))
        self.norm_q = WanRMSNorm(cfg.dim, cfg.eps)
        self.norm_k = WanRMSNorm(cfg.dim, cfg.eps)


class SelfAttention(QKVO):
    def project(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """-> q (rotated), k (un-rotated: caches store it so), k (rotated), v; each (B, S, heads, d)."""
        heads = (self.num_heads, -1)
        q = rotate(self.norm_q(self.q(x)).unflatten(-1, heads), cos, sin)
        k = self.norm_k(self.k(x)).unflatten(-1, heads)
        return q, k, rotate(k, cos, sin), self.v(x).unflatten(-1, heads)


class CrossAttention(QKVO):
    """Text cross-attention; its K/V depend only on the text, so they are computed once per run."""

    def text_kv(self, text: Tensor) -> tuple[Tensor, Tensor]:
        heads = (self.num_heads, -1)
        return self.norm_k(self.k(text)).unflatten(-1, heads), self.v(text).unflatten(-1, heads)

    def forward(self, x: Tensor, text_kv: tuple[Tensor, Tensor]) -> Tensor:
        q = self.norm_q(self.q(x)).unflatten(-1, (self.num_heads, -1))
        k, v = text_kv
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.o(out.transpose(1, 2).flatten(2))


class DiTBlock(nn.Module):
    """Wan's WanAttentionBlock with per-frame adaLN modulation."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(cfg)
        self.norm3 = nn.LayerNorm(cfg.dim, eps=cfg.eps) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(cfg.ffn_dim, cfg.dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: Tensor, e0: Tensor, frames: int, rope: RopeTable, text_kv: tuple[Tensor, Tensor],
                layer: int, context: AttentionContext | None, attn_mask: Tensor | None) -> Tensor:
        # x: (B, F*S, dim) float32 residual stream; e0: (B, F, 6, dim). The two dense halves are
        # pure functions of tensors (what `compile_blocks` compiles); cache I/O stays between them.
        q, k, k_rot, v = self.attention_inputs(x, e0, frames, rope.cos, rope.sin)
        if context is not None:
            context.write(layer, k, v)
            k_rot, v = context.keys_values(layer, k_rot, v)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k_rot.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=attn_mask)  # (B, H, S, d)
        return self.attention_output(x, e0, frames, y.transpose(1, 2).flatten(2), text_kv)

    def _modulation(self, e0: Tensor) -> list[Tensor]:
        mod = (self.modulation.float().unsqueeze(1) + e0).unbind(2)  # 6 x (B, F, dim)
        return [m.unsqueeze(2) for m in mod]  # shift1, scale1, gate1, shift2, scale2, gate2: (B, F, 1, dim)

    def _modulate(self, h: Tensor, shift: Tensor, scale: Tensor, frames: int) -> Tensor:
        # one fused multiply-add: eager element-wise passes over the residual stream cost as much as a GEMM
        h = torch.addcmul(shift, h.float().unflatten(1, (frames, -1)), 1 + scale)  # (B, F, S, dim)
        return h.flatten(1, 2).to(self.ffn[0].weight.dtype)

    def attention_inputs(self, x: Tensor, e0: Tensor, frames: int, cos: Tensor, sin: Tensor):
        shift1, scale1 = self._modulation(e0)[:2]
        return self.self_attn.project(self._modulate(self.norm1(x), shift1, scale1, frames), cos, sin)

    def attention_output(self, x: Tensor, e0: Tensor, frames: int, y: Tensor,
                         text_kv: tuple[Tensor, Tensor]) -> Tensor:
        """y: attention result (B, F*S, dim) -> the block's output residual stream."""
        _, _, gate1, shift2, scale2, gate2 = self._modulation(e0)

        def add_gated(x: Tensor, h: Tensor, gate: Tensor) -> Tensor:  # x + h * gate, per frame
            return torch.addcmul(x.unflatten(1, (frames, -1)), h.float().unflatten(1, (frames, -1)), gate).flatten(1, 2)

        x = add_gated(x, self.self_attn.o(y), gate1)
        x = x + self.cross_attn(self.norm3(x.to(self.ffn[0].weight.dtype)), text_kv).float()
        y = self.ffn(self._modulate(self.norm2(x), shift2, scale2, frames))
        return add_gated(x, y, gate2)


class Head(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: Tensor, e: Tensor, frames: int) -> Tensor:
        shift, scale = (self.modulation.float().unsqueeze(1) + e.unsqueeze(2)).unbind(2)  # (B, F, dim)
        h = torch.addcmul(shift.unsqueeze(2), self.norm(x).unflatten(1, (frames, -1)), 1 + scale.unsqueeze(2))
        return self.head(h.flatten(1, 2).to(self.head.weight.dtype))


class KnotDiT(nn.Module):
    """Wan2.1 DiT. forward(x (B, in_dim, F, H, W), t (B, F)) -> velocity (B, out_dim, F, H, W)."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(cfg.dim, cfg.dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, cfg.dim * 6))
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        self.driving = nn.ModuleDict()

    def add_adapter(self, name: str, adapter: DrivingAdapter) -> None:
        self.driving[name] = adapter

    def compile_blocks(self, mode: str = "default", backend: str = "inductor") -> None:
        """torch.compile every block's two dense halves (norms, modulation, projections, RoPE,
        cross-attention, FFN: fused kernels). Cache I/O and self-attention stay eager between
        them, so nothing guards on cache cursors: the steady state never recompiles. All blocks
        share the compiled graphs. Shapes start static and turn symbolic once a second token
        count is seen (torch's automatic dynamic shapes), so new frame counts and resolutions
        stop compiling after a few graphs instead of exhausting dynamo's cache and silently
        running eager. mode: torch.compile's, inductor only. "reduce-overhead" (CUDA graphs) is
        not yet run on a GPU: a graph's outputs are reused by its next replay, so the residual
        stream, which outlives the next block's first half, is cloned.
        """
        options = {"mode": mode} if backend == "inductor" else {}
        for block in self.blocks:
            block.attention_inputs = torch.compile(block.attention_inputs, backend=backend, **options)
            output = torch.compile(block.attention_output, backend=backend, **options)
            block.attention_output = (lambda *a, f=output: f(*a).clone()) if mode == "reduce-overhead" else output

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    def encode_text(self, text: Tensor | None, batch: int = 1) -> list[tuple[Tensor, Tensor]]:
        """Per-layer cross-attention K/V for umT5 embeddings text (B, L, text_dim); L <= text_len rows
        are zero-padded to text_len as in training (padding rows are not masked). None -> zeros."""
        cfg, p = self.cfg, self.patch_embedding.weight
        if text is None:
            text = torch.zeros(batch, cfg.text_len, cfg.text_dim, device=p.device, dtype=p.dtype)
        text = F.pad(text, (0, 0, 0, cfg.text_len - text.shape[1])).to(device=p.device, dtype=p.dtype)
        ctx = self.text_embedding(text)  # (B, text_len, dim)
        return [block.cross_attn.text_kv(ctx) for block in self.blocks]

    def forward(self, x: Tensor, t: Tensor, *, frame_positions: Tensor | RopeTable,
                text_kv: list[tuple[Tensor, Tensor]], context: AttentionContext | None = None,
                attn_mask: Tensor | None = None, driving: DrivingTokens | None = None) -> Tensor:
        """frame_positions: temporal index of each frame, or a RopeTable already built for them."""
        cfg = self.cfg
        b, _, frames, height, width = x.shape
        rows, cols = cfg.grid(height, width)
        # contiguous: every block then sees one residual layout (one compiled graph, row-major GEMMs)
        h = self.patch_embedding(x.to(self.dtype)).flatten(2).transpose(1, 2).float().contiguous()  # (B, F*S, dim)
        sinusoid = sinusoidal_embedding(t, cfg.freq_dim)  # float64
        if t.dtype in (torch.bfloat16, torch.float16):  # a low-precision timestep gets its sinusoid in kind (LiveTalk)
            sinusoid = sinusoid.to(t.dtype)
        e = self.time_embedding(sinusoid.to(self.dtype)).float()  # (B, F, dim)
        e0 = self.time_projection(e.to(self.dtype)).float().unflatten(-1, (6, cfg.dim))  # (B, F, 6, dim)
        rope = frame_positions if isinstance(frame_positions, RopeTable) else \
            RopeTable(cfg, frame_positions, rows, cols, device=x.device)
        for i, block in enumerate(self.blocks):
            h = self._drive(h, i, driving, before=True)
            h = block(h, e0, frames, rope, text_kv[i], i, context, attn_mask)
            h = self._drive(h, i, driving, before=False)
        out = self.head(h, e, frames)  # (B, F*S, out*prod(patch))
        return self.unpatchify(out.float(), frames, rows, cols)

    def _drive(self, h: Tensor, index: int, driving: DrivingTokens | None, *, before: bool) -> Tensor:
        if driving is None:
            return h
        for name, adapter in self.driving.items():
            tokens = driving.tokens.get(name)
            if tokens is None:
                continue
            hook = adapter.before_block if before else adapter.after_block
            h = hook(index, h, tokens, driving.active)
        return h

    def unpatchify(self, out: Tensor, frames: int, rows: int, cols: int) -> Tensor:
        # head row layout (p, q, r, c): channel fastest, then patch column, row, time
        pt, ph, pw = self.cfg.patch_size
        u = out.view(out.shape[0], frames, rows, cols, pt, ph, pw, self.cfg.out_dim)
        u = torch.einsum("bfhwpqrc->bcfphqwr", u)
        return u.reshape(out.shape[0], self.cfg.out_dim, frames * pt, rows * ph, cols * pw)
