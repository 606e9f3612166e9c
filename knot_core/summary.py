"""Human-readable summary of a checkpoint's ModelInfo (what `python -m knot_core inspect` prints)."""

from __future__ import annotations

from .model_file import ModelInfo

LAYOUT_TEXT = {
    "noise": "[noisy 16] (T2V)",
    "noise_ref_mask": "[noisy 16 | reference latent 16 | mask 1] (AvatarForcing-style inpainting)",
    "noise_mask_latent": "[noisy 16 | mask 4 | known latent 16] (Wan I2V-style)",
}


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else "yes" if value else "no"


def _scaled(count: int) -> str:
    return f"{count / 1e9:.2f} B" if count >= 1e9 else f"{count / 1e6:.2f} M"


def _sink_detail(s) -> str:
    """Loop settings that only some strategies use, shown where they apply."""
    parts = [f"sink_positions {s.sink_positions}"] if s.strategy == "longlive" else []
    parts += [f"commit_window_len {s.commit_window_len}"] if s.commit_window_len else []
    return "".join(f", {p}" for p in parts)


def summary_lines(info: ModelInfo) -> list[tuple[str, str]]:
    """(label, text) rows describing the model."""
    cfg, s = info.config, info.sampler.stream
    adapters = ", ".join(f"{a.name} ({a.type}{'' if a.attached else ', weights kept; adapter class not installed'})"
                         for a in info.adapters) or "none"
    lora = f"merged (scale alpha/r = {info.lora_scale:g})" if info.lora_merged and info.lora_scale is not None \
        else "merged" if info.lora_merged else "none"
    patch = "x".join(map(str, cfg.patch_size))
    sampler = (f"strategy {s.strategy}, chunk_len {s.chunk_len}, knot_len {s.knot_len}, window_len {s.window_len}, "
               f"sink_len {s.sink_len}{_sink_detail(s)}, steps {','.join(map(str, s.steps))}, shift {s.shift:g}, "
               f"fps {info.sampler.fps}, resolution {info.sampler.resolution[0]}x{info.sampler.resolution[1]}"
               + _loop_details(info))
    return [
        ("file", info.path),
        ("format", f"{info.format}: {info.description}"),
        ("causal", _yes_no(info.causal)),
        ("architecture", f"dim {cfg.dim}, layers {cfg.num_layers}, heads {cfg.num_heads} (head_dim {cfg.head_dim}), "
                         f"ffn_dim {cfg.ffn_dim}, freq_dim {cfg.freq_dim}, out_dim {cfg.out_dim}, patch {patch}"),
        ("conditioning", f"in_dim {cfg.in_dim}, layout {cfg.cond_layout} {LAYOUT_TEXT[cfg.cond_layout]}"),
        ("text", f"umT5 [{cfg.text_len}, {cfg.text_dim}] (zeros when no embedding is given)"),
        ("driving", adapters),
        ("lora", lora),
        ("parameters", f"{info.param_count:,} ({_scaled(info.param_count)})"),
        ("dtype", str(info.dtype).removeprefix("torch.")),
        ("loop", _loop_line(info)),
        ("sampler", sampler),
    ]


def _loop_details(info: ModelInfo) -> str:
    """The settings a peer's loop changes from our defaults, only where they differ."""
    s, parts = info.sampler.stream, []
    if s.first_chunk_steps:
        parts.append(f"first_chunk_steps {','.join(map(str, s.first_chunk_steps))}")
    for name, default in (("timestep_dtype", "float32"), ("reference_pin", "noised")):
        if getattr(s, name) != default:
            parts.append(f"{name} {getattr(s, name)}")
    if info.sampler.audio_alignment != "avatarforcing":
        parts.append(f"audio_alignment {info.sampler.audio_alignment}")
    return "".join(", " + p for p in parts)


def _loop_line(info: ModelInfo) -> str:
    how = {"detected": "named by the file", "chosen": "chosen by the user"}.get(info.loop_source, "")
    text = f"{info.loop} ({how})" if info.loop and how else info.loop or "the format's defaults"
    if info.same_layout and info.loop_source != "chosen":
        text += f"; files of {', '.join(info.same_layout)} have this same layout: name one with loop= (--loop)"
    return text


def format_summary(info: ModelInfo) -> str:
    rows = summary_lines(info)
    width = max(len(label) for label, _ in rows) + 1
    return "\n".join(f"{label + ':':<{width}} {text}" for label, text in rows)
