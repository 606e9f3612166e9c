"""The Wan2.1 VAE's latent normalisation: the per-channel mean and std its latents are scaled by, as the
DiT works in (z - mean) / std. Its own module so every codec (the Wan VAE, the TAEHV tiny decoders) shares
one definition without importing each other."""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import InputError

LATENT_MEAN: tuple[float, ...] = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
LATENT_STD: tuple[float, ...] = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


def normalize_latent(mu: Tensor) -> Tensor:
    """μ [B, 16, T, h, w] → the normalised latent the DiT works in: (μ − mean) / std, in float32 (or float64)."""
    mean, std = _stats(mu)
    return (widen(mu) - mean) / std


def denormalize_latent(z: Tensor) -> Tensor:
    """Inverse of `normalize_latent`, in float32 (or float64)."""
    mean, std = _stats(z)
    return widen(z) * std + mean


def widen(x: Tensor) -> Tensor:
    """x in at least float32 (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _stats(x: Tensor) -> tuple[Tensor, Tensor]:
    if x.ndim != 5 or x.shape[1] != len(LATENT_MEAN):
        raise InputError(f"latent shape {tuple(x.shape)}; expected [B, {len(LATENT_MEAN)}, T, h, w]")
    dtype = torch.promote_types(x.dtype, torch.float32)
    mean = torch.tensor(LATENT_MEAN, device=x.device, dtype=dtype).view(1, -1, 1, 1, 1)
    std = torch.tensor(LATENT_STD, device=x.device, dtype=dtype).view(1, -1, 1, 1, 1)
    return mean, std
