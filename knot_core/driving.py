"""The interface through which driving-signal modules (audio, pose, expression) reach the DiT.

An adapter owns its weights and two hooks the DiT calls around each block. Features
arrive per chunk, frame-aligned with the chunk's latent frames, and are encoded once
per chunk (`encode`), then reused by every denoising step of that chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
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


def encode_driving(adapters: nn.ModuleDict, signals, first_frame: int, count: int,
                   device: torch.device | str) -> DrivingTokens | None:
    """Ask each adapter's signal for latent frames first_frame..+count and encode them once.

    signals: objects with `name` and `latent_features(start, count) -> (count, ...)`.
    """
    if not len(adapters):
        return None
    by_name = {s.name: s for s in signals}
    tokens = {}
    for name, adapter in adapters.items():
        signal = by_name.get(adapter.signal)
        if signal is None:
            continue
        features = signal.latent_features(first_frame, count).to(device)  # (count, ...)
        tokens[name] = adapter.encode(features.unsqueeze(0))  # (1, count, ...)
    return DrivingTokens(tokens) if tokens else None


def slice_driving(driving: DrivingTokens | None, start: int, stop: int) -> DrivingTokens | None:
    if driving is None:
        return None
    active = None if driving.active is None else driving.active[start:stop]
    return DrivingTokens({k: v[:, start:stop] for k, v in driving.tokens.items()}, active)
