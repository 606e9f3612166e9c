"""Checkpoint formats: detection from tensor names/shapes/metadata, key maps, architecture from shapes.

Everything here works on a `{key: shape}` table plus the file's metadata, never on tensors or
filenames, so a 5 GB checkpoint is recognised from its header alone. Formats (FIELD_NOTES §3):
Wan2.1 native, ComfyUI (`model.diffusion_model.`, optional `causal_ar` metadata), Self Forcing
family `.pt` (`generator`/`generator_ema`, `model.` and FSDP wrapper segments), LongLive (base +
PEFT LoRA), AvatarForcing (33-channel DiT with un-merged PEFT LoRA and an audio adapter), a bare
LoRA, and our own `knot_forcing` safetensors. The canonical key space is Wan2.1's
(`wan/modules/model.py`), which `KnotDiT` uses as is.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .config import COND_EXTRA_CHANNELS, LATENT_CHANNELS, DiTConfig
from .errors import CheckpointError

Shapes = Mapping[str, Sequence[int]]

KNOT_METADATA_KEY = "knot_forcing"
WAN_HEAD_DIM = 128  # every Wan2.1 size (1.3B: 12 x 128, 14B: 40 x 128)
DEFAULT_TEXT_LEN = 512  # umT5 context length Wan was trained with; not visible in the shapes
# Segments training wrappers insert anywhere in a key (FSDP, activation checkpointing, torch.compile).
WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
# Top-level sections of Self Forcing-family `.pt` files, in order of preference (EMA first, as
# their inference scripts use with --use_ema).
WEIGHT_SECTIONS = ("generator_ema", "generator")
LORA_SECTION = "generator_lora"
# Prefixes in front of the Wan keys, longest first so `model.diffusion_model.` wins over `model.`.
KNOWN_PREFIXES = ("base_model.model.model.", "base_model.model.", "model.diffusion_model.", "diffusion_model.",
                  "model.", "")
LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<side>[AB])(?:\.[A-Za-z0-9_]+)?\.weight$")
ANCHOR_KEY = "patch_embedding.weight"
ADAPTER_PREFIXES = {"audio_proj.": "avatar_audio", "audio_cond_projs.": "avatar_audio"}
LAYOUT_BY_IN_DIM = {LATENT_CHANNELS + extra: name for name, extra in COND_EXTRA_CHANNELS.items()}

# What other model files look like, so a wrong file gets a name instead of a key dump.
FOREIGN_MARKERS: tuple[tuple[str, str], ...] = (
    ("decoder.middle.0.residual.0.gamma", "a Wan VAE (put it in ComfyUI/models/vae/ and load it as the VAE)"),
    ("encoder.conv1.weight", "a Wan VAE (put it in ComfyUI/models/vae/ and load it as the VAE)"),
    ("input_blocks.0.0.weight", "a Stable Diffusion UNet (SD1.x/SDXL), not a Wan DiT"),
    ("double_blocks.0.img_attn.qkv.weight", "a Flux transformer, not a Wan DiT"),
    ("encoder.block.0.layer.0.SelfAttention.q.weight", "a T5/umT5 text encoder, not a Wan DiT"),
    ("shared.weight", "a T5/umT5 text encoder, not a Wan DiT"),
    ("img_emb.proj.0.weight", "a Wan I2V DiT with a CLIP image branch (img_emb, k_img), which this loader does "
                              "not support; use a T2V-based causal checkpoint"),
)


@dataclass(frozen=True)
class FormatSpec:
    """One row of the format table: what the format is and how its keys map to Wan's."""

    name: str
    description: str
    lora_alpha: float | None = None  # alpha of its LoRA when the file does not store it; None = rank (scale 1)
    adapters: tuple[str, ...] = ()


