"""The stream's K/V: the anchor (reference frame or frame sink), the sliding window, and the
frames of the forward running now, in one layout per layer.

    [ anchor (A frames) | window (up to L committed frames, oldest first) | own frames ]

Keys are stored un-rotated (`k`); RoPE is applied once per chunk, at positions relative to the
chunk being generated, into `k_rot` (same layout). So the reference can be re-indexed
("running ahead") without recomputation, positions stay bounded however long the stream runs,
and every denoising step of a chunk reads one contiguous slice: no per-step rotation,
concatenation or gather, and fixed addresses (what CUDA graphs need). A commit pass writes its
frames where they belong next: sink frames land on their anchor slot, window frames right
after the window; when the window overflows it slides left by the surplus (one copy per chunk).
Values need no rotation, so `v` is both the store and what attention reads.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor

from ..rope import RopeTable


class StreamKV:
    """Every layer's K (un-rotated and rotated) and V, preallocated once: (layers, B, tokens, heads, d).

    Cursors are Python ints: `anchor_filled` anchor frames, then `window_frames` (absolute
    latent indices of the window, oldest first). Nothing is reallocated.
    """

    def __init__(self, *, num_layers: int, anchor_frames: int, window_len: int, forward_frames: int,
                 tokens_per_frame: int, batch: int, heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device | str):
        self.anchor_frames, self.window_len, self.forward_frames = anchor_frames, window_len, forward_frames
        self.tokens_per_frame = tokens_per_frame
        shape = (num_layers, batch, (anchor_frames + window_len + forward_frames) * tokens_per_frame, heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.k_rot = torch.zeros(shape, dtype=dtype, device=device)
        self.anchor_filled = 0
        self.window_frames: list[int] = []
        self._scratch_v: Tensor | None = None

    def scratch_v(self) -> Tensor:
        """Values gathered for a view that sees part of the store (allocated on first use, then reused)."""
        if self._scratch_v is None:
            self._scratch_v = torch.zeros_like(self.v)
        return self._scratch_v

    @property
    def num_layers(self) -> int:
        return self.k.shape[0]

    @property
    def context_frames(self) -> int:
        """Frames before the own frames: the filled anchor, then the window."""
        return self.anchor_filled + len(self.window_frames)

    def write_anchor(self, layer: int, k: Tensor, v: Tensor) -> None:
        """The reference pass: its un-rotated K and V (B, S, heads, d) become anchor frame 0."""
        s = k.shape[1]
        self.k[layer, :, :s] = k
        self.v[layer, :, :s] = v

    def commit(self, frames: list[int], sink_len: int) -> None:
        """The last forward wrote these frames' K/V after the context: make them anchor / window."""
        sink = sum(f < sink_len for f in frames)
        if sink:
            assert not self.window_frames and frames[0] == self.anchor_filled, "sink frames come first, in order"
            self.anchor_filled += sink
        rest = frames[sink:]
        if rest:
            assert self.anchor_filled == self.anchor_frames, "window frames follow a full anchor"
            self.window_frames += rest
        surplus = len(self.window_frames) - self.window_len
        if surplus > 0:
            self._slide(surplus)
            self.window_frames = self.window_frames[surplus:]

    def _slide(self, surplus: int) -> None:
        # frame j <- frame j + surplus, ascending: each source is read before anything overwrites it
        s, base = self.tokens_per_frame, self.anchor_frames
        for j in range(self.window_len):
            dst, src = (base + j) * s, (base + j + surplus) * s
            self.k[:, :, dst:dst + s] = self.k[:, :, src:src + s]
            self.v[:, :, dst:dst + s] = self.v[:, :, src:src + s]

    def state_tensors(self) -> dict[str, Tensor]:
        n = self.context_frames * self.tokens_per_frame
        return {"kv.k": self.k[:, :, :n], "kv.v": self.v[:, :, :n],
                "kv.cursors": torch.tensor([self.anchor_filled, *self.window_frames])}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        cursors = [int(x) for x in tensors["kv.cursors"]]
        self.anchor_filled, self.window_frames = cursors[0], cursors[1:]
        n = self.context_frames * self.tokens_per_frame
        self.k[:, :, :n].copy_(tensors["kv.k"])
        self.v[:, :, :n].copy_(tensors["kv.v"])


