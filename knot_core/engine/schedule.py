"""Few-step flow-matching schedule and the running-ahead rule for the reference index.

Flow matching (Wan2.1, Self Forcing): the model predicts v, x0 = x_t - sigma*v, and the next
level is reached by re-noising (1 - sigma')*x0 + sigma'*eps with fresh eps. Sigmas are
linspace(1, 0, 1001)[:-1] shifted by sigma_s = shift*sigma / (1 + (shift-1)*sigma); a
denoising step s in [1, 1000] maps to the scheduler's timestep at index 1000 - s ("warp").
The tables are built in float32 (`torch.linspace`'s default dtype, as every peer's
FlowMatchScheduler does) and only then widened, so the warped timesteps are the values the
checkpoints were trained with (952.38104 at step 800, not 952.38095).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import StreamConfig

NUM_TRAIN_TIMESTEPS = 1000


class FlowSchedule:
    def __init__(self, shift: float):
        sigmas = torch.linspace(1.0, 0.0, NUM_TRAIN_TIMESTEPS + 1, dtype=torch.float32)[:-1]
        sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)  # (1000,) float32, as the peers build it
        self.sigmas = sigmas.double()  # widened only after every rounding the peers do
        self.timesteps = (sigmas * NUM_TRAIN_TIMESTEPS).double()

    def warp(self, step: int) -> float:
        """Denoising step (e.g. 750) -> the model's timestep (e.g. 937.5 with shift 5); 0 stays 0."""
        return 0.0 if step == 0 else float(self.timesteps[NUM_TRAIN_TIMESTEPS - step])

    def sigma(self, t: Tensor) -> Tensor:
        """sigma of the nearest scheduler timestep, per element (t = 0 gives 0)."""
        t = t.to(torch.float64)
        idx = (self.timesteps.to(t.device)[None] - t.reshape(-1, 1)).abs().argmin(dim=1)
        sig = self.sigmas.to(t.device)[idx].reshape(t.shape)
        return torch.where(t == 0, torch.zeros_like(sig), sig)


def frame_sigma(sigma: Tensor) -> Tensor:
    """Per-frame sigma (B, F) -> broadcastable over (B, C, F, H, W)."""
    return sigma[:, None, :, None, None]


def predict_x0(x_t: Tensor, v: Tensor, sigma: Tensor) -> Tensor:
    """x0 = x_t - sigma*v in float64 (as the checkpoints were trained), returned as float32."""
    return (x_t.double() - frame_sigma(sigma) * v.double()).float()


def renoise(x0: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
    s = frame_sigma(sigma).float()
    return (1 - s) * x0 + s * noise


def advance_reference(cfg: StreamConfig, first_frame: int, ref_index: int) -> int:
    """Running ahead: before the chunk starting at latent i, if i + c + k > n then n += s.

    Repeated while needed, so a step s < c cannot let the rollout overtake the reference
    (with the paper's s >= c it fires at most once, exactly the published rule).
    """
    while cfg.running_ahead and first_frame + cfg.span > ref_index:
        ref_index += cfg.ahead_step
    return ref_index
