"""The driving-adapter registry: how each adapter type is rebuilt from a saved config or a foreign file.

Adapter modules register their type at import (`register_adapter(AdapterSpec(...))`); the checkpoint
reader (model_file, checkpoints) looks types up here. The dependency points one way: adapters know
this registry, never the checkpoint-file modules.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..config import DiTConfig

log = logging.getLogger(__name__)

# Adapter modules that register themselves on import; looked up lazily so knot_core loads without them.
KNOWN_ADAPTER_MODULES = {"avatar_audio": "knot_core.adapters.avatar_audio",
                         "cross_attention": "knot_core.adapters.cross_attention",
                         # the shipped demo model's own adapters (inspect/render of knot_core/models/demo.safetensors)
                         "motion_cross_attention": "knot_core.demo",
                         "motion_injection": "knot_core.demo"}


@dataclass(frozen=True)
class AdapterSpec:
    """How to rebuild one adapter type: from a saved config, from a foreign file's shapes, and back."""

    type: str
    build: Callable[[Mapping[str, Any], DiTConfig], nn.Module]
    config_from_shapes: Callable[[Mapping[str, Sequence[int]], DiTConfig], dict]
    config_of: Callable[[nn.Module], dict]


ADAPTER_REGISTRY: dict[str, AdapterSpec] = {}


def register_adapter(spec: AdapterSpec, *, replace: bool = False) -> None:
    """Called by adapter modules at import: `register_adapter(AdapterSpec("avatar_audio", ...))`."""
    if spec.type in ADAPTER_REGISTRY and not replace:
        raise ValueError(f"adapter type {spec.type!r} is already registered; pass replace=True to override")
    ADAPTER_REGISTRY[spec.type] = spec


def adapter_spec(type_name: str) -> AdapterSpec | None:
    """The registered spec of an adapter type, importing its known module on first use; None if unavailable."""
    if type_name not in ADAPTER_REGISTRY and type_name in KNOWN_ADAPTER_MODULES:
        try:
            importlib.import_module(KNOWN_ADAPTER_MODULES[type_name])
        except ImportError as err:
            log.debug("adapter module for %s not importable: %s", type_name, err)
    return ADAPTER_REGISTRY.get(type_name)
