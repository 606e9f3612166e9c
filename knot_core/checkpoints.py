"""One entry point that reads any supported DiT checkpoint into a `KnotDiT`.

`load_dit(path)` sniffs the container from its bytes (safetensors header or a PyTorch zip /
pickle), names the format from tensor names, shapes and metadata (`checkpoint_formats`), maps
keys to Wan2.1's, merges LoRAs (`lora`), rebuilds driving adapters, and loads strictly into a
model built on the meta device (`load_state_dict(assign=True)`, one tensor converted at a time,
so host memory holds one copy of the weights). `.pt` files are read with
`torch.load(weights_only=True)`: never unpickled. Weight-compatible with Wan2.1-T2V-1.3B,
ComfyUI (incl. `causal_ar`), Self Forcing / CausVid / Rolling Forcing, LongLive and AvatarForcing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import pickle
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from .checkpoint_formats import (
    LORA_SECTION,
    FormatInfo,
    describe_keys,
    detect_format,
    infer_config,
    lora_pairs,
    map_keys,
    section_keys,
)
from .config import DTYPES, DiTConfig
from .dit import KnotDiT
from .errors import CheckpointError
from .lora import collect_lora, lora_scale, merge_lora
from .model_file import (
    FORMAT_SAMPLERS,
    AdapterRecord,
    ModelInfo,
    adapter_spec,
    parse_metadata,
    save_knot_model,
)
from .model_loops import LOOPS, SAME_LAYOUT, detected_loop, get_loop

log = logging.getLogger(__name__)

__all__ = ["CheckpointFile", "ModelInfo", "check_text", "describe_dit", "detect_format", "load_dit",
           "load_text_embedding", "open_checkpoint", "save_knot_model"]

MODEL_FOLDERS = "ComfyUI/models/diffusion_models/ (ComfyUI) or models/knot_forcing/ (command line)"
MODEL_SOURCES = ("a Knot Forcing model file made with `python -m knot_core convert IN OUT` from a checkpoint you "
                 "obtained: Wan2.1-T2V-1.3B, ComfyUI causal Wan, Self Forcing / CausVid / Rolling Forcing .pt, "
                 "LongLive base + LoRA, or AvatarForcing (nothing is downloaded automatically)")
TEXT_KEYS = ("context", "text_embeds", "text_embedding", "prompt_embeds", "embeds")
MAX_HEADER = 100 * 2**20


@dataclass
class CheckpointFile:
    """A checkpoint opened for reading: names, shapes and metadata; tensors are read on demand."""

    path: Path
    container: str  # "safetensors" or "torch"
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    metadata: dict[str, str] = field(default_factory=dict)
    tensors: dict[str, Tensor] | None = None  # torch container: memory-mapped tensors

    @contextlib.contextmanager
    def reader(self) -> Iterator:
        """A function key -> Tensor (CPU, stored dtype) valid inside the block."""
        if self.tensors is not None:
            yield self.tensors.__getitem__
            return
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt", device="cpu") as f:
            yield f.get_tensor


def missing_file_error(path: Path, what: str = "DiT checkpoint") -> CheckpointError:
    return CheckpointError(f"{what} not found: {path}. Put it in {MODEL_FOLDERS}, or pass its full path. "
                           f"Expected file: {MODEL_SOURCES}.")


def _read_safetensors(path: Path, size: int, header_len: int) -> CheckpointFile:
    if 8 + header_len > size:
        raise CheckpointError(f"{path} is a truncated safetensors file: its header needs {header_len} bytes, the "
                              f"file has {size - 8} after the length field (incomplete download?); get it again")
    with open(path, "rb") as f:
        f.seek(8)
        raw = f.read(header_len)
    # errors name the file and the problem, never what the file holds (a node may be pointed at any file in a
    # models folder, and a server's errors reach whoever queued the prompt)
    damaged = CheckpointError(f"{path}: safetensors header is damaged (not a table of tensors); get the file again")
    try:
        header = json.loads(raw)
        metadata = header.pop("__metadata__", None) or {}
        end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
        shapes = {k: tuple(int(n) for n in v["shape"]) for k, v in header.items()}
        dtypes = {k: str(v["dtype"]) for k, v in header.items()}
    except (ValueError, UnicodeDecodeError, AttributeError, KeyError, IndexError, TypeError):
        raise damaged from None
    if not isinstance(metadata, dict):
        raise damaged
    if 8 + header_len + end > size:
        raise CheckpointError(f"{path} is a truncated safetensors file: its header lists {end} bytes of tensor data "
                              f"but only {size - 8 - header_len} are present (incomplete download or copy?); get it "
                              "again")
    return CheckpointFile(path, "safetensors", shapes, dtypes, metadata)


def _flatten(obj: Mapping, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
    for key, value in obj.items():
        if isinstance(value, Tensor):
            yield prefix + str(key), value
        elif isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")


def _read_torch(path: Path, zipped: bool) -> CheckpointFile:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as err:
        # only the name of the class it refers to (identifier characters): never free text from the file
        named = re.search(r"GLOBAL ([A-Za-z_][\w.]{0,100})", str(err))
        what = f" (this one refers to {named.group(1)})" if named else ""
        raise CheckpointError(
            f"{path} holds pickled Python objects besides tensors, so it was not loaded: unpickling can run "
            f"arbitrary code{what}. Expected a weights-only .pt (dicts of tensors, e.g. {{'generator': state_dict}}) "
            "or a .safetensors file; re-save only the state dict from trusted code.") from None
    except Exception as err:  # noqa: BLE001 — whatever a damaged file makes torch raise (SafetensorError too,
        # for a pickle named .safetensors), it is one line naming the file, never a traceback
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}); the file may be "
                              "truncated: get it again") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a dict of tensors (a state dict)")
    tensors = dict(_flatten(obj))
    return CheckpointFile(path, "torch", {k: tuple(t.shape) for k, t in tensors.items()},
                          {k: str(t.dtype).removeprefix("torch.") for k, t in tensors.items()}, tensors=tensors)


def open_checkpoint(path: str | Path, what: str = "DiT checkpoint") -> CheckpointFile:
    """Open a checkpoint, telling the container from its first bytes (never its name)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise missing_file_error(path, what)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    if len(head) > 8 and head[8:9] == b"{" and 0 < header_len < MAX_HEADER:
        return _read_safetensors(path, size, header_len)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return _read_torch(path, zipped=head[:2] == b"PK")
    raise CheckpointError(f"{path} ({size} bytes) is neither a safetensors file nor a PyTorch checkpoint; "
                          f"expected {what} as .safetensors or .pt")


