"""A cache-free reference for the stream's memory: every forward is recomputed from stored inputs.

Each predict/commit builds one full sequence holding every frame the forward depends on,
transitively (the reference or sink copies at the positions they had, the committed chunks
in the window, their own contexts...), with absolute positions and an explicit attention
mask, and runs the DiT once over it. The visibility rules are restated here from the method
(window = committed frames in [max(i - L, sink), i); the anchor at n (the engine's running-ahead
index, tested on its own in test_stream.py), or the sink: just before the window (LongLive
"infinity", Rolling Forcing's denoise pass) or at its absolute frames 0..S-1 (LongLive's default
model, as its causal_model.py ropes cached keys at absolute indices)), independently of
StreamKV's layout, its sliding window and rotate-at-read. Rolling and AvatarForcing loops have
their own whole-loop reference (reference_rolling.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from knot_core.driving import DrivingTokens


@dataclass
class Segment:
    x_in: Tensor  # (B, C, F, h, w) model input as fed
    t: Tensor  # (B, F)
    frames: list[int]  # absolute latent index of each frame (the reference: [0])
    context: list[tuple[int, int, list[int]]]  # (segment id, position delta, visible frames)
    driving: DrivingTokens | None = None  # None: no signal (the reference frame)


class ReferenceMemory:
    REF = 0  # segment id of the reference frame

    def __init__(self, model, cfg, text_kv):
        self.model, self.cfg, self.text_kv = model, cfg, text_kv
        self.segments: dict[int, Segment] = {}
        self.next_id = 1

    # the chunk loop's interface -------------------------------------------------------
    def anchor_reference(self, x_in: Tensor, t: Tensor, driving=None) -> None:
        self.segments[self.REF] = Segment(x_in, t, [0], [], driving)

    def predict(self, x_in, t, first_frame, visible, driving):
        query = Segment(x_in, t, list(range(first_frame, first_frame + x_in.shape[2])),
                        self._rule(first_frame, visible.anchor_position), driving)
        return self.run(query)

    def commit(self, x_in, t, first_frame, visible, driving):
        frames = list(range(first_frame, first_frame + x_in.shape[2]))
        self.segments[self.next_id] = Segment(x_in, t, frames, self._rule(first_frame, visible.anchor_position),
                                              driving)
        self.next_id += 1

    # the rules --------------------------------------------------------------------------
    def _committed_frames(self):
        for sid, seg in self.segments.items():
            if sid != self.REF:
                for f in seg.frames:
                    yield sid, f

    def _rule(self, i: int, ref_position: int | None) -> list[tuple[int, int, list[int]]]:
        """(segment, position delta, frames seen) for a forward at i; delta = where the frames sit - where
        they were made. ref_position: the knot reference's index n (the engine's running-ahead rule)."""
        cfg, ctx = self.cfg, []
        sink = 0 if cfg.uses_reference_anchor else cfg.sink_len
        lo = max(i - cfg.window_len, sink)
        if cfg.uses_reference_anchor and ref_position is not None:
            ctx.append((self.REF, ref_position, [0]))
        elif sink:
            shift = 0 if cfg.sink_positions == "absolute" else lo - sink  # sink frames 0..S-1 sit at shift..
            by_seg: dict[int, list[int]] = {}
            for sid, f in self._committed_frames():
                if f < sink:
                    by_seg.setdefault(sid, []).append(f)
            ctx += [(sid, shift, fs) for sid, fs in by_seg.items()]
        by_seg = {}
        for sid, f in self._committed_frames():
            if lo <= f < i:
                by_seg.setdefault(sid, []).append(f)
        ctx += [(sid, 0, fs) for sid, fs in by_seg.items()]
        return ctx

    # one full forward -----------------------------------------------------------------------
    def run(self, query: Segment) -> Tensor:
        """One full forward of `query` over the stored segments it depends on, transitively."""
        nodes: dict[tuple[int, int], int] = {}  # (segment id, delta) -> node index
        order: list[tuple[Segment, int]] = []
        edges: list[list[tuple[int, list[int]]]] = []

        def visit(seg: Segment, key, delta: int) -> int:
            if key is not None and key in nodes:
                return nodes[key]
            idx = len(order)
            if key is not None:
                nodes[key] = idx
            order.append((seg, delta))
            edges.append([])
            for sid, d, frames in seg.context:
                edges[idx].append((visit(self.segments[sid], (sid, delta + d), delta + d), frames))
            return idx

        q = visit(query, None, 0)
        s = self.model.cfg.tokens_per_frame(*query.x_in.shape[3:])
        starts, pos, total = [], [], 0
        for seg, delta in order:
            starts.append(total)
            total += len(seg.frames)
            pos += [f + delta for f in seg.frames]
        allowed = torch.zeros(total, total, dtype=torch.bool)  # frame level
        for idx, (seg, _) in enumerate(order):
            own = slice(starts[idx], starts[idx] + len(seg.frames))
            allowed[own, own] = True
            for target, frames in edges[idx]:
                tseg = order[target][0]
                for f in frames:
                    col = starts[target] + tseg.frames.index(f)
                    allowed[own, col] = True
        mask = allowed.repeat_interleave(s, 0).repeat_interleave(s, 1)
        x = torch.cat([seg.x_in for seg, _ in order], dim=2)
        t = torch.cat([seg.t for seg, _ in order], dim=1)
        out = self.model(x, t, frame_positions=torch.tensor(pos, dtype=torch.float64), text_kv=self.text_kv,
                         attn_mask=mask.to(x.device), driving=self._driving([seg for seg, _ in order]))
        return out[:, :, starts[q]:starts[q] + len(query.frames)]

    @staticmethod
    def _driving(segments: list[Segment]) -> DrivingTokens | None:
        """Per-frame tokens of the whole sequence; frames without a signal are inactive."""
        sample = next((s.driving for s in segments if s.driving is not None), None)
        if sample is None:
            return None
        tokens, active = {}, []
        for name, ref in sample.tokens.items():
            parts = []
            for seg in segments:
                n = len(seg.frames)
                if seg.driving is None:
                    parts.append(ref.new_zeros(ref.shape[0], n, *ref.shape[2:]))
                else:
                    parts.append(seg.driving.tokens[name])
            tokens[name] = torch.cat(parts, dim=1)
        for seg in segments:
            active += [seg.driving is not None] * len(seg.frames)
        return DrivingTokens(tokens, torch.tensor(active))
