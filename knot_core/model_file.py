"""Our model file: safetensors + one `knot_forcing` JSON metadata entry, and what a load reports.

The metadata holds everything needed to rebuild the model without guessing: the DiTConfig
fields (architecture and conditioning-channel layout), the driving adapters (type + config,
rebuilt through the adapter registry below), and the recommended sampler settings
(a StreamConfig, fps, resolution). Tensor names are Wan2.1's (`KnotDiT` keys), adapters
under `driving.<name>.`. The writer streams one tensor at a time, so converting never holds
a second full copy of the weights in host memory.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .adapters.registry import (  # noqa: F401  (re-exported: the registry's names before it had a module)
    ADAPTER_REGISTRY,
    KNOWN_ADAPTER_MODULES,
    AdapterSpec,
    adapter_spec,
    register_adapter,
)
from .checkpoint_formats import KNOT_METADATA_KEY
from .config import DiTConfig, StreamConfig
from .errors import CheckpointError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                      torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                      torch.uint8: "U8", torch.bool: "BOOL"}


@dataclass(frozen=True)
class SamplerDefaults:
    """Recommended sampling settings of a model: the chunk loop, output fps, (height, width) in pixels, and how
    its audio front end aligns wav2vec2 rows to latents ("avatarforcing": a zero row first; "livetalk": the
    first row repeated, rows at 16 fps)."""

    stream: StreamConfig
    fps: int = 16
    resolution: tuple[int, int] = (480, 832)
    audio_alignment: str = "avatarforcing"

    def to_json(self) -> dict:
        return {**asdict(self.stream), "steps": list(self.stream.steps), "fps": self.fps,
                "resolution": list(self.resolution), "audio_alignment": self.audio_alignment}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SamplerDefaults:
        names = {f.name for f in fields(StreamConfig)}
        stream = {k: (tuple(v) if k in ("steps", "first_chunk_steps") else v) for k, v in data.items() if k in names}
        return cls(StreamConfig(**stream), int(data.get("fps", 16)), tuple(data.get("resolution", (480, 832))),
                   str(data.get("audio_alignment", "avatarforcing")))


# Recommendations per source format: each file runs the loop it was distilled for, with its authors'
# published settings (engine/visibility.py states each loop). AvatarForcing: its windowed loop at 25 fps.
# LongLive: window 6 + sink 3 + chunk 3 = its local_attn_size 12, the default model's absolute sink.
# Self Forcing-family .pt files (Self Forcing, Rolling Forcing, CausVid) are saved by the same trainer
# with the same keys, so the file cannot say which loop it was trained for: Self Forcing's is recommended
# and a Rolling Forcing file needs strategy rolling_forcing (CLI --strategy, Knot Settings node).
FORMAT_SAMPLERS: dict[str, SamplerDefaults] = {
    "avatarforcing": SamplerDefaults(StreamConfig.for_strategy("avatar_forcing"), fps=25),
    "longlive": SamplerDefaults(StreamConfig.for_strategy("longlive")),
    "forcing_pt": SamplerDefaults(StreamConfig.for_strategy("self_forcing")),
    "comfyui": SamplerDefaults(StreamConfig.for_strategy("self_forcing")),
    "wan": SamplerDefaults(StreamConfig()),
}


@dataclass(frozen=True)
class AdapterRecord:
    """A driving adapter of a model: its slot in `model.driving`, registered type and config."""

    name: str
    type: str
    config: dict
    attached: bool = True  # False: its class is not registered; weights kept in ModelInfo.unattached


@dataclass(frozen=True)
class ModelInfo:
    """What `load_dit` loaded: format, architecture, adapters, LoRA state and sampler defaults."""

    format: str
    description: str
    config: DiTConfig
    sampler: SamplerDefaults
    adapters: tuple[AdapterRecord, ...] = ()
    lora_merged: bool = False
    lora_scale: float | None = None
    causal: bool | None = None
    dtype: torch.dtype = torch.float32
    param_count: int = 0
    path: str = ""
    unattached: Mapping[str, Tensor] = field(default_factory=dict, repr=False)
    loop: str = ""  # the model loop whose settings `sampler` holds ("" = the format's defaults)
    loop_source: str = ""  # "detected" (named by the file), "chosen" (by the user), or "" (format default)
    same_layout: tuple[str, ...] = ()  # loops of other public models with exactly this file layout

    def stream_config(self, **overrides) -> StreamConfig:
        """The recommended loop with the user's overrides. Choosing another strategy starts from that
        strategy's published settings: the recommendation's window, sink and steps belong to its own loop."""
        base = self.sampler.stream
        strategy = overrides.get("strategy")
        if strategy is not None and strategy != base.strategy:
            return StreamConfig.for_strategy(strategy, **{k: v for k, v in overrides.items() if k != "strategy"})
        return base.replace(**overrides) if overrides else base


def metadata_json(config: DiTConfig, adapters: Sequence[AdapterRecord], sampler: SamplerDefaults,
                  source: Mapping[str, Any]) -> str:
    arch = {**asdict(config), "patch_size": list(config.patch_size)}
    return json.dumps({
        "format_version": FORMAT_VERSION, "architecture": arch, "cond_layout": config.cond_layout,
        "in_dim": config.in_dim, "sampler": sampler.to_json(), "source": dict(source),
        "driving": [{"name": a.name, "type": a.type, "config": a.config} for a in adapters],
    }, sort_keys=True)


def parse_metadata(meta: Mapping[str, Any]) -> tuple[DiTConfig, tuple[AdapterRecord, ...], SamplerDefaults, dict]:
    """(config, adapters, sampler, source) from a parsed knot_forcing metadata entry."""
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"knot_forcing format_version={version}; this version reads {FORMAT_VERSION}. "
                              "Update ComfyUI-KnotForcing or convert the original checkpoint again")
    try:
        arch = dict(meta["architecture"])
        arch["patch_size"] = tuple(arch["patch_size"])
        config = DiTConfig(**{f.name: arch[f.name] for f in fields(DiTConfig) if f.name in arch})
        adapters = tuple(AdapterRecord(a["name"], a["type"], dict(a.get("config", {}))) for a in meta["driving"])
        sampler = SamplerDefaults.from_json(meta["sampler"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"knot_forcing metadata is incomplete or invalid ({type(err).__name__}: {err}); "
                              "convert the original checkpoint again") from err
    return config, adapters, sampler, dict(meta.get("source", {}))


def write_safetensors(path: str | Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str],
                      dtype: torch.dtype | None = None) -> None:
    """Write a safetensors file one tensor at a time (floating tensors cast to dtype on the way),
    through a temporary file renamed at the end so a crash never leaves a truncated model."""
    def target(t: Tensor) -> torch.dtype:
        return dtype if dtype is not None and t.is_floating_point() else t.dtype

    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, t in tensors.items():
        dt = target(t)
        if dt not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"tensor {name} has dtype {dt}, which safetensors cannot store")
        size = t.numel() * torch.empty((), dtype=dt).element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPES[dt], "shape": list(t.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # tensor data starts 8-byte aligned
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for t in tensors.values():
            data = t.detach().to(device="cpu", dtype=target(t)).contiguous().reshape(-1)  # (numel,)
            f.write(memoryview(data.view(torch.uint8).numpy()))
    os.replace(tmp, path)


def adapter_records(model: nn.Module, info: ModelInfo | None) -> list[AdapterRecord]:
    """Records for the adapters attached to model.driving (from info when it has them) and unattached ones."""
    known = {a.name: a for a in info.adapters} if info is not None else {}
    records = []
    for name, module in model.driving.items():
        if name in known:
            records.append(known[name])
            continue
        type_name = getattr(module, "adapter_type", None)
        spec = adapter_spec(type_name) if type_name else None
        if spec is None:
            raise CheckpointError(f"driving adapter {name!r} ({type(module).__name__}) has no registered type, so "
                                  "it cannot be saved; give the class an `adapter_type` and call register_adapter")
        records.append(AdapterRecord(name, type_name, spec.config_of(module)))
    records += [a for a in known.values() if not a.attached]
    return records


def save_knot_model(model: nn.Module, path: str | Path, info: ModelInfo | None = None, *,
                    dtype: torch.dtype | None = None, sampler: SamplerDefaults | None = None) -> None:
    """Write model (a KnotDiT, adapters included) in our format; info supplies the sampler defaults,
    the source description and any adapter weights whose class is not registered."""
    cfg: DiTConfig = model.cfg
    sampler = sampler or (info.sampler if info is not None else SamplerDefaults(StreamConfig()))
    source = {"format": info.format, "lora_merged": info.lora_merged, "lora_scale": info.lora_scale,
              "loop": info.loop, "loop_source": info.loop_source} if info else {}
    tensors = dict(model.state_dict())
    if info is not None:
        tensors.update(info.unattached)
    meta = metadata_json(cfg, adapter_records(model, info), sampler, source)
    write_safetensors(path, tensors, {KNOT_METADATA_KEY: meta}, dtype=dtype)
    log.info("wrote %s (%d tensors)", path, len(tensors))
