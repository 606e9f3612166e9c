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
    """What one chunk's forwards attend to besides themselves: the filled anchor and the window,
    rotated to the chunk's positions (relative to `base`, its first frame) when a layer first
    reads them. All forwards of the chunk share it; `committing` marks the commit pass.
    """

    def __init__(self, kv: StreamKV, anchor_position: int | None, base: int,
                 rope: Callable[[tuple[int, ...]], RopeTable], commit_frames: list[int] | None = None):
        """rope(positions) -> the RopeTable of frames at those positions (relative to base)."""
        self.kv, self.commit_frames = kv, commit_frames
        anchor = ()
        if kv.anchor_filled:
            assert anchor_position is not None, "a filled anchor needs its position"
            anchor = tuple(range(anchor_position - base, anchor_position - base + kv.anchor_filled))
        self.context_rope = rope(anchor + tuple(f - base for f in kv.window_frames))
        self.context_tokens = self.context_rope.num_tokens
        self.filled_layers = [False] * kv.num_layers  # shared with `committing` views: same context

    def committing(self, frames: list[int]) -> CacheView:
        """The same context, for the pass whose own K/V become these frames."""
        view = copy.copy(self)
        view.commit_frames = frames
        return view

    def write(self, layer: int, k: Tensor, v: Tensor) -> None:
        """A commit pass keeps its frames' un-rotated keys (values go in by `keys_values`)."""
        if self.commit_frames is not None:
            n = self.context_tokens
            self.kv.k[layer, :, n:n + k.shape[1]] = k

    def keys_values(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """k (rotated), v: the forward's own (B, S, heads, d) -> K, V of [context | own]."""
        kv, n, s = self.kv, self.context_tokens, k.shape[1]
        if n + s > kv.k.shape[2]:
            raise ValueError(f"a forward of {s} tokens after {n} context tokens overflows the K/V buffers "
                             f"({kv.k.shape[2]} tokens): size them for the largest forward")
        if not self.filled_layers[layer]:
            self.context_rope.rotate(kv.k[layer, :, :n], out=kv.k_rot[layer, :, :n])
            self.filled_layers[layer] = True
        kv.k_rot[layer, :, n:n + s] = k
        kv.v[layer, :, n:n + s] = v
        return kv.k_rot[layer, :, :n + s], kv.v[layer, :, :n + s]

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
