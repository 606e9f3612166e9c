"""K/V caches: the sliding window ring buffer and the anchor (reference frame or frame sink).

Keys are stored un-rotated; RoPE is applied when a chunk reads them, at positions
relative to the chunk being generated. So the reference can be re-indexed ("running
ahead") without recomputation, and positions stay bounded however long the stream runs.
Both caches hold every layer in one preallocated tensor (layers, B, tokens, heads, d).

A chunk's denoising steps all see the same context, so `CacheView` rotates and gathers it
once per chunk into a `ChunkWorkspace`: one contiguous [context | own] K/V per layer, into
which each forward only writes its own K/V. Attention then reads a plain slice: no per-step
rotation, concatenation or gather, and fixed addresses (what CUDA graphs need).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor

from .rope import RopeTable


class KVCache:
    """Ring buffer of the K/V of the last `window_len` committed latent frames, all layers.

    Capacity is window_len + spare frames, so an append never overwrites a frame that is
    still visible while the appending forward runs, and `rollback` of up to `spare` frames
    restores the previous window exactly. Cursors are Python ints; nothing is reallocated.
    """

    def __init__(self, *, num_layers: int, window_len: int, spare: int, tokens_per_frame: int, batch: int,
                 heads: int, head_dim: int, dtype: torch.dtype, device: torch.device | str):
        self.window_len, self.spare = window_len, spare
        self.capacity = window_len + spare
        self.tokens_per_frame = tokens_per_frame
        shape = (num_layers, batch, self.capacity * tokens_per_frame, heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.slot_frame = [-1] * self.capacity  # absolute latent index held by each slot
        self.cursor = 0  # next slot to write
        self.valid = 0  # slots before the cursor (going back, cyclically) that hold frames

    def visible_slots(self, min_frame: int = 0) -> list[int]:
        """Slots of the newest `window_len` frames with index >= min_frame, oldest first."""
        newest_first = [(self.cursor - 1 - j) % self.capacity for j in range(self.valid)]
        kept = [s for s in newest_first if self.slot_frame[s] >= min_frame][: self.window_len]
        return kept[::-1]

    def reserve(self, frames: list[int]) -> list[int]:
        """Slots the next append of these frames will occupy (not visible until `append`)."""
        if len(frames) > self.spare:
            raise ValueError(f"appending {len(frames)} frames at once needs spare >= {len(frames)}, got {self.spare}")
        return [(self.cursor + j) % self.capacity for j in range(len(frames))]

    def write(self, layer: int, slots: list[int], k: Tensor, v: Tensor) -> None:
        """k, v: (B, len(slots)*S, heads, d) for frames in slot order."""
        s = self.tokens_per_frame
        for j, slot in enumerate(slots):
            self.k[layer, :, slot * s:(slot + 1) * s] = k[:, j * s:(j + 1) * s]
            self.v[layer, :, slot * s:(slot + 1) * s] = v[:, j * s:(j + 1) * s]

    def append(self, frames: list[int]) -> None:
        """Make the frames written to the reserved slots visible."""
        for slot, frame in zip(self.reserve(frames), frames, strict=True):
            self.slot_frame[slot] = frame
        self.cursor = (self.cursor + len(frames)) % self.capacity
        self.valid = min(self.valid + len(frames), self.capacity)

    def rollback(self, n_frames: int) -> None:
        """Forget the newest n_frames; the window before them comes back exactly."""
        if not 0 <= n_frames <= min(self.valid, self.spare):
            raise ValueError(f"rollback({n_frames}): can undo at most {min(self.valid, self.spare)} frames")
        self.cursor = (self.cursor - n_frames) % self.capacity
        self.valid -= n_frames

    def gather(self, layer: int, slots: list[int]) -> tuple[Tensor, Tensor]:
        """K (un-rotated) and V of the given slots, in that order: (B, len*S, heads, d)."""
        s = self.tokens_per_frame
        contiguous = all(b == a + 1 for a, b in zip(slots, slots[1:], strict=False))
        if contiguous and slots:
            lo, hi = slots[0] * s, (slots[-1] + 1) * s
            return self.k[layer, :, lo:hi], self.v[layer, :, lo:hi]
        idx = torch.cat([torch.arange(slot * s, (slot + 1) * s) for slot in slots]).to(self.k.device)
        return self.k[layer].index_select(1, idx), self.v[layer].index_select(1, idx)


class AnchorCache:
    """K (un-rotated) and V of anchor frames: the encoded reference, or a frame sink."""

    def __init__(self, *, num_layers: int, frames: int, tokens_per_frame: int, batch: int, heads: int,
                 head_dim: int, dtype: torch.dtype, device: torch.device | str):
        shape = (num_layers, batch, frames * tokens_per_frame, heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.frames = frames
        self.tokens_per_frame = tokens_per_frame
        self.filled = 0  # frames written so far

    def write(self, layer: int, first: int, k: Tensor, v: Tensor) -> None:
        s = self.tokens_per_frame
        n = min(k.shape[1] // s, self.frames - first)
        self.k[layer, :, first * s:(first + n) * s] = k[:, : n * s]
        self.v[layer, :, first * s:(first + n) * s] = v[:, : n * s]

    def mark_filled(self, frames: int) -> None:
        self.filled = min(self.frames, max(self.filled, frames))


class ChunkWorkspace:
    """Contiguous K (rotated) and V of [anchor | visible window | own frames] for every layer.

    Sized once per stream for the largest forward; the context part is refilled once per
    chunk, the own part by every forward. Costs (anchor + window + forward frames) of K/V
    on top of the caches, and saves a rotation and two concatenations per layer per step.
    """

    def __init__(self, *, num_layers: int, frames: int, tokens_per_frame: int, batch: int, heads: int,
                 head_dim: int, dtype: torch.dtype, device: torch.device | str):
        shape = (num_layers, batch, frames * tokens_per_frame, heads, head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)

    @property
    def tokens(self) -> int:
        return self.k.shape[2]


class CacheView:
    """What one chunk's forwards attend to besides themselves: anchor + visible window,
    rotated to the chunk's positions into the workspace when a layer first reads it.

    positions are relative to `base` (the first frame of the forward), so they stay bounded.
    If `commit_frames` is set, the forward's own K/V are written to the window (and to the
    anchor for frames below `sink_frames`).
    """

    def __init__(self, window: KVCache, anchor: AnchorCache | None, anchor_position: int | None, base: int,
                 rope: Callable[[tuple[int, ...]], RopeTable], workspace: ChunkWorkspace, sink_frames: int = 0,
                 commit_frames: list[int] | None = None):
        """rope(positions) -> the RopeTable of frames at those positions (relative to base)."""
        self.window, self.anchor, self.commit_frames = window, anchor, commit_frames
        self.workspace, self.sink_frames = workspace, sink_frames
        self.slots = window.visible_slots(min_frame=sink_frames)
        self.window_rope = rope(tuple(window.slot_frame[s] - base for s in self.slots))
        self.anchor_rope = None
        if anchor is not None and anchor.filled and anchor_position is not None:
            self.anchor_rope = rope(tuple(range(anchor_position - base, anchor_position - base + anchor.filled)))
        self.anchor_tokens = self.anchor_rope.num_tokens if self.anchor_rope is not None else 0
        self.context_tokens = self.anchor_tokens + self.window_rope.num_tokens
        self.filled_layers = [False] * workspace.k.shape[0]  # shared with `committing` views: same context
        self.write_slots = window.reserve(commit_frames) if commit_frames else None

    def committing(self, frames: list[int]) -> CacheView:
        """The same context, with the forward's own K/V written for these frames."""
        view = copy.copy(self)
        view.commit_frames, view.write_slots = frames, self.window.reserve(frames)
        return view

    def keys_values(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """k (rotated), v: the forward's own (B, S, heads, d) -> K, V of [context | own]."""
        ws, n, s = self.workspace, self.context_tokens, k.shape[1]
        if n + s > ws.tokens:
            raise ValueError(f"a forward of {s} tokens after {n} context tokens overflows the workspace "
                             f"({ws.tokens} tokens): size it for the largest forward")
        if not self.filled_layers[layer]:
            self._fill_context(layer)
            self.filled_layers[layer] = True
        ws.k[layer, :, n:n + s] = k
        ws.v[layer, :, n:n + s] = v
        return ws.k[layer, :, :n + s], ws.v[layer, :, :n + s]

    def _fill_context(self, layer: int) -> None:
        ws, a, n = self.workspace, self.anchor_tokens, self.context_tokens
        if a:
            self.anchor_rope.rotate(self.anchor.k[layer, :, :a], out=ws.k[layer, :, :a])
            ws.v[layer, :, :a] = self.anchor.v[layer, :, :a]
        if self.slots:
            k, v = self.window.gather(layer, self.slots)
            self.window_rope.rotate(k, out=ws.k[layer, :, a:n])
            ws.v[layer, :, a:n] = v

    def write(self, layer: int, k: Tensor, v: Tensor) -> None:
        if self.commit_frames is None:
            return
        n = len(self.commit_frames) * self.window.tokens_per_frame
        self.window.write(layer, self.write_slots, k[:, :n], v[:, :n])
        if self.anchor is not None and self.commit_frames[0] < self.sink_frames:
            self.anchor.write(layer, self.commit_frames[0], k[:, :n], v[:, :n])

    def finish_commit(self) -> None:
        self.window.append(self.commit_frames)
        if self.anchor is not None and self.commit_frames[0] < self.sink_frames:
            self.anchor.mark_filled(self.commit_frames[-1] + 1)


class AnchorWriter:
    """Context of the reference pass: attends to nothing else, stores its K/V as the anchor."""

    def __init__(self, anchor: AnchorCache):
        self.anchor = anchor

    def keys_values(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return k, v

    def write(self, layer: int, k: Tensor, v: Tensor) -> None:
        self.anchor.write(layer, 0, k, v)
