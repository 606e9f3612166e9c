"""Cache-free whole-loop references of Rolling Forcing and AvatarForcing, restated from the authors' code.

Read (not copied): TencentARC/RollingForcing @ a1477d0 `pipeline/rolling_forcing_inference.py`
(`inference_rolling_forcing`) and `wan/modules/causal_model.py` (`CausalWanSelfAttention.forward`, K/V
cache branch); cuiliyuan121/AvatarForcing @ 63b73e6 `pipeline/avatar_forcing_inference.py`
(`inference_avatar_forcing`, `_prefill_cache_for_rolling`, `_initialize_kv_cache`),
`wan/modules/causal_model.py`, `utils/inject.py`, `utils/scheduler.py`.

Schedule (both): FlowMatchScheduler(shift, sigma_min=0, extra_one_step=True).set_timesteps(1000):
sigmas = linspace(1, 0, 1001)[:-1] in float32 (torch's default dtype), shifted in float32, timesteps =
1000 * sigmas in float32; a step s goes to the model as timesteps[1000 - s]; x0 = x_t - sigma * v in
float64 with sigma the float32 table entry; re-noise (1 - sigma') * x0 + sigma' * eps in float32.

Loop (both): blocks of c latent frames; block b enters window b as fresh noise at steps[0]; window w
holds blocks max(0, w - W + 1) .. w (W = len(steps)) at per-block levels, oldest at the last step;
one forward per window; every block's x0 is re-noised to its next level with fresh noise, except the
oldest at its last level, which is final; then one clean pass (t = 0) of that final block writes its
K/V. The authors also run the clean pass after the start-up windows, on block 0 before it is final:
the next window's forward overwrites those slots before any forward reads them (its working cache is
empty while its first frame is the video's first), so they are left out here. A finite clip's last
W - 1 blocks are finished by the authors in shrinking tail windows, which an endless stream never
has: compared are blocks whose final window is full. Noise draws, one source, per window: the new
block's noise, then one re-noise draw per non-final block, oldest first.

Who sees what (positions are latent indices; RoPE makes only their differences matter):
  Rolling Forcing (c = 3, sink = block 0 = frames 0..2, 21-frame attention budget):
    denoise, oldest block at i: [sink at lo-3 .. lo-1 | committed [lo, i) | own], lo = max(i - 3, 3);
      (working cache = cache[max(3, local_start - (21 - 15 - 3)) : local_start], sink re-roped at
      current_start_frame - working_frames - 3); i = 0: own frames only.
    clean pass of the block at i: [every frame in [i - 18, i), sink included, at its own index | own]
      (updating_cache reads cache[max(0, local_end - 21) : local_end] and ropes the sink at 0 while it is
      in that range; the 24-frame cache keeps sink + the newest 21 frames).
  AvatarForcing (c = 4; the reference latent is video latent 0; generated blocks start at latent 1):
    reference pass: itself only, t = 0, input [ref | ref | mask 0], audio of latent 0 (the zero row).
    denoise, oldest block at i: [ref at lo - 1 | committed [lo, i) | own], lo = max(i - 2, 1)
      (7-frame cache = sink + 2 retained + 4 written; the un-rotated sink is roped at
      current_start_frame - working_frames - 1).
    clean pass: [ref at 0 | committed [lo, i) | own] (updating_cache ropes the sink at start_frame 0).
    Model input of generated frames: [x | ref repeated | mask 1]; latent k's audio rows go with frame k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from knot_core.driving import encode_driving
from tests.reference_memory import ReferenceMemory, Segment


@dataclass(frozen=True)
class RollingPeer:
    chunk: int  # c
    steps: tuple[int, ...]
    denoise_window: int  # committed frames a denoising forward sees
    commit_window: int | None  # Rolling Forcing: a plain window over every frame; None: as denoise
    sink: int  # Rolling Forcing: block 0's frames; AvatarForcing: 0 (its anchor is the reference)
    reference: bool  # AvatarForcing: the reference latent is video latent 0
    shift: float = 5.0


ROLLING_FORCING = RollingPeer(chunk=3, steps=(1000, 800, 600, 400, 200), denoise_window=3, commit_window=18,
                              sink=3, reference=False)
AVATAR_FORCING = RollingPeer(chunk=4, steps=(1000, 800, 400, 200), denoise_window=2, commit_window=None, sink=0,
                             reference=True)


def peer_tables(shift: float) -> tuple[Tensor, Tensor]:
    """(sigmas, timesteps), float32, exactly as FlowMatchScheduler builds them."""
    sigmas = torch.linspace(1.0, 0.0, 1001)[:-1]
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    return sigmas, sigmas * 1000


class RollingReference:
    """The peer's loop, every forward recomputed from stored inputs (no cache)."""

    def __init__(self, model, peer: RollingPeer, text_kv, noise, *, reference: Tensor | None = None,
                 signals=(), latent_size=(8, 8)):
        self.model, self.peer, self.noise, self.signals = model, peer, noise, signals
        self.graph = ReferenceMemory(model, None, text_kv)  # holds the segments, runs masked full forwards
        self.reference, self.size = reference, latent_size
        self.sigmas, self.timesteps = peer_tables(peer.shift)
        self.block_segment: dict[int, int] = {}  # first frame of a committed block -> segment id

    # what each pass sees --------------------------------------------------------------------
    def _committed(self, lo: int, hi: int, delta: int = 0) -> list[tuple[int, int, list[int]]]:
        c, out = self.peer.chunk, []
        for first, sid in self.block_segment.items():
            frames = [f for f in range(first, first + c) if lo <= f < hi]
            if frames:
                out.append((sid, delta, frames))
        return out

    def denoise_context(self, i: int) -> list[tuple[int, int, list[int]]]:
        p = self.peer
        if p.reference:
            lo = max(i - p.denoise_window, 1)
            return [(ReferenceMemory.REF, lo - 1, [0])] + self._committed(lo, i)
        if i == 0:
            return []
        lo = max(i - p.denoise_window, p.sink)
        return self._committed(0, p.sink, delta=lo - p.sink) + self._committed(lo, i)

    def commit_context(self, i: int) -> list[tuple[int, int, list[int]]]:
        p = self.peer
        if p.reference:
            return [(ReferenceMemory.REF, 0, [0])] + self._committed(max(i - p.denoise_window, 1), i)
        return self._committed(max(i - p.commit_window, 0), i)

    # the loop ----------------------------------------------------------------------------------
    def _t(self, step: int) -> float:
        return float(self.timesteps[1000 - step]) if step else 0.0

    def _sigma(self, step: int) -> float:
        return float(self.sigmas[1000 - step])

    def _input(self, x: Tensor, ref_mask: float = 1.0) -> Tensor:
        if not self.peer.reference:
            return x
        b, _, f, h, w = x.shape
        ref = self.reference.expand(b, -1, f, -1, -1)
        return torch.cat([x, ref, torch.full((b, 1, f, h, w), ref_mask)], dim=1)

    def _driving(self, first: int, count: int):
        return encode_driving(self.model.driving, self.signals, first, count, "cpu")

    def _forward(self, x: Tensor, steps: list[int], first: int, context) -> Tensor:
        t = torch.tensor([[self._t(s) for s in steps for _ in range(self.peer.chunk)]], dtype=torch.float64)
        frames = list(range(first, first + x.shape[2]))
        return self.graph.run(Segment(self._input(x), t, frames, context, self._driving(first, len(frames))))

    @torch.no_grad()
    def run(self, blocks: int) -> list[Tensor]:
        """Final latents of blocks 0 .. blocks-1 (AvatarForcing: block 0 preceded by the reference latent)."""
        p, c, b = self.peer, self.peer.chunk, 1
        lead = 1 if p.reference else 0
        if p.reference:  # the reference pass: the anchor's K/V
            self.graph.segments[ReferenceMemory.REF] = Segment(
                self._input(self.reference, ref_mask=0.0), torch.zeros(1, 1, dtype=torch.float64), [0], [],
                self._driving(0, 1))
        flight: list[Tensor] = []  # in-flight blocks' noisy latents, oldest first
        levels: list[int] = []  # the step index each is at
        out: list[Tensor] = []
        while len(out) < blocks:
            flight.append(self.noise.draw((b, 16, c, *self.size)))  # the new block, at steps[0] (sigma 1)
            levels.append(0)
            i = lead + len(out) * c  # the oldest block in flight is the next to finish
            x = torch.cat(flight, dim=2)
            v = self._forward(x, [p.steps[lv] for lv in levels], i, self.denoise_context(i))
            sigma = torch.tensor([self._sigma(p.steps[lv]) for lv in levels for _ in range(c)], dtype=torch.float64)
            x0 = (x.double() - sigma[None, None, :, None, None] * v.double()).float()
            done = None
            for j in range(len(flight)):
                part = x0[:, :, j * c:(j + 1) * c]
                if levels[j] + 1 == len(p.steps):
                    done = part
                    continue
                levels[j] += 1
                s = torch.tensor(self._sigma(p.steps[levels[j]]), dtype=torch.float32)
                flight[j] = (1 - s) * part + s * self.noise.draw((b, 16, c, *self.size))
            if done is not None:
                del flight[0], levels[0]
                self._commit(done, i)
                out.append(torch.cat([self.reference, done], dim=2) if lead and not out else done)
        return out

    def _commit(self, latents: Tensor, i: int) -> None:
        """The clean pass (t = 0) of a final block: its K/V are what later forwards read."""
        c = self.peer.chunk
        sid = self.graph.next_id
        self.graph.segments[sid] = Segment(self._input(latents), torch.zeros(1, c, dtype=torch.float64),
                                           list(range(i, i + c)), self.commit_context(i), self._driving(i, c))
        self.graph.next_id += 1
        self.block_segment[i] = sid


