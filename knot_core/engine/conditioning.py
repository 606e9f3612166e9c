"""Known latents of a chunk (knot, reference start, user keep-mask) and the DiT input layouts.

What is known about a chunk is one `Known`: a latent, a mask (1 = known) and the weight
with which the final prediction is pulled to it (1 = pinned exactly, the fusion weight at
knot frames). Every model gets the known latent blended into its noisy input between steps;
inpainting models also see it through their conditioning channels (layouts in config.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import DiTConfig, StreamConfig
from ..errors import InputError


@dataclass(frozen=True)
class Known:
    latent: Tensor  # (B, 16, F, h, w), zeros where unknown
    mask: Tensor  # (B, 1, F, h, w), 1 = known
    fuse: Tensor  # (B, 1, F, h, w), weight of `latent` in the final prediction

    def frames(self, start: int, stop: int) -> Known:
        return Known(self.latent[:, :, start:stop], self.mask[:, :, start:stop], self.fuse[:, :, start:stop])

    def pin(self, x0: Tensor) -> Tensor:
        """Between steps: known regions replaced by the known latent."""
        return self.mask * self.latent + (1 - self.mask) * x0

    def fuse_final(self, x0: Tensor) -> Tensor:
        """After the last step: knot frames averaged with the previous chunk's prediction."""
        return self.fuse * self.latent + (1 - self.fuse) * x0


def chunk_known(cfg: StreamConfig, frames: int, first_frame: int, *, knot: Tensor | None, reference: Tensor | None,
                keep_mask: Tensor | None, like: Tensor) -> Known:
    """Known latent of a chunk of `frames` latent frames starting at `first_frame`.

    knot: (B, 16, k, h, w) the previous chunk's prediction of this chunk's first k frames.
    reference: (B, 16, 1, h, w); keep_mask: (h, w) in [0, 1], 1 = keep the reference there.
    like: a (B, 16, F, h, w) tensor giving shape, dtype and device.
    """
    b, ch, _, h, w = like.shape
    latent = like.new_zeros(b, ch, frames, h, w)
    mask = like.new_zeros(b, 1, frames, h, w)
    if keep_mask is not None and reference is not None:
        mask[:] = keep_mask.to(like)
        latent[:] = reference.to(like)
    fuse = mask.clone()
    if knot is not None and knot.shape[2]:
        k = knot.shape[2]
        latent[:, :, :k] = mask[:, :, :k] * latent[:, :, :k] + (1 - mask[:, :, :k]) * knot.to(like)
        fuse[:, :, :k] = mask[:, :, :k] + (1 - mask[:, :, :k]) * cfg.fusion_weight
        mask[:, :, :k] = 1
    elif first_frame == 0 and cfg.start_from_reference and reference is not None:
        latent[:, :, :1] = reference.to(like)
        mask[:, :, :1] = 1
        fuse[:, :, :1] = 1
    return Known(latent, mask, fuse)


def model_input(cfg: DiTConfig, x: Tensor, known: Known, reference: Tensor | None) -> Tensor:
    """Concatenate the DiT input channels for cfg.cond_layout. x: (B, 16, F, h, w)."""
    if cfg.cond_layout == "noise":
        return x
    if cfg.cond_layout == "noise_ref_mask":
        if reference is None:
            raise InputError("this model (33 input channels: noise | reference | mask) needs a reference image; "
                             "connect one (Encode Reference / --reference)")
        ref = torch.where(known.mask > 0, known.latent, reference.to(x).expand_as(known.latent))
        return torch.cat([x, ref, 1 - known.mask], dim=1)  # mask channel: 1 = generate (AvatarForcing)
    known_latent = known.mask * known.latent
    return torch.cat([x, known.mask.expand(-1, 4, -1, -1, -1), known_latent], dim=1)  # Wan I2V order


def reference_known(reference: Tensor) -> Known:
    """The reference frame's own conditioning in the anchor pass: everything known."""
    ones = torch.ones_like(reference[:, :1])
    return Known(reference, ones, ones)
