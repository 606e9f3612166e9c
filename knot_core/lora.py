"""Merging PEFT LoRA weights into a Wan DiT state dict: W += (alpha / r) * B @ A.

Handles the LoRAs of LongLive (rank 256, alpha 256, on every Linear of the attention blocks,
stored under `generator_lora` or as a bare `get_peft_model_state_dict` dict) and AvatarForcing
(r 128, alpha 64 — alpha is not stored in the file — next to `base_layer` weights). PEFT's
LoRA forward is `W x + (alpha / r) * B (A x)` (dropout off at inference), so merging is exact
up to rounding; merges run in float32 and are cast to the load dtype afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TypeVar

import torch
from torch import Tensor

from .checkpoint_formats import KNOWN_PREFIXES, LoraInfo, describe_keys, lora_pairs
from .errors import CheckpointError

log = logging.getLogger(__name__)
T = TypeVar("T")


def lora_scale(info: LoraInfo, alpha: float | None = None) -> float:
    """alpha / r, with alpha from the caller, else the format's known value, else r (scale 1)."""
    alpha = alpha if alpha is not None else info.alpha if info.alpha is not None else float(info.rank)
    if alpha <= 0:
        raise CheckpointError(f"lora_alpha={alpha}; must be > 0 (LongLive: 256, AvatarForcing: 64)")
    return alpha / info.rank


def _target(module: str, base_keys: Mapping[str, object]) -> str | None:
    for prefix in KNOWN_PREFIXES:
        if module.startswith(prefix) and module[len(prefix):].replace(".base_layer", "") + ".weight" in base_keys:
            return module[len(prefix):].replace(".base_layer", "") + ".weight"
    return None


def collect_lora(tensors: Mapping[str, T], base_keys: Mapping[str, object]) -> dict[str, tuple[T, T]]:
    """Canonical weight key -> (A (r, in), B (out, r)) for every LoRA pair among tensors (or shapes).

    base_keys: the canonical keys of the base weights; a pair whose Linear is not among them is an error
    (a LoRA for a different model), listed with a few examples.
    """
    pairs = lora_pairs(list(tensors))
    merged: dict[str, tuple[T, T]] = {}
    orphans = []
    for module, sides in pairs.items():
        target = _target(module, base_keys)
        if target is None:
            orphans.append(module)
            continue
        merged[target] = (tensors[sides["A"]], tensors[sides["B"]])
    if orphans:
        raise CheckpointError(f"{len(orphans)} LoRA pairs target layers the base model does not have, e.g. "
                              f"{', '.join(sorted(orphans)[:3])}; base has {describe_keys(list(base_keys))}. "
                              "Use the LoRA made for this base checkpoint.")
    return merged


def merge_lora(state: dict[str, Tensor], lora: Mapping[str, tuple[Tensor, Tensor]], scale: float,
               dtype: torch.dtype) -> int:
    """W += scale * B @ A for each target in place (float32 math, result in dtype). Returns the count."""
    for key, (a, b) in lora.items():
        w = state[key]
        if a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0] or (b.shape[0], a.shape[1]) != tuple(w.shape):
            raise CheckpointError(f"LoRA for {key}: A {tuple(a.shape)}, B {tuple(b.shape)} do not fit the weight "
                                  f"{tuple(w.shape)} (need A (r, in), B (out, r)); the LoRA is for another model size")
        delta = b.to(w.device, torch.float32) @ a.to(w.device, torch.float32)  # (out, in)
        state[key] = (w.to(torch.float32) + scale * delta).to(dtype)
    log.info("merged %d LoRA pairs at scale %.4g", len(lora), scale)
    return len(lora)
