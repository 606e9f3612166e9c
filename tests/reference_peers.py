"""Cache-free references of two peers' own loops, written from their code, independent of our engine.

LiveTalk (GAIR-NLP/LiveTalk @ 53b2c22, scripts/inference_example.py `inference`, configs/causal_inference.yaml,
model/causal_wan_video_dit_omniavatar.py `CausalSelfAttention`) and Causal Forcing (thu-ml/Causal-Forcing
@ 1fc7bbc, pipeline/causal_inference.py, wan/modules/causal_model.py, configs/causal_forcing_dmd_*.yaml).
Both run the Self Forcing block loop; what each pass attends to is decided by `PeerKVCache`, a frame-level
transcription of their K/V cache index arithmetic (eviction included). The K/V themselves are never cached
here: every forward is one full DiT pass over the frames it depends on, transitively, each at its absolute
latent position (the peers store keys roped at `current_start // frame_seqlen` and never re-index them),
with an explicit frame-level attention mask.

Random draws: the peers draw each block's noise up front and one `randn_like` per re-noise; both loops here
take them from a `NoiseSource` in the order our engine asks (block noise, then each re-noise), so the two
runs see the same tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from knot_core.driving import DrivingTokens
from knot_core.engine.noise import NoiseSource

SHIFT = 5.0


def scheduler_table(steps: int) -> tuple[Tensor, Tensor]:
    """FlowMatchScheduler(shift=5, sigma_min=0, extra_one_step=True, num_inference_steps=steps), built in
    float32 (torch.linspace's default) as LiveTalk's is: (sigmas, timesteps)."""
    sigmas = torch.linspace(1.0, 0.0, steps + 1)[:-1]
    sigmas = SHIFT * sigmas / (1 + (SHIFT - 1) * sigmas)
    return sigmas, sigmas * 1000


def warped(step_list: tuple[int, ...]) -> Tensor:
    """Causal Forcing's warp_denoising_step: timesteps[1000 - s] of the 1000-step float32 scheduler table."""
    _, timesteps = scheduler_table(1000)
    table = torch.cat([timesteps, torch.zeros(1)])
    return table[1000 - torch.tensor(step_list)]  # float32


def sigma_of(t: Tensor, sigmas: Tensor, timesteps: Tensor) -> Tensor:
    """The peers' x0 conversion and add_noise: sigma of the nearest scheduler timestep (float64)."""
    return sigmas.double()[(timesteps.double() - t.double()).abs().argmin()]


class PeerKVCache:
    """Which frames a forward of frames [start, start+n) attends to, by the peers' cache arithmetic.

    CausalWanSelfAttention keeps `capacity` frames per layer, `sink` of them never evicted; a forward
    reaching past `global_end` with no room evicts the oldest non-sink frames (rolls left), writes its own
    frames at [local_end - n, local_end) and attends to the last `attend` frames up to local_end (its own
    included). LiveTalk: capacity = attend = 15 (local_attn_size 15), sink 9. Causal Forcing:
    local_attn_size -1, so capacity = attend = 21 frames (32760 tokens at 1560/frame) and no eviction at
    all: the peer is only defined while a clip fits; past it we slide (`overflow_slides`), our extension.
    """

    def __init__(self, capacity: int, sink: int, attend: int, evicts: bool, overflow_slides: bool = False):
        self.capacity, self.sink, self.attend = capacity, sink, attend
        self.evicts = evicts or overflow_slides
        self.slots: list[int | None] = [None] * capacity
        self.global_end = self.local_end = 0

    def forward(self, start: int, n: int) -> list[int]:
        end = start + n
        if self.evicts and end > self.global_end and n + self.local_end > self.capacity:
            evicted = n + self.local_end - self.capacity
            rolled = self.local_end - evicted - self.sink
            s = self.sink
            self.slots[s:s + rolled] = self.slots[s + evicted:s + evicted + rolled]
            local_end = self.local_end + end - self.global_end - evicted
        else:
            local_end = self.local_end + end - self.global_end
        if local_end > self.capacity:
            raise AssertionError(f"the peer's cache overflows at frame {end} (capacity {self.capacity} frames)")
        self.slots[local_end - n:local_end] = list(range(start, end))
        self.global_end, self.local_end = end, local_end
        seen = self.slots[max(0, local_end - self.attend):local_end]
        return [f for f in seen if f is not None and f < start]  # committed frames before the forward's own


@dataclass
class Pass:
    x_in: Tensor  # (B, C, F, h, w) model input
    t: Tensor  # (B, F) timesteps as given to the model (dtype included)
    frames: list[int]  # absolute latent indices
    visible: list[int]  # committed frames it attends to (absolute)
    tokens: Tensor | None = None  # (B, F, ...) driving tokens of its frames


class Recompute:
    """Every forward recomputed from the committed passes' stored inputs (no K/V kept)."""

    def __init__(self, model, text_kv, adapter: str | None = None):
        self.model, self.text_kv, self.adapter = model, text_kv, adapter
        self.commits: dict[int, Pass] = {}  # first frame -> the clean pass that wrote it
        self.owner: dict[int, int] = {}

    def commit(self, p: Pass) -> None:
        self.commits[p.frames[0]] = p
        for f in p.frames:
            self.owner[f] = p.frames[0]

    def run(self, query: Pass) -> Tensor:
        needed, todo = set(), [self.owner[f] for f in query.visible]
        while todo:
            key = todo.pop()
            if key not in needed:
                needed.add(key)
                todo += [self.owner[f] for f in self.commits[key].visible]
        passes = [self.commits[k] for k in sorted(needed)] + [query]
        frames = [f for p in passes for f in p.frames]
        column = {f: i for i, f in enumerate(frames[:-len(query.frames)])}
        allowed = torch.zeros(len(frames), len(frames), dtype=torch.bool)
        row = 0
        for p in passes:
            own = slice(row, row + len(p.frames))
            allowed[own, own] = True  # a pass attends to all of its own frames (block-causal)
            for f in p.visible:
                allowed[own, column[f]] = True
            row += len(p.frames)
        s = self.model.cfg.tokens_per_frame(*query.x_in.shape[3:])
        mask = allowed.repeat_interleave(s, 0).repeat_interleave(s, 1)
        x = torch.cat([p.x_in for p in passes], dim=2)
        t = torch.cat([p.t for p in passes], dim=1)
        driving = None
        if self.adapter is not None:
            driving = DrivingTokens({self.adapter: torch.cat([p.tokens for p in passes], dim=1)})
        out = self.model(x, t, frame_positions=torch.tensor(frames, dtype=torch.float64), text_kv=self.text_kv,
                         attn_mask=mask, driving=driving)
        return out[:, :, -len(query.frames):]


def _x0(x: Tensor, v: Tensor, sigma: Tensor) -> Tensor:
    return (x.double() - sigma * v.double()).to(x.dtype)  # `_convert_flow_pred_to_x0`: float64, back to x's dtype


def livetalk_reference(model, text_kv, reference: Tensor, rows: Tensor, seed: int, blocks: int) -> list[Tensor]:
    """LiveTalk's `inference` (no initial latent), fp32.

    reference: (1, 16, 1, h, w) image latent. rows: wav2vec2 rows per video frame (T, D) with T = 4n - 3;
    the whole clip's rows get the first row repeated 3 times in front (l.183), so latent k reads rows
    [4k, 4k+4) of that table: latent 0 = frame 0 x4, latent k = video frames 4k-3..4k. Blocks of 3 latents;
    the 4 steps are the scheduler timesteps [1000, 937.5, 833.3, 625] cast to bf16 -> [1000, 936, 832, 624],
    given to the model as a bf16 tensor; sigmas snap to the nearest scheduler timestep (exact values).
    Latent 0 is the clean reference in the input of every step of block 0 and in its output; y = [reference
    repeated | mask 0 at latent 0, 1 elsewhere]. After the steps one pass at t = 0 rewrites the block's K/V.
    Cache: 15 frames, sink 9 (the first three blocks), rolling window; no re-indexing (absolute positions).
    """
    sigmas, timesteps = scheduler_table(4)
    steps = timesteps.to(torch.bfloat16)  # what the model sees
    adapter = model.driving["avatar_audio"]
    table = torch.cat([rows[:1].repeat(3, 1), rows])  # (4n, D)
    memory, cache, noise = Recompute(model, text_kv, "avatar_audio"), PeerKVCache(15, 9, 15, True), NoiseSource(seed)
    out = []
    for b in range(blocks):
        i, n = 3 * b, 3
        frames = list(range(i, i + n))
        mask = torch.tensor([0.0 if f == 0 else 1.0 for f in frames]).view(1, 1, n, 1, 1)
        mask = mask.expand(1, 1, n, *reference.shape[3:])  # (1, 1, n, h, w): 0 = the known reference frame
        y = torch.cat([reference.expand(-1, -1, n, -1, -1), mask], dim=1)
        tokens = adapter.encode(table[4 * i:4 * (i + n)].reshape(1, n, 4, -1))  # (1, n, token_dim)
        x = noise.draw((1, 16, n, *reference.shape[3:]))
        for j, t in enumerate(steps):
            if i == 0:
                x[:, :, :1] = reference
            tt = torch.full((1, n), float(t), dtype=torch.bfloat16)
            v = memory.run(Pass(torch.cat([x, y], 1), tt, frames, cache.forward(i, n), tokens))
            x0 = _x0(x, v, sigma_of(t, sigmas, timesteps))
            if j + 1 < len(steps):
                s_next = sigma_of(steps[j + 1], sigmas, timesteps).float()
                x = (1 - s_next) * x0 + s_next * noise.draw(tuple(x0.shape))
        if i == 0:
            x0[:, :, :1] = reference
        out.append(x0)
        t0 = torch.zeros(1, n, dtype=torch.bfloat16)
        memory.commit(Pass(torch.cat([x0, y], 1), t0, frames, cache.forward(i, n), tokens))
    return out


def causal_forcing_reference(model, text_kv, latent_hw: tuple[int, int], seed: int, blocks: int, chunk_len: int,
                             steps: tuple[int, ...], first_steps: tuple[int, ...] = ()) -> list[Tensor]:
    """Causal Forcing's `CausalInferencePipeline.inference` (T2V, no initial latent), fp32.

    Blocks of chunk_len latents (3 chunk-wise, 1 frame-wise); block 0 uses first_steps when given
    (`denoising_step_list_first_chunk`, Causal Forcing++), every other block `steps`; timesteps are the
    warped float32 values (1000, 937.5, 833.3, 625 for the 4-step list) given as a float32 tensor;
    re-noise with fresh randn to the next timestep; then one pass at context_noise = 0 rewrites the
    block's K/V. Cache: every frame of the clip up to 21 (global attention, absolute positions).
    """
    sigmas, timesteps = scheduler_table(1000)
    memory, noise = Recompute(model, text_kv), NoiseSource(seed)
    cache = PeerKVCache(21, 0, 21, evicts=False, overflow_slides=True)
    out = []
    for b in range(blocks):
        i, n = chunk_len * b, chunk_len
        frames = list(range(i, i + n))
        ts = warped(first_steps if b == 0 and first_steps else steps)
        x = noise.draw((1, 16, n, *latent_hw))
        for j, t in enumerate(ts):
            v = memory.run(Pass(x, torch.full((1, n), float(t)), frames, cache.forward(i, n)))
            x0 = _x0(x, v, sigma_of(t, sigmas, timesteps))
            if j + 1 < len(ts):
                s_next = sigma_of(ts[j + 1], sigmas, timesteps).float()
                x = (1 - s_next) * x0 + s_next * noise.draw(tuple(x0.shape))
        out.append(x0)
        memory.commit(Pass(x0, torch.zeros(1, n), frames, cache.forward(i, n)))
    return out
