"""An adversarial term for the demo DiT's x0 predictions, in the codec's latent space (as ADD / APT add one to a
few-step student's regression): x0 regression alone returns the conditional mean of what the driving leaves open,
which decodes soft; a critic that tells predicted latents from ground-truth ones pushes them toward the real ones'
detail. Frame by frame, conditioned on the reference latent (so detail of the wrong face is not "real"), hinge loss,
spectral norm (the usual stabilisers of a small GAN).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


class LatentCritic(nn.Module):
    """Patch logits (B * T, 1, h/2, w/2) for latent frames (B, C, T, h, w) beside the reference (B, C, 1, h, w)."""

    def __init__(self, channels: int = 16, width: int = 64):
        super().__init__()
        act = nn.LeakyReLU(0.2)
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(2 * channels, width, 3, padding=1)), act,
            spectral_norm(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)), act,
            spectral_norm(nn.Conv2d(2 * width, 2 * width, 3, padding=1)), act,
            spectral_norm(nn.Conv2d(2 * width, 1, 3, padding=1)))

    def forward(self, frames: Tensor, reference: Tensor) -> Tensor:
        b, c, t, h, w = frames.shape
        x = torch.cat([frames, reference.expand(-1, -1, t, -1, -1)], 1)
        return self.net(x.transpose(1, 2).reshape(b * t, 2 * c, h, w))


def critic_loss(critic: LatentCritic, real: Tensor, fake: Tensor, reference: Tensor) -> Tensor:
    """Hinge loss of the critic (fake detached: the DiT is not updated by it)."""
    return (torch.relu(1 - critic(real, reference)).mean()
            + torch.relu(1 + critic(fake.detach(), reference)).mean())


def generator_loss(critic: LatentCritic, fake: Tensor, reference: Tensor) -> Tensor:
    """The DiT's adversarial term: raise the critic's score of its predictions."""
    return -critic(fake, reference).mean()
