"""One chunk of the loop: few-step denoising of c + k frames, the knot fusion, the clean commit.

Also the rolling-forcing variant, where a window of chunks is denoised jointly at staggered
noise levels (one forward per output chunk). Both draw all randomness from the stream's
`NoiseSource` and talk to the past only through the memory's predict/commit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..driving import DrivingTokens, slice_driving
from .conditioning import Known, model_input
from .memory import Memory
from .noise import NoiseSource
from .schedule import FlowSchedule, predict_x0, renoise


@dataclass(frozen=True)
class ChunkContext:
    """What every forward of one chunk shares: the memory it attends to, the schedule and noise source, the
    reference latent, where the chunk starts, where the anchor sits, and the chunk's driving tokens."""

    memory: Memory
    sched: FlowSchedule
    noise: NoiseSource
    reference: Tensor | None  # (B, 16, 1, h, w)
    first_frame: int  # latent index of the chunk's first frame
    anchor_position: int | None  # temporal index of the anchor (schedule.anchor_position)
    driving: DrivingTokens | None

    def predict(self, x: Tensor, known: Known, t: Tensor) -> Tensor:
        """One denoising forward: v for x (B, 16, F, h, w) at timesteps t (B, F)."""
        x_in = model_input(self.memory.model.cfg, x, known, self.reference)
        return self.memory.predict(x_in, t, self.first_frame, self.anchor_position, self.driving)

    def first(self, frames: int) -> ChunkContext:
        """The context of the chunk's first `frames` frames (the committed part: its driving sliced)."""
        return replace(self, driving=slice_driving(self.driving, 0, frames))


def _timesteps(value: float, batch: int, frames: int, device) -> Tensor:
    return torch.full((batch, frames), value, dtype=torch.float64, device=device)


def start_noise(known: Known, sigma: Tensor, eps: Tensor) -> Tensor:
    """Initial x: pure noise, with known regions already at the first step's noise level."""
    return known.mask * renoise(known.latent, sigma, eps) + (1 - known.mask) * eps


def denoise_chunk(ctx: ChunkContext, steps: tuple[int, ...], known: Known) -> Tensor:
    """All denoising steps of one chunk -> fused x0 prediction (B, 16, F, h, w)."""
    b, _, frames, h, w = known.latent.shape
    device, sched = known.latent.device, ctx.sched
    ts = [sched.warp(s) for s in steps]
    sigmas = [sched.sigma(_timesteps(t, b, frames, device)) for t in ts]
    x = start_noise(known, sigmas[0], ctx.noise.draw((b, 16, frames, h, w), device))
    for j, t in enumerate(ts):
        x0 = predict_x0(x, ctx.predict(x, known, _timesteps(t, b, frames, device)), sigmas[j])
        if j + 1 == len(ts):
            return known.fuse_final(x0)
        x = renoise(known.pin(x0), sigmas[j + 1], ctx.noise.draw((b, 16, frames, h, w), device))
    raise AssertionError("unreachable: steps is never empty")


def commit_chunk(ctx: ChunkContext, context_noise: int, latents: Tensor, known: Known) -> None:
    """Clean pass (t = context_noise) over the committed frames; writes their K/V to the window."""
    b, _, frames = latents.shape[:3]
    t = _timesteps(ctx.sched.warp(context_noise), b, frames, latents.device)
    x = latents
    if context_noise:
        x = renoise(latents, ctx.sched.sigma(t), ctx.noise.draw(tuple(latents.shape), latents.device))
    x_in = model_input(ctx.memory.model.cfg, x, known, ctx.reference)
    ctx.memory.commit(x_in, t, ctx.first_frame, ctx.anchor_position, ctx.driving)


def rolling_step(ctx: ChunkContext, steps: tuple[int, ...], window: list[Tensor], levels: list[int],
                 known: Known) -> Tensor | None:
    """One joint forward over the in-flight chunks (oldest first, levels = step index of each).

    Updates window/levels in place; returns the oldest chunk's final x0 once it has seen
    every step, else None.
    """
    sched, noise = ctx.sched, ctx.noise
    x = torch.cat(window, dim=2)  # (B, 16, n*c, h, w)
    b, _, frames, h, w = x.shape
    c = window[0].shape[2]
    t = torch.cat([_timesteps(sched.warp(steps[lv]), b, c, x.device) for lv in levels], dim=1)  # (B, F)
    x0 = known.pin(predict_x0(x, ctx.predict(x, known, t), sched.sigma(t)))
    done = None
    for j in range(len(window)):
        part = x0[:, :, j * c:(j + 1) * c]
        if levels[j] + 1 == len(steps):
            done = known.frames(0, c).fuse_final(part)
            continue
        t_next = _timesteps(sched.warp(steps[levels[j] + 1]), b, c, x.device)
        window[j] = renoise(part, sched.sigma(t_next), noise.draw((b, 16, c, h, w), x.device))
        levels[j] += 1
    if done is not None:
        del window[0], levels[0]
    return done


__all__ = ["ChunkContext", "denoise_chunk", "commit_chunk", "rolling_step", "slice_driving"]