@dataclass(frozen=True)
class LoadPlan:
    """How to turn a file into a KnotDiT: which file key becomes which model key, and what to merge."""

    file: CheckpointFile
    fmt: FormatInfo
    info: ModelInfo
    key_map: dict[str, str]  # file key -> model key (attached weights)
    unattached: dict[str, str]  # file key -> model key of adapters without a registered class
    loras: tuple[tuple[CheckpointFile, dict[str, str], float], ...] = ()  # (file, stripped -> file key, scale)


def _stripped(file: CheckpointFile, section: str) -> dict[str, str]:
    """Section- and wrapper-stripped key -> file key."""
    head = section + "." if section else ""
    originals = [k for k in file.shapes if k.startswith(head)]
    return dict(zip(section_keys({k: file.shapes[k] for k in originals}, section), originals, strict=True))


def _lora_keys(file: CheckpointFile, section: str) -> dict[str, str]:
    stripped = _stripped(file, section)
    return {k: stripped[k] for sides in lora_pairs(list(stripped)).values() for k in sides.values()}


def _foreign_plan(file: CheckpointFile, fmt: FormatInfo, *, num_heads: int | None,
                  text_len: int | None) -> tuple[DiTConfig, dict[str, str], list[AdapterRecord], dict[str, str]]:
    mapping = map_keys(file.shapes, fmt)
    skipped = len(file.shapes) - len(mapping) - len(_lora_keys(file, fmt.section))
    if skipped and fmt.prefix:
        log.info("ignoring %d tensors outside %r (other models or training state in the file)", skipped, fmt.prefix)
    shapes = {m: file.shapes[k] for k, m in mapping.items()}
    config = infer_config({k: s for k, s in shapes.items() if not k.startswith("driving.")},
                          num_heads=num_heads, text_len=text_len)
    adapters, unattached = [], {}
    for name in sorted({m.split(".")[1] for m in mapping.values() if m.startswith("driving.")}):
        own = {m[len(f"driving.{name}."):]: shapes[m] for m in shapes if m.startswith(f"driving.{name}.")}
        spec = adapter_spec(name)
        if spec is None:
            log.warning("driving adapter %r is not available (knot_core.adapters not installed?); its %d tensors "
                        "are kept unattached and written by convert", name, len(own))
            unattached.update({k: m for k, m in mapping.items() if m.startswith(f"driving.{name}.")})
            adapters.append(AdapterRecord(name, name, {}, attached=False))
        else:
            adapters.append(AdapterRecord(name, name, spec.config_from_shapes(own, config)))
    key_map = {k: m for k, m in mapping.items() if k not in unattached}
    return config, key_map, adapters, unattached


