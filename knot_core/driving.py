"""The interface through which driving-signal modules (audio, pose, expression) reach the DiT.

An adapter owns its weights and two hooks the DiT calls around each block. Features
arrive per chunk, frame-aligned with the chunk's latent frames, and are encoded once
per chunk (`encode`), then reused by every denoising step of that chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass(frozen=True)
class DrivingTokens:
    """Encoded driving tokens for the frames of one forward.

    tokens: adapter name -> tensor [B, F, ...] aligned with the forward's latent frames.
    active: [F] bool, False for frames that carry no signal (the reference frame);
            adapters leave those frames untouched. None means every frame is active.
    """

    tokens: dict[str, Tensor]
    active: Tensor | None = None


class DrivingAdapter(nn.Module):
    """Base class: subclasses override `encode` and one or both block hooks.

    `signal` names the feature stream the adapter consumes ("audio", "pose", "expression");
    the engine asks the stream's signal of that name for features chunk by chunk.
    x in the hooks is the residual stream [B, F*S, dim] (frame-major tokens, S per frame).
    """

    signal: str = ""

    def encode(self, features: Tensor) -> Tensor:
        """Per-chunk features [B, F, ...] -> tokens [B, F, ...] used by the hooks."""
        return features

    def before_block(self, index: int, x: Tensor, tokens: Tensor, active: Tensor | None) -> Tensor:
        return x

    def after_block(self, index: int, x: Tensor, tokens: Tensor, active: Tensor | None) -> Tensor:
        return x