FORMATS: dict[str, FormatSpec] = {s.name: s for s in (
    FormatSpec("knot", "Knot Forcing model file (safetensors with knot_forcing metadata)"),
    FormatSpec("wan", "Wan2.1 native DiT weights (unprefixed Wan keys)"),
    FormatSpec("comfyui", "ComfyUI diffusion model (keys prefixed model.diffusion_model.)"),
    FormatSpec("forcing_pt", "Self Forcing-family training checkpoint (.pt generator/generator_ema, prefix model.; "
               "Self Forcing, Rolling Forcing and CausVid files are identical in layout: a Rolling Forcing file "
               "needs strategy rolling_forcing)"),
    FormatSpec("longlive", "LongLive: Self Forcing-style base with a PEFT LoRA (rank 256, alpha 256)",
               lora_alpha=None),
    FormatSpec("avatarforcing", "AvatarForcing: 33-channel DiT with un-merged PEFT LoRA (r 128, alpha 64) "
               "and an audio adapter", lora_alpha=64.0, adapters=("avatar_audio",)),
    FormatSpec("livetalk", "LiveTalk-1.3B / merged OmniAvatar-1.3B layout: 33-channel DiT with the audio adapter, "
               "Wan keys, LoRA merged (a merged AvatarForcing file looks the same: choose loop avatar_forcing)",
               adapters=("avatar_audio",)),
    FormatSpec("lora", "a LoRA delta without base weights"),
)}


@dataclass(frozen=True)
class LoraInfo:
    """A LoRA found in a file: where it sits, its rank, and how many Linear layers it targets."""

    placement: str  # "inline" (PEFT base_layer next to lora_A/B), "section" (generator_lora), "file" (bare)
    rank: int
    targets: int
    alpha: float | None = None  # from the format table; the file never stores it


@dataclass(frozen=True)
class FormatInfo:
    """What `detect_format` found. `section`/`prefix` locate the DiT keys inside the file."""

    name: str
    description: str
    section: str = ""
    prefix: str = ""
    causal: bool | None = None
    lora: LoraInfo | None = None
    adapters: tuple[str, ...] = ()
    knot_metadata: dict = field(default_factory=dict)
    keys: int = 0

    @property
    def spec(self) -> FormatSpec:
        return FORMATS[self.name]


def _strip_wrappers(key: str) -> str:
    for seg in WRAPPER_SEGMENTS:
        key = key.replace(seg, "")
    return key


def _sections(keys: Sequence[str]) -> set[str]:
    return {k.split(".", 1)[0] for k in keys if k.split(".", 1)[0] in (*WEIGHT_SECTIONS, LORA_SECTION)}


def describe_keys(keys: Sequence[str], count: int = 4) -> str:
    """'N tensors, e.g. a, b, c' for error messages."""
    sample = ", ".join(sorted(keys)[:count])
    return f"{len(keys)} tensors, e.g. {sample}" if keys else "no tensors"


def section_keys(shapes: Shapes, section: str) -> dict[str, Sequence[int]]:
    """Keys of one section with the section name and wrapper segments removed."""
    head = section + "." if section else ""
    return {_strip_wrappers(k[len(head):]): s for k, s in shapes.items() if k.startswith(head)}


def find_prefix(keys: Sequence[str]) -> str | None:
    """The prefix in front of Wan's keys, found from the patch embedding (plain or PEFT base_layer)."""
    anchors = (ANCHOR_KEY, "patch_embedding.base_layer.weight")
    for prefix in KNOWN_PREFIXES:
        if any(prefix + a in keys for a in anchors):
            return prefix
    return None


def canonical_key(key: str, prefix: str) -> str:
    """Wan key of a (section- and wrapper-stripped) file key: prefix off, PEFT base_layer folded,
    AvatarForcing's audio adapter moved under `driving.avatar_audio.`."""
    if prefix and key.startswith(prefix):
        key = key[len(prefix):]
    key = key.replace(".base_layer.", ".")
    for head, adapter in ADAPTER_PREFIXES.items():
        if key.startswith(head):
            return f"driving.{adapter}.{key}"
    return key


def lora_pairs(keys: Sequence[str]) -> dict[str, dict[str, str]]:
    """module -> {"A": key, "B": key} for every PEFT LoRA pair among the keys."""
    pairs: dict[str, dict[str, str]] = {}
    for key in keys:
        m = LORA_KEY.match(key)
        if m:
            pairs.setdefault(m["module"], {})[m["side"]] = key
    return pairs


def _lora_info(shapes: Shapes, placement: str, alpha: float | None) -> LoraInfo | None:
    pairs = lora_pairs(list(shapes))
    if not pairs:
        return None
    ranks = {shapes[p["A"]][0] for p in pairs.values() if "A" in p}
    if len(ranks) != 1 or any(len(p) != 2 for p in pairs.values()):
        broken = [m for m, p in pairs.items() if len(p) != 2][:3]
        raise CheckpointError(f"LoRA with inconsistent pairs (ranks {sorted(ranks)}, unpaired {broken}); every "
                              "lora_A needs its lora_B and one rank. The file is damaged or not a PEFT LoRA.")
    return LoraInfo(placement=placement, rank=ranks.pop(), targets=len(pairs), alpha=alpha)


