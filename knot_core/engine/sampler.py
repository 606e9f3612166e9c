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
from .visibility import Visible


@dataclass(frozen=True)
class ChunkContext:
    """What every forward of one chunk shares: the memory it attends to, the schedule and noise source, the
    reference latent, where the chunk starts, what its passes see (visibility.Visible: window, sink, anchor
    position), and the chunk's driving tokens."""

    memory: Memory
    sched: FlowSchedule
    noise: NoiseSource
    reference: Tensor | None  # (B, 16, 1, h, w)
    first_frame: int  # latent index of the chunk's first frame
    visible: Visible
    driving: DrivingTokens | None

    def predict(self, x: Tensor, known: Known, t: Tensor) -> Tensor:
        """One denoising forward: v for x (B, 16, F, h, w) at timesteps t (B, F) as the model is given them."""
        x_in = model_input(self.memory.model.cfg, x, known, self.reference)
        return self.memory.predict(x_in, t, self.first_frame, self.visible, self.driving)

    def first(self, frames: int) -> ChunkContext:
        """The context of the chunk's first `frames` frames (the committed part: its driving sliced)."""
        return replace(self, driving=slice_driving(self.driving, 0, frames))


def _timesteps(value: float, batch: int, frames: int, device) -> Tensor:
    return torch.full((batch, frames), value, dtype=torch.float64, device=device)


def model_timesteps(t: Tensor, timestep_dtype: str) -> Tensor:
    """The timesteps as the model is given them: bfloat16 rounds 937.5 to 936 (LiveTalk), and the DiT then
    rounds its sinusoid to that dtype too; sigmas are always looked up from the exact values. "float32" keeps
    the schedule's values as they are (float32-built tables, held in float64 so nothing rounds twice)."""
    return t.to(torch.bfloat16) if timestep_dtype == "bfloat16" else t


def start_noise(known: Known, sigma: Tensor, eps: Tensor) -> Tensor:
    """Initial x: pure noise, with known regions already at the first step's noise level."""
    return known.mask * renoise(known.latent, sigma, eps) + (1 - known.mask) * eps


def denoise_chunk(ctx: ChunkContext, steps: tuple[int, ...], known: Known, *, timestep_dtype: str = "float32",
                  pin_clean: bool = False) -> Tensor:
    """All denoising steps of one chunk -> fused x0 prediction (B, 16, F, h, w).

    pin_clean: known frames enter every step's input clean, not re-noised (LiveTalk's reference pin).
    """
    b, _, frames, h, w = known.latent.shape
    device, sched = known.latent.device, ctx.sched
    ts = [sched.warp(s) for s in steps]
    sigmas = [sched.sigma(_timesteps(t, b, frames, device)) for t in ts]
    x = start_noise(known, sigmas[0], ctx.noise.draw((b, 16, frames, h, w), device))
    for j, t in enumerate(ts):
        if pin_clean:
            x = known.pin(x)
        v = ctx.predict(x, known, model_timesteps(_timesteps(t, b, frames, device), timestep_dtype))
        x0 = predict_x0(x, v, sigmas[j])
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
    ctx.memory.commit(x_in, t, ctx.first_frame, ctx.visible, ctx.driving)


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