# the authors' cache bookkeeping, replayed in frames ------------------------------------------------
@dataclass(frozen=True)
class CacheLayout:
    """Sizes in the authors' CausalWanSelfAttention, in latent frames (their code counts tokens)."""

    cache: int  # kv_cache_size: RF 24, AF 7
    budget: int  # max_attention_size: RF 21, AF 25
    sink: int  # frames kept at the cache start: RF block_length (3), AF sink_size (1)
    prefix: int  # frames written before the windows: AF's reference (1), RF none (0)


ROPE_FRAMES = 1024  # rows of the authors' RoPE table
RF_LAYOUT = CacheLayout(cache=24, budget=21, sink=3, prefix=0)
AF_LAYOUT = CacheLayout(cache=7, budget=25, sink=1, prefix=1)


def replay_cache(peer: RollingPeer, layout: CacheLayout, blocks: int):
    """For each block whose final window is full: (denoise sink position, denoise cached frames,
    commit sink position or None, commit cached frames), from the index arithmetic of the authors'
    K/V-cache branch (global/local end indices, roll-on-evict, working-cache extraction, sink re-rope)
    run over their window plan, up to where their 1024-row RoPE table ends. Positions and frames are
    latent indices; own frames are not listed."""
    c, w = peer.chunk, len(peer.steps)
    slots: list[int | None] = [None] * layout.cache
    ends = {"global": 0, "local": 0}

    def forward(start: int, frames: int, updating: bool):
        written = min(c, frames)
        end = start + written
        new = end - ends["global"]
        local_end = ends["local"] + end - ends["global"]
        if new > 0 and new + ends["local"] > layout.cache:  # evict: roll everything after the sink left
            evicted = new + ends["local"] - layout.cache
            kept = ends["local"] - evicted - layout.sink
            slots[layout.sink:layout.sink + kept] = slots[layout.sink + evicted:layout.sink + evicted + kept]
            local_end -= evicted
        local_start = local_end - written
        slots[local_start:local_end] = range(start, end)
        if new > 0:
            ends["global"], ends["local"] = end, local_end
        if local_start == 0:
            return None, []
        if updating:
            lo = max(0, local_end - layout.budget)
            return (0 if lo == 0 else None), [f for f in slots[max(lo, layout.sink):local_start]]
        lo = max(layout.sink, local_start - (layout.budget - frames - layout.sink))
        seen = slots[lo:local_start]
        return start - len(seen) - layout.sink, seen

    if layout.prefix:
        forward(0, layout.prefix, False)
    out = []
    for window in range(blocks + w - 1):
        first, last = max(0, window - w + 1), window
        start, frames = layout.prefix + first * c, (last - first + 1) * c
        if start + frames > ROPE_FRAMES:  # rope_params(1024, ...): causal_rope_apply cannot go past it
            break
        denoise = forward(start, frames, False)
        commit = forward(start, c, True)
        if window >= w - 1:  # the oldest block is final: keep what its last denoise and its clean pass saw
            out.append((*denoise, *commit))
    return out