def _foreign(keys: Sequence[str]) -> CheckpointError:
    stripped = [_strip_wrappers(k) for k in keys]
    for marker, what in FOREIGN_MARKERS:
        if any(k == marker or k.endswith("." + marker) for k in stripped):
            return CheckpointError(f"this file is {what}; expected a Wan2.1 DiT checkpoint "
                                   f"(with {ANCHOR_KEY} and blocks.N.self_attn.*). File: {describe_keys(keys)}")
    return CheckpointError(f"not a Wan2.1 DiT checkpoint: no {ANCHOR_KEY} under any known prefix "
                           f"({', '.join(repr(p) for p in KNOWN_PREFIXES)}). File: {describe_keys(keys)}")


def _causal_ar(metadata: Mapping[str, str]) -> bool | None:
    raw = metadata.get("config")
    if not raw:
        return None
    try:
        transformer = json.loads(raw).get("transformer", {})
    except (json.JSONDecodeError, AttributeError):
        return None
    return bool(transformer.get("causal_ar")) if isinstance(transformer, dict) and "causal_ar" in transformer \
        else None


def detect_format(shapes: Shapes, metadata: Mapping[str, str] | None = None,
                  prefer_section: str | None = None) -> FormatInfo:
    """Name the format of a checkpoint from its tensor names, shapes and metadata (never its filename).

    shapes: every tensor key of the file (nested `.pt` dicts flattened with '.', so a Self Forcing
    file shows `generator_ema.model.blocks.0...`) -> shape. prefer_section: the `.pt` section to read
    when the file has it (a model loop whose authors load `generator`, not the EMA). Raises
    CheckpointError naming what the file looks like when it is not a Wan DiT or a LoRA for one.
    """
    metadata = metadata or {}
    keys = list(shapes)
    if KNOT_METADATA_KEY in metadata:
        try:
            meta = json.loads(metadata[KNOT_METADATA_KEY])
        except json.JSONDecodeError as err:
            raise CheckpointError(f"knot_forcing metadata is not valid JSON ({err}); the file is damaged: "
                                  "convert the original checkpoint again") from err
        return FormatInfo("knot", FORMATS["knot"].description, causal=True, knot_metadata=meta,
                          adapters=tuple(a.get("type", "?") for a in meta.get("driving", [])), keys=len(keys))
    sections = _sections(keys)
    section = prefer_section if prefer_section in sections else next((s for s in WEIGHT_SECTIONS if s in sections), "")
    body = section_keys(shapes, section)
    prefix = find_prefix(list(body))
    if prefix is None:
        return _lora_only(shapes, sections, keys)
    has_inline_lora = any(".base_layer." in k for k in body)
    adapters = tuple(sorted({a for h, a in ADAPTER_PREFIXES.items() if any(k.startswith(prefix + h) for k in body)}))
    in_dim = body.get(prefix + ANCHOR_KEY, body.get(prefix + "patch_embedding.base_layer.weight"))[1]
    _check_adapter_layout(body, prefix, adapters, in_dim, has_inline_lora)
    if adapters and not has_inline_lora and not section:  # AvatarForcing's .pt always has its generator section
        name, lora = "livetalk", None
    elif has_inline_lora or adapters or (in_dim == 33 and section):
        name = "avatarforcing"
        lora = _lora_info(body, "inline", FORMATS[name].lora_alpha) if has_inline_lora else None
    elif LORA_SECTION in sections:
        name, lora = "longlive", _lora_info(section_keys(shapes, LORA_SECTION), "section", None)
    elif section or prefix == "model.":
        name, lora = "forcing_pt", None
    elif prefix == "model.diffusion_model.":
        name, lora = "comfyui", None
    else:
        name, lora = "wan", None
    causal = _causal_ar(metadata) if name in ("comfyui", "wan") else True
    return FormatInfo(name, FORMATS[name].description, section=section, prefix=prefix, causal=causal, lora=lora,
                      adapters=adapters, keys=len(keys))


