"""The stream's memory of the past, held as K/V caches: a reference/sink anchor and a window.

`CachedMemory` is what the chunk loop talks to: `anchor_reference` (clean pass of the
reference frame), `predict` (one denoising forward of a chunk) and `commit` (the clean
pass that writes a chunk's K/V). Everything it allocates is sized once from the configs,
so memory per chunk is flat for any stream length.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from ..config import StreamConfig
from ..dit import KnotDiT
from ..driving import DrivingTokens
from ..rope import RopeTable
from .kv_store import AnchorWriter, CacheView, StreamKV
from .visibility import Visible

ROPE_TABLES = 16  # RoPE tables kept per stream (a steady knot stream uses about 5)


class Memory(Protocol):
    """What the chunk loop needs of the stream's past: `CachedMemory`, or a test's cache-free reference that
    recomputes the same attention from every frame (tests/reference_memory.py)."""

    model: KnotDiT

    def anchor_reference(self, x_in: Tensor, t: Tensor, driving: DrivingTokens | None = None) -> None:
        """Clean pass of the reference frame alone: its K/V become the anchor (with latent 0's driving
        where the reference is the video's first latent, as AvatarForcing trains it)."""
        ...

    def predict(self, x_in: Tensor, t: Tensor, first_frame: int, visible: Visible,
                driving: DrivingTokens | None) -> Tensor:
        """One denoising forward of a chunk starting at latent `first_frame`: v (B, 16, F, h, w)."""
        ...

    def commit(self, x_in: Tensor, t: Tensor, first_frame: int, visible: Visible,
               driving: DrivingTokens | None) -> None:
        """The clean pass of committed frames: their K/V join the window."""
        ...

    def state_tensors(self) -> dict[str, Tensor]:
        """Everything the memory holds, as flat named tensors (a stream's saved state)."""
        ...

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Restore what `state_tensors` gave, into a memory built for the same model and settings."""
        ...


class CachedMemory:
    def __init__(self, model: KnotDiT, cfg: StreamConfig, text_kv: list[tuple[Tensor, Tensor]],
                 latent_hw: tuple[int, int], batch: int = 1):
        dcfg, p = model.cfg, model.patch_embedding.weight
        self.model, self.cfg, self.text_kv = model, cfg, text_kv
        self.rows, self.cols = dcfg.grid(*latent_hw)
        dims = dict(num_layers=dcfg.num_layers, tokens_per_frame=self.rows * self.cols, batch=batch,
                    heads=dcfg.num_heads, head_dim=dcfg.head_dim, dtype=p.dtype, device=p.device)
        self.kv = StreamKV(anchor_frames=cfg.anchor_frames, window_len=cfg.stored_window_len,
                           forward_frames=cfg.max_forward_frames, **dims)
        self.sink_len = 0 if cfg.uses_reference_anchor else cfg.sink_len
        self._view_key: tuple[int, Visible] | None = None
        self._view: CacheView | None = None
        # positions are chunk-relative, so a steady stream needs the same few tables every chunk
        self._ropes: dict[tuple[int, ...], RopeTable] = {}

    def anchor_reference(self, x_in: Tensor, t: Tensor, driving: DrivingTokens | None = None) -> None:
        """Clean pass of the reference frame alone; its un-rotated K/V become the anchor."""
        assert self.kv.anchor_frames == 1 and x_in.shape[2] == 1
        zero = torch.zeros(1, dtype=torch.float64)
        self.model(x_in, t, frame_positions=zero, text_kv=self.text_kv, context=AnchorWriter(self.kv),
                   driving=driving)
        self.kv.anchor_filled = 1

    def predict(self, x_in: Tensor, t: Tensor, first_frame: int, visible: Visible,
                driving: DrivingTokens | None) -> Tensor:
        view = self._context(first_frame, visible)
        return self._forward(x_in, t, view, driving)

    def commit(self, x_in: Tensor, t: Tensor, first_frame: int, visible: Visible,
               driving: DrivingTokens | None) -> None:
        frames = list(range(first_frame, first_frame + x_in.shape[2]))
        view = self._context(first_frame, visible).committing(frames)
        self._forward(x_in, t, view, driving)
        view.finish_commit(self.sink_len)
        self._view_key = self._view = None  # the window changed

    def _forward(self, x_in: Tensor, t: Tensor, view: CacheView, driving: DrivingTokens | None) -> Tensor:
        own = self._rope(tuple(range(x_in.shape[2])))  # relative to first_frame
        return self.model(x_in, t, frame_positions=own, text_kv=self.text_kv, context=view, driving=driving)

    def _rope(self, positions: tuple[int, ...]) -> RopeTable:
        table = self._ropes.get(positions)
        if table is None:
            if len(self._ropes) >= ROPE_TABLES:  # warm-up and odd settings: stay bounded
                self._ropes.clear()
            table = RopeTable(self.model.cfg, torch.tensor(positions, dtype=torch.float64), self.rows, self.cols,
                              device=self.model.patch_embedding.weight.device)
            self._ropes[positions] = table
        return table

    def _context(self, first_frame: int, visible: Visible) -> CacheView:
        # one view (and one set of RoPE tables) per chunk, shared by all its denoising steps
        key = (first_frame, visible)
        if self._view_key != key:
            self._view = CacheView(self.kv, visible.anchor_position, first_frame, self._rope,
                                   window_from=visible.window_from, anchor_from=visible.anchor_from)
            self._view_key = key
        return self._view

    def state_tensors(self) -> dict[str, Tensor]:
        return self.kv.state_tensors()

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.kv.load_state_tensors(tensors)
        self._view_key = self._view = None