def _detect(file: CheckpointFile, prefer_section: str | None = None) -> FormatInfo:
    """detect_format, its refusal naming the file."""
    try:
        return detect_format(file.shapes, file.metadata, prefer_section=prefer_section)
    except CheckpointError as err:
        raise CheckpointError(f"{err} (file: {file.path})") from err


def plan_load(path: str | Path, *, num_heads: int | None = None, text_len: int | None = None,
              lora: str | Path | None = None, lora_alpha: float | None = None,
              cond_layout: str | None = None, loop: str | None = None) -> LoadPlan:
    """Read headers only and decide everything a load will do; raises CheckpointError on any mismatch."""
    file = open_checkpoint(path)
    if loop is not None and loop not in LOOPS:
        get_loop(loop, "")  # raises: names the known loops
    fmt = _detect(file, prefer_section=LOOPS[loop].weights_section if loop else None)
    if fmt.name == "lora":
        raise CheckpointError(f"{file.path} is a LoRA without base weights ({fmt.lora.targets} low-rank pairs, rank "
                              f"{fmt.lora.rank}); pass the base DiT checkpoint as the model and this file as "
                              "lora= (CLI: --lora)")
    loras: list[tuple[CheckpointFile, dict[str, str], float]] = []
    name, description, source = fmt.name, fmt.description, {}
    if fmt.name == "knot":
        config, adapters, sampler, source = parse_metadata(fmt.knot_metadata)
        if source.get("format"):
            description += f", converted from {source['format']}"
        attached = {f"driving.{a.name}." for a in adapters if adapter_spec(a.type) is not None}
        adapters = tuple(a if f"driving.{a.name}." in attached else replace(a, attached=False) for a in adapters)
        unattached = {k: k for k in file.shapes if k.startswith("driving.") and
                      not any(k.startswith(p) for p in attached)}
        key_map = {k: k for k in file.shapes if k not in unattached}
    else:
        config, key_map, adapters, unattached = _foreign_plan(file, fmt, num_heads=num_heads, text_len=text_len)
        sampler = FORMAT_SAMPLERS.get(fmt.name, FORMAT_SAMPLERS["wan"])
        if fmt.lora is not None:
            lora_section = fmt.section if fmt.lora.placement == "inline" else LORA_SECTION
            loras.append((file, _lora_keys(file, lora_section), lora_scale(fmt.lora, lora_alpha)))
    if lora is not None:
        lfile = open_checkpoint(lora, what="LoRA file")
        lfmt = _detect(lfile)
        if lfmt.lora is None or lfmt.name not in ("lora", "longlive"):
            raise CheckpointError(f"{lfile.path} was given as a LoRA but is {lfmt.description}; expected a PEFT LoRA "
                                  "(lora_A/lora_B pairs, e.g. LongLive's lora.pt)")
        section = lfmt.section if lfmt.name == "lora" else LORA_SECTION
        loras.append((lfile, _lora_keys(lfile, section), lora_scale(lfmt.lora, lora_alpha)))
        if fmt.name == "forcing_pt":
            name, description = "longlive", "LongLive: Self Forcing-style base + PEFT LoRA file"
            sampler = FORMAT_SAMPLERS["longlive"]
    if cond_layout is not None and cond_layout != config.cond_layout:
        raise CheckpointError(f"{file.path} has in_dim {config.in_dim} ({config.cond_layout}), but the chosen "
                              f"conditioning {cond_layout!r} needs in_dim "
                              f"{replace(config, cond_layout=cond_layout).in_dim}; use a checkpoint trained for it "
                              "or choose the checkpoint's own layout")
    model_shapes = {m: file.shapes[k] for k, m in key_map.items()}
    canonical = dict(model_shapes)
    for lfile, keys, _ in loras:
        collect_lora({k: lfile.shapes[o] for k, o in keys.items()}, canonical)
    float_dtypes = [file.dtypes[k] for k in key_map if file.dtypes[k].upper() in ("F32", "F16", "BF16", "FLOAT32",
                                                                                      "FLOAT16", "BFLOAT16")]
    info = ModelInfo(
        format=name, description=description, config=config, sampler=sampler, adapters=tuple(adapters),
        lora_merged=bool(loras) or bool(source.get("lora_merged")),
        lora_scale=loras[0][2] if loras else source.get("lora_scale"),
        causal=fmt.causal, dtype=_torch_dtype(max(set(float_dtypes), key=float_dtypes.count) if float_dtypes else ""),
        param_count=sum(math.prod(s) for s in model_shapes.values()), path=str(file.path))
    return LoadPlan(file, fmt, _with_loop(info, fmt, loop, source), key_map, unattached, tuple(loras))