def _check_adapter_layout(body: Shapes, prefix: str, adapters: tuple[str, ...], in_dim: int, inline: bool) -> None:
    """Audio-driven files that cannot be what they look like, named before any loading."""
    if adapters and in_dim != LATENT_CHANNELS + COND_EXTRA_CHANNELS["noise_ref_mask"]:
        raise CheckpointError("this file has the audio adapter (audio_proj / audio_cond_projs) but its "
                              f"patch_embedding takes {in_dim} channels; the audio-driven Wan DiTs (LiveTalk, "
                              "OmniAvatar, AvatarForcing) take 33 = [noisy 16 | reference 16 | mask 1]. The file is "
                              "damaged or mixes two models")
    if not inline and lora_pairs(list(body)) and prefix + "blocks.0.ffn.0.weight" not in body:
        raise CheckpointError("this file is a LoRA delta with an audio adapter but without the DiT's base weights "
                              "(OmniAvatar's pytorch_model.pt layout); merge it into Wan2.1-T2V-1.3B first (LiveTalk's "
                              "scripts/merge_lora.py writes the merged model.safetensors this loader reads), or use "
                              "LiveTalk-1.3B's model.safetensors")


def _lora_only(shapes: Shapes, sections: set[str], keys: Sequence[str]) -> FormatInfo:
    section = LORA_SECTION if LORA_SECTION in sections else ""
    body = section_keys(shapes, section)
    if not lora_pairs(list(body)):
        raise _foreign(keys)
    return FormatInfo("lora", FORMATS["lora"].description, section=section,
                      lora=_lora_info(body, "section" if section else "file", None), keys=len(keys))


def map_keys(shapes: Shapes, fmt: FormatInfo) -> dict[str, str]:
    """File key -> model key for the weights of a detected foreign format: keys of its section under its
    prefix, LoRA pairs left out (they are merged, not loaded). Keys outside the prefix belong to other
    models packed in the same file (ComfyUI all-in-one) and are left out too."""
    head = fmt.section + "." if fmt.section else ""
    mapping = {}
    for key in shapes:
        if not key.startswith(head):
            continue
        stripped = _strip_wrappers(key[len(head):])
        if stripped.startswith(fmt.prefix) and not LORA_KEY.match(stripped):
            mapping[key] = canonical_key(stripped, fmt.prefix)
    return mapping


def _block_count(keys: Sequence[str]) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not found or found != set(range(max(found) + 1)):
        raise CheckpointError(f"transformer blocks are missing or not numbered 0..N-1 (found {sorted(found)[:8]}); "
                              "the checkpoint is incomplete")
    return max(found) + 1


def _shape(shapes: Shapes, key: str) -> Sequence[int]:
    if key not in shapes:
        raise CheckpointError(f"tensor {key!r} is missing; a Wan2.1 DiT has it. File: {describe_keys(list(shapes))}")
    return shapes[key]


def infer_config(shapes: Shapes, *, num_heads: int | None = None, text_len: int | None = None) -> DiTConfig:
    """DiTConfig from canonical (Wan-named) shapes. num_heads is not in the shapes: Wan uses
    head_dim 128, so it is dim // 128 unless given."""
    dim, in_dim, *patch = _shape(shapes, ANCHOR_KEY)
    if in_dim not in LAYOUT_BY_IN_DIM:
        raise CheckpointError(f"patch_embedding has {in_dim} input channels; supported: "
                              + ", ".join(f"{c} ({n})" for c, n in LAYOUT_BY_IN_DIM.items()))
    if num_heads is None:
        if dim % WAN_HEAD_DIM:
            raise CheckpointError(f"dim={dim} is not a multiple of Wan's head_dim {WAN_HEAD_DIM}, so the head count "
                                  "cannot be inferred; pass num_heads= (CLI: --num-heads)")
        num_heads = dim // WAN_HEAD_DIM
    head_out = _shape(shapes, "head.head.weight")[0]
    return DiTConfig(
        dim=dim, num_heads=num_heads, num_layers=_block_count(list(shapes)),
        ffn_dim=_shape(shapes, "blocks.0.ffn.0.weight")[0], text_dim=_shape(shapes, "text_embedding.0.weight")[1],
        freq_dim=_shape(shapes, "time_embedding.0.weight")[1], out_dim=head_out // math.prod(patch),
        patch_size=tuple(patch), cond_layout=LAYOUT_BY_IN_DIM[in_dim],
        cross_attn_norm="blocks.0.norm3.weight" in shapes, text_len=text_len or DEFAULT_TEXT_LEN)
