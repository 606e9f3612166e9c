"""Frame-aligned cross-attention to driving tokens, inserted after selected DiT blocks.

Reference: the Knot Forcing design (arXiv 2512.21734) of driving the causal Wan2.1 DiT with
frame-aligned conditions; no public weights exist, so this is for models trained with it
(e.g. our demo model). Each spatial token of latent frame f attends to the driving tokens of
frames f−r..f+r of the same forward (r = `neighbourhood`). The output projection `o` starts
at zero, so a fresh adapter is the identity; frames with active=False are left untouched and
offer no keys to their neighbours.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..driving import DrivingAdapter
from ..errors import InputError
from .registry import AdapterSpec, register_adapter


@dataclass(frozen=True)
class CrossAttentionConfig:
    """signal: which stream feeds it; feature_dim: size of one row (trailing dims flattened)."""

    signal: str = "audio"
    feature_dim: int = 10752
    dim: int = 1536
    num_heads: int = 12
    blocks: tuple[int, ...] = (3, 7, 11, 15, 19, 23, 27)
    neighbourhood: int = 0
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise InputError(f"CrossAttentionConfig: dim={self.dim} is not a multiple of num_heads={self.num_heads}")
        if not self.blocks or len(set(self.blocks)) != len(self.blocks) or min(self.blocks) < 0:
            raise InputError(f"CrossAttentionConfig.blocks={self.blocks}; need distinct block indices >= 0")
        if self.neighbourhood < 0 or self.feature_dim < 1:
            raise InputError(f"CrossAttentionConfig: neighbourhood={self.neighbourhood}, "
                             f"feature_dim={self.feature_dim}; need >= 0 and >= 1")


class FrameCrossAttention(nn.Module):
    def __init__(self, cfg: CrossAttentionConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.q, self.k, self.v, self.o = (nn.Linear(cfg.dim, cfg.dim) for _ in range(4))
        nn.init.zeros_(self.o.weight)  # identity at start: the residual branch adds exactly 0
        nn.init.zeros_(self.o.bias)

    def forward(self, x: Tensor, keys: Tensor, allowed: Tensor) -> Tensor:
        """x [B, F, S, dim], keys [B, F, M, dim], allowed [F, M] -> update [B, F, S, dim]."""
        b, f, s, dim = x.shape
        h = self.num_heads

        def heads(t: Tensor) -> Tensor:
            return t.reshape(b * f, t.shape[2], h, dim // h).transpose(1, 2)  # [B*F, h, n, hd]

        q, k, v = heads(self.q(self.norm(x))), heads(self.k(keys)), heads(self.v(keys))
        mask = allowed.repeat(b, 1)[:, None, None, :]  # [B*F, 1, 1, M]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B*F, h, S, hd]
        return self.o(out.transpose(1, 2).reshape(b, f, s, dim))


class CrossAttentionAdapter(DrivingAdapter):
    adapter_type = "cross_attention"
    def __init__(self, cfg: CrossAttentionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.signal = cfg.signal
        self.token_proj = nn.Linear(cfg.feature_dim, cfg.dim)
        self.token_norm = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.layers = nn.ModuleList(FrameCrossAttention(cfg) for _ in cfg.blocks)

    def encode(self, features: Tensor) -> Tensor:
        """[B, F, rows, *row] -> tokens [B, F, rows, dim]."""
        if features.ndim < 3 or features[0, 0, 0].numel() != self.cfg.feature_dim:
            raise InputError(f"{self.signal} cross-attention adapter: features {tuple(features.shape)}; need "
                             f"[B, F, rows, ...] with {self.cfg.feature_dim} values per row")
        rows = features.flatten(3) if features.ndim > 3 else features
        return self.token_norm(self.token_proj(rows.to(self.token_proj.weight.dtype)))

    def _neighbours(self, tokens: Tensor, active: Tensor | None) -> tuple[Tensor, Tensor]:
        """Keys of frames f−r..f+r per frame: [B, F, (2r+1)·rows, dim] and which are allowed [F, (2r+1)·rows]."""
        b, f, rows, dim = tokens.shape
        r = self.cfg.neighbourhood
        frame = torch.arange(f, device=tokens.device)[:, None] + torch.arange(-r, r + 1, device=tokens.device)
        ok = (frame >= 0) & (frame < f)  # [F, 2r+1]
        if active is not None:
            ok = ok & active.to(tokens.device)[frame.clamp(0, f - 1)]
        ok = ok | ~ok.any(-1, keepdim=True)  # a frame with no keys attends to its clamped window (output gated)
        keys = tokens[:, frame.clamp(0, f - 1)]  # [B, F, 2r+1, rows, dim]
        allowed = ok[:, :, None].expand(f, 2 * r + 1, rows).reshape(f, -1)
        return keys.reshape(b, f, -1, dim), allowed

    def after_block(self, index: int, x: Tensor, tokens: Tensor, active: Tensor | None) -> Tensor:
        if index not in self.cfg.blocks:
            return x
        b, f = tokens.shape[:2]
        if x.shape[1] % f:
            raise InputError(f"{self.signal} cross-attention adapter: {x.shape[1]} tokens do not split into "
                             f"{f} frames")
        x4 = x.view(b, f, x.shape[1] // f, x.shape[2])  # [B, F, S, dim]
        keys, allowed = self._neighbours(tokens, active)
        update = self.layers[self.cfg.blocks.index(index)](x4, keys.to(x.dtype), allowed)  # [B, F, S, dim]
        if active is not None:
            update = torch.where(active.to(x.device)[None, :, None, None], update, 0.0)
        return (x4 + update).view_as(x)


def _cross_attention_from_saved(data, dit_cfg) -> CrossAttentionAdapter:
    return CrossAttentionAdapter(CrossAttentionConfig(**{**data, "blocks": tuple(data["blocks"])}))


def _cross_attention_from_shapes(shapes, dit_cfg) -> dict:
    raise InputError("cross-attention adapters are only stored in Knot Forcing model files, which carry their "
                     "config; no foreign checkpoint format holds them")


register_adapter(AdapterSpec("cross_attention", _cross_attention_from_saved, _cross_attention_from_shapes,
                             lambda module: {**asdict(module.cfg), "blocks": list(module.cfg.blocks)}), replace=True)