class CacheView:
    """What one forward attends to besides itself: the visible anchor and window frames, rotated
    to their positions (relative to `base`, the forward's first frame) when a layer first reads
    them. All denoising forwards of a chunk share one view; `committing` marks a commit pass.

    By default everything stored is visible and the context is the store's own prefix. A view
    can see less (a tail of the window, part or none of the anchor: Rolling Forcing's passes);
    if what it sees is still one run of slots ending where the store ends, it reads the store in
    place from that run, otherwise it gathers the visible values into `StreamKV.scratch_v`.
    """

    def __init__(self, kv: StreamKV, anchor_position: int | None, base: int,
                 rope: Callable[[tuple[int, ...]], RopeTable], commit_frames: list[int] | None = None, *,
                 window_from: int | None = None, anchor_from: int = 0):
        """rope(positions) -> the RopeTable of frames at those positions (relative to base).
        anchor_position: where anchor frame `anchor_from` sits (None: the anchor is not seen);
        window_from: the oldest window frame seen (None: all)."""
        self.kv, self.commit_frames = kv, commit_frames
        anchor = range(anchor_from, kv.anchor_filled) if anchor_position is not None else range(0)
        window = [(j, f) for j, f in enumerate(kv.window_frames) if window_from is None or f >= window_from]
        positions = tuple(anchor_position - anchor_from + a - base for a in anchor) + tuple(f - base for _, f in window)
        self.slots = [*anchor, *(kv.anchor_frames + j for j, _ in window)]  # store frame slots seen, in order
        self.end = kv.anchor_filled + len(kv.window_frames)  # store slot where a commit pass's frames go
        first = self.slots[0] if self.slots else self.end
        self.in_place = self.slots == list(range(first, self.end))
        self.offset = first * kv.tokens_per_frame if self.in_place else 0  # where the context starts in k_rot / v
        self.values = kv.v if self.in_place else kv.scratch_v()
        s = kv.tokens_per_frame  # token rows of the seen slots, for gathering (one index for every layer)
        self.rows = None if self.in_place else torch.tensor([j * s + r for j in self.slots for r in range(s)],
                                                            device=kv.k.device)
        self.context_rope = rope(positions)
        self.context_tokens = self.context_rope.num_tokens
        self.filled_layers = [False] * kv.num_layers  # shared with `committing` views: same context

    def committing(self, frames: list[int]) -> CacheView:
        """The same context, for the pass whose own K/V become these frames."""
        view = copy.copy(self)
        view.commit_frames = frames
        return view

    def write(self, layer: int, k: Tensor, v: Tensor) -> None:
        """A commit pass keeps its frames' un-rotated keys where the store ends (and its values, when
        the view reads gathered values; in place, `keys_values` puts them there)."""
        if self.commit_frames is not None:
            at = self.end * self.kv.tokens_per_frame
            self.kv.k[layer, :, at:at + k.shape[1]] = k
            if not self.in_place:
                self.kv.v[layer, :, at:at + v.shape[1]] = v

    def keys_values(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """k (rotated), v: the forward's own (B, S, heads, d) -> K, V of [context | own]."""
        kv, o, n, s = self.kv, self.offset, self.context_tokens, k.shape[1]
        if o + n + s > kv.k.shape[2]:
            raise ValueError(f"a forward of {s} tokens after {n} context tokens overflows the K/V buffers "
                             f"({kv.k.shape[2]} tokens): size them for the largest forward")
        if not self.filled_layers[layer]:
            self._fill(layer)
            self.filled_layers[layer] = True
        kv.k_rot[layer, :, o + n:o + n + s] = k
        self.values[layer, :, o + n:o + n + s] = v
        return kv.k_rot[layer, :, o:o + n + s], self.values[layer, :, o:o + n + s]

    def _fill(self, layer: int) -> None:
        kv, o, n = self.kv, self.offset, self.context_tokens
        if self.in_place:
            self.context_rope.rotate(kv.k[layer, :, o:o + n], out=kv.k_rot[layer, :, o:o + n])
            return
        self.context_rope.rotate(kv.k[layer].index_select(1, self.rows), out=kv.k_rot[layer, :, :n])
        self.values[layer, :, :n] = kv.v[layer].index_select(1, self.rows)

    def finish_commit(self, sink_len: int) -> None:
        self.kv.commit(self.commit_frames, sink_len)


class AnchorWriter:
    """Context of the reference pass: attends to nothing else, stores its K/V as the anchor."""

    def __init__(self, kv: StreamKV):
        self.kv = kv

    def keys_values(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return k, v

    def write(self, layer: int, k: Tensor, v: Tensor) -> None:
        self.kv.write_anchor(layer, k, v)