def _with_loop(info: ModelInfo, fmt: FormatInfo, loop: str | None, source: dict) -> ModelInfo:
    """The recommendation: a loop the user chose, else the one the file names (or recorded when converted),
    else the format's defaults; files shared by several public models list their loops."""
    same = SAME_LAYOUT.get(source.get("format", fmt.name), ())
    if loop:
        return replace(info, sampler=get_loop(loop, info.config.cond_layout).sampler, loop=loop,
                       loop_source="chosen", same_layout=same)
    if fmt.name == "knot":
        return replace(info, loop=source.get("loop", ""), loop_source=source.get("loop_source", ""), same_layout=same)
    found = detected_loop(fmt.name, fmt.causal)
    if found is None:
        return replace(info, same_layout=same)
    return replace(info, sampler=get_loop(found, info.config.cond_layout).sampler, loop=found, loop_source="detected")


def _torch_dtype(name: str) -> torch.dtype:
    table = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    return table.get(name.upper(), getattr(torch, name.lower(), torch.float32) if name else torch.float32)


def describe_dit(path: str | Path, **kwargs) -> ModelInfo:
    """ModelInfo of a checkpoint from its headers alone (what `inspect` prints); same options as load_dit."""
    return plan_load(path, **kwargs).info


def _build(info: ModelInfo) -> KnotDiT:
    with torch.device("meta"):
        model = KnotDiT(info.config)
        for a in info.adapters:
            if a.attached:
                model.add_adapter(a.name, adapter_spec(a.type).build(a.config, info.config))
    return model


def _check_keys(model: KnotDiT, shapes: Mapping[str, tuple[int, ...]], fmt: FormatInfo, path: Path) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != tuple(shapes[k]))
    if missing or unexpected or wrong:
        parts = [f"{label} ({len(keys)}): {', '.join(keys[:4])}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        if wrong:
            parts.append(f"e.g. {wrong[0]} is {tuple(shapes[wrong[0]])}, model needs {expected[wrong[0]]}")
        raise CheckpointError(f"{path} ({fmt.description}) does not match the architecture read from it "
                              f"(dim {model.cfg.dim}, {model.cfg.num_layers} layers, in_dim {model.cfg.in_dim}): "
                              + "; ".join(parts) + ". The file is incomplete or a variant this loader does not know.")


def load_dit(path: str | Path, *, dtype: torch.dtype | str = torch.bfloat16, device: torch.device | str = "cpu",
             num_heads: int | None = None, text_len: int | None = None, lora: str | Path | None = None,
             lora_alpha: float | None = None, cond_layout: str | None = None,
             loop: str | None = None) -> tuple[KnotDiT, ModelInfo]:
    """Load any supported DiT checkpoint as an eval-mode KnotDiT in dtype on device.

    num_heads: head count for files that do not store it (default dim // 128, Wan's head_dim).
    lora / lora_alpha: a separate LoRA file to merge (LongLive) and its alpha (default: the format's
    known value, else the rank). cond_layout: the layout the caller needs; a file with another
    in_dim is rejected. loop: a public model's loop (`model_loops.LOOPS`) whose settings replace the
    file's recommendation, for files several models share. Returns (model, info); info carries format,
    config, adapters, LoRA state and the recommended sampler settings.
    """
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise CheckpointError(f"dtype={dtype!r}; choose one of {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    plan = plan_load(path, num_heads=num_heads, text_len=text_len, lora=lora, lora_alpha=lora_alpha,
                     cond_layout=cond_layout, loop=loop)
    model = _build(plan.info)
    _check_keys(model, {m: plan.file.shapes[k] for k, m in plan.key_map.items()}, plan.fmt, plan.file.path)
    targets: set[str] = set()
    for _, keys, _ in plan.loras:
        targets |= set(collect_lora(dict.fromkeys(keys), {m: None for m in plan.key_map.values()}))

    def convert(t: Tensor, key: str) -> Tensor:
        # LoRA targets stay in their stored precision until merged in float32
        keep = t.dtype if key in targets or not t.is_floating_point() else dtype
        return t.to(device=device, dtype=keep)

    state: dict[str, Tensor] = {}
    unattached: dict[str, Tensor] = {}
    with plan.file.reader() as get:
        for k, m in plan.key_map.items():
            state[m] = convert(get(k), m)
        for k, m in plan.unattached.items():
            t = get(k)
            unattached[m] = t.to(dtype) if t.is_floating_point() else t
    for lfile, keys, scale in plan.loras:
        with lfile.reader() as get:
            merge_lora(state, collect_lora({k: get(o) for k, o in keys.items()}, state), scale, dtype)
    model.load_state_dict(state, strict=True, assign=True)
    model.requires_grad_(False).eval()
    info = replace(plan.info, dtype=dtype, unattached=unattached)
    log.info("loaded %s (%s): dim %d, %d layers, in_dim %d, %.1fM params, %s", plan.file.path, info.format,
             info.config.dim, info.config.num_layers, info.config.in_dim, info.param_count / 1e6, dtype)
    return model, info


def load_text_embedding(path: str | Path, *, text_dim: int = 4096, max_len: int = 512) -> Tensor:
    """umT5 text embeddings from a .safetensors file -> float32 [1, L, text_dim].

    The file holds one tensor (any name) or several with one named context / text_embeds / ...;
    shape [L, text_dim] or [1, L, text_dim] with L <= max_len (Wan pads to 512).
    """
    file = open_checkpoint(path, what="text embedding file")
    keys = list(file.shapes)
    key = keys[0] if len(keys) == 1 else next((k for k in TEXT_KEYS if k in file.shapes), None)
    if key is None:
        raise CheckpointError(f"{file.path} holds {describe_keys(keys)}; expected one tensor, or one named "
                              f"{' / '.join(TEXT_KEYS)}, with umT5 embeddings [L, {text_dim}]")
    shape = file.shapes[key]
    ok = (len(shape) == 2 or (len(shape) == 3 and shape[0] == 1)) and shape[-1] == text_dim
    if not ok or not 1 <= shape[-2] <= max_len:
        raise CheckpointError(f"text embedding {key!r} in {file.path} has shape {list(shape)}; expected "
                              f"[L, {text_dim}] or [1, L, {text_dim}] with 1 <= L <= {max_len} "
                              "(umT5-XXL output of the prompt)")
    with file.reader() as get:
        text = get(key).float()
    if not torch.isfinite(text).all():
        raise CheckpointError(f"text embedding {key!r} in {file.path} holds NaN or infinite values; encode the "
                              "prompt again (umT5-XXL)")
    return text.reshape(1, shape[-2], text_dim)  # (1, L, text_dim)


def check_text(info: ModelInfo, text: Tensor | None) -> Tensor | None:
    """Validate text embeddings [1, L, text_dim] for this model; warn when a text-conditioned model gets none."""
    if text is None:
        log.warning("no text embedding given: %s is text-conditioned and will run on zero embeddings "
                    "(an empty prompt); pass a umT5 embedding file for prompt control", info.format)
        return None
    if not torch.isfinite(text).all():
        raise CheckpointError("text embedding holds NaN or infinite values; encode the prompt again (umT5-XXL)")
    if text.ndim != 3 or text.shape[-1] != info.config.text_dim or text.shape[1] > info.config.text_len:
        raise CheckpointError(f"text embedding has shape {list(text.shape)}; this model needs [B, L, "
                              f"{info.config.text_dim}] with L <= {info.config.text_len}")
    return text
