"""Typed configuration: the DiT architecture and the streaming sampler.

`DiTConfig` describes a Wan2.1-style DiT (Wan2.1-T2V-1.3B by default) plus the
conditioning-channel layout of inpainting variants; `StreamConfig` holds every
setting of the chunk loop (Knot Forcing, arXiv 2512.21734, and the peers' modes).
Derived sizes are properties; `__post_init__` validates with messages that name
the setting, the value got and the allowed range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import torch

from .errors import ConfigError

LATENT_CHANNELS = 16  # Wan2.1 VAE z_dim
VAE_STRIDE = (4, 8, 8)  # (time, height, width) compression of the Wan2.1 VAE
FRAMES_PER_LATENT = VAE_STRIDE[0]  # video frames per latent frame after the first
# Weight precisions by the name every front end uses (--dtype, the loaders' dtype widget, job files)
DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPE_NAMES: tuple[str, ...] = tuple(DTYPES)


def video_frames_for(latent_frames: int) -> int:
    """Video frames decoded from a stream of latent frames (Wan2.1 VAE: 1 + 4(T - 1))."""
    return 1 + FRAMES_PER_LATENT * (latent_frames - 1) if latent_frames > 0 else 0


def latent_frames_for(video_frames: int) -> int:
    """Latent frames needed to decode at least `video_frames` frames (the inverse of video_frames_for, rounded up)."""
    return 1 + -(-(video_frames - 1) // FRAMES_PER_LATENT) if video_frames > 0 else 0

# Channel order of the DiT input, per layout (the noisy latent always comes first):
#   noise            [noisy 16]                                    (T2V, Self Forcing family)
#   noise_ref_mask   [noisy 16 | known/reference latent 16 | mask 1] (AvatarForcing, 33)
#   noise_mask_latent [noisy 16 | mask 4 | known latent 16]          (Wan I2V, 36)
CondLayout = Literal["noise", "noise_ref_mask", "noise_mask_latent"]
COND_EXTRA_CHANNELS: dict[str, int] = {"noise": 0, "noise_ref_mask": LATENT_CHANNELS + 1,
                                       "noise_mask_latent": 4 + LATENT_CHANNELS}

Strategy = Literal["knot", "self_forcing", "longlive", "rolling_forcing", "avatar_forcing"]
STRATEGIES: tuple[str, ...] = ("knot", "self_forcing", "longlive", "rolling_forcing", "avatar_forcing")
ROLLING_STRATEGIES = ("rolling_forcing", "avatar_forcing")  # one joint forward over chunks at staggered levels
# Where a frame sink sits (LongLive ships two causal models): "relative" re-indexes it just before
# the window ("infinity" model); "absolute" keeps its own indices 0..sink_len-1 (default model; LiveTalk).
SinkPositions = Literal["relative", "absolute"]
SINK_POSITIONS: tuple[str, ...] = ("relative", "absolute")
# Precision of the timesteps the model is given (LiveTalk feeds bf16: 937.5 is seen as 936).
TIMESTEP_DTYPES: tuple[str, ...] = ("float32", "bfloat16")
# How known frames (the reference at latent 0) enter the noisy input between steps: re-noised to the
# step's level (ours), or written clean (LiveTalk's `noisy_input[:, :1] = ref` before every step).
REFERENCE_PINS: tuple[str, ...] = ("noised", "clean")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def parse_steps(value: str | Sequence[int]) -> tuple[int, ...]:
    """Denoising steps from a flag, widget or job file: "1000, 750,500" or [1000, 750, 500] -> (1000, 750, 500)."""
    try:
        parts = value.replace(" ", "").split(",") if isinstance(value, str) else list(value)
        return tuple(int(part) for part in parts if part != "")
    except (TypeError, ValueError) as err:
        raise ConfigError(f"steps={value!r}; give comma-separated integers in (0, 1000], e.g. 1000,750,500,250") \
            from err


@dataclass(frozen=True)
class DiTConfig:
    """Architecture of a Wan2.1 DiT; field names follow Wan's constructor."""

    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    out_dim: int = LATENT_CHANNELS
    patch_size: tuple[int, int, int] = (1, 2, 2)
    cond_layout: CondLayout = "noise"
    cross_attn_norm: bool = True
    eps: float = 1e-6
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        _check(self.cond_layout in COND_EXTRA_CHANNELS,
               f"cond_layout={self.cond_layout!r}; allowed: {sorted(COND_EXTRA_CHANNELS)}")
        _check(self.dim > 0 and self.num_heads > 0 and self.dim % self.num_heads == 0,
               f"dim={self.dim} must be a positive multiple of num_heads={self.num_heads}")
        _check(self.head_dim % 2 == 0 and self.head_dim >= 6,
               f"head_dim={self.head_dim} (dim/num_heads) must be even and >= 6 for 3D RoPE")
        _check(self.num_layers >= 1, f"num_layers={self.num_layers}; must be >= 1")
        _check(self.patch_size[0] == 1, f"patch_size={self.patch_size}; temporal patch must be 1 "
               "(one latent frame per token row, as every causal Wan checkpoint uses)")

    @property
    def in_dim(self) -> int:
        return LATENT_CHANNELS + COND_EXTRA_CHANNELS[self.cond_layout]

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def rope_dims(self) -> tuple[int, int, int]:
        """Head dims rotated by frame, row and column (Wan: 44/42/42 of 128)."""
        hw = 2 * (self.head_dim // 6)
        return self.head_dim - 2 * hw, hw, hw

    @property
    def spatial_stride(self) -> int:
        """Pixels per token side: VAE stride times patch size."""
        return VAE_STRIDE[1] * self.patch_size[1]

    def grid(self, latent_height: int, latent_width: int) -> tuple[int, int]:
        """Token grid (rows, cols) of one latent frame."""
        ph, pw = self.patch_size[1:]
        if latent_height % ph or latent_width % pw:
            raise ConfigError(
                f"latent size {latent_height}x{latent_width} is not divisible by the patch {ph}x{pw}; "
                f"use a video size that is a multiple of {self.spatial_stride} pixels")
        return latent_height // ph, latent_width // pw

    def tokens_per_frame(self, latent_height: int, latent_width: int) -> int:
        rows, cols = self.grid(latent_height, latent_width)
        return rows * cols


PRESETS: dict[str, DiTConfig] = {
    "wan2.1-t2v-1.3b": DiTConfig(),
    "wan2.1-1.3b-noise-ref-mask": DiTConfig(cond_layout="noise_ref_mask"),
    "wan2.1-1.3b-noise-mask-latent": DiTConfig(cond_layout="noise_mask_latent"),
    "tiny": DiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, freq_dim=32, text_dim=32, text_len=8),
    "tiny-noise-ref-mask": DiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, freq_dim=32,
                                     text_dim=32, text_len=8, cond_layout="noise_ref_mask"),
    "tiny-noise-mask-latent": DiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, freq_dim=32,
                                        text_dim=32, text_len=8, cond_layout="noise_mask_latent"),
}


def preset(name: str) -> DiTConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name]


@dataclass(frozen=True)
class StreamConfig:
    """Settings of the chunk loop. Names are shared by the CLI flags and node widgets.

    chunk_len (c): latent frames committed per chunk. knot_len (k): extra frames denoised
    at the chunk's end, never output or cached, handed to the next chunk. window_len (L):
    committed latent frames kept as local attention context. ahead_init / ahead_step
    (n_init / s): the running-ahead reference index and its increment. sink_positions:
    where a frame sink sits (longlive). commit_window_len (rolling_forcing): frames the clean
    commit pass sees as a plain sliding window, sink included (0 = what the denoise pass sees).
    Who sees what, per strategy: engine/visibility.py. first_chunk_steps: the steps of chunk 0
    when they differ (Causal Forcing++ runs block 0 with the 4-step list). timestep_dtype: the
    timesteps as the model is given them (LiveTalk: bfloat16, 937.5 -> 936). reference_pin:
    "clean" writes the known reference latent into the input of every step (LiveTalk), "noised"
    re-noises it with the chunk. Named sets of these for public checkpoints: model_loops.py.
    """

    strategy: Strategy = "knot"
    chunk_len: int = 3
    knot_len: int = 1
    window_len: int = 6
    steps: tuple[int, ...] = (1000, 750, 500, 250)
    shift: float = 5.0
    fusion_weight: float = 0.5
    running_ahead: bool = True
    ahead_init: int = 8
    ahead_step: int = 4
    anchor: bool = True
    context_noise: int = 0
    start_from_reference: bool = True
    sink_len: int = field(default=0)
    sink_positions: SinkPositions = "relative"
    commit_window_len: int = 0
    first_chunk_steps: tuple[int, ...] = ()  # steps of chunk 0 when they differ (Causal Forcing++: the 4-step list)
    timestep_dtype: str = "float32"
    reference_pin: str = "noised"

    def __post_init__(self) -> None:
        _check(self.strategy in STRATEGIES, f"strategy={self.strategy!r}; allowed: {', '.join(STRATEGIES)}")
        _check(self.chunk_len >= 1, f"chunk_len={self.chunk_len}; must be >= 1 latent frame")
        _check(0 <= self.knot_len < self.chunk_len,
               f"knot_len={self.knot_len}; must be in [0, chunk_len-1] = [0, {self.chunk_len - 1}]")
        _check(self.window_len >= 1, f"window_len={self.window_len}; must be >= 1 latent frame")
        _check(len(self.steps) >= 1, "steps is empty; give at least one denoising step, e.g. 1000,750,500,250")
        for name in ("steps", "first_chunk_steps"):
            steps = getattr(self, name)
            _check(all(0 < s <= 1000 for s in steps), f"{name}={list(steps)}; each step must be in (0, 1000]")
            _check(all(a > b for a, b in zip(steps, steps[1:])),
                   f"{name}={list(steps)}; steps must be strictly decreasing, e.g. 1000,750,500,250")
        _check(self.timestep_dtype in TIMESTEP_DTYPES,
               f"timestep_dtype={self.timestep_dtype!r}; allowed: {', '.join(TIMESTEP_DTYPES)}")
        _check(self.reference_pin in REFERENCE_PINS,
               f"reference_pin={self.reference_pin!r}; allowed: {', '.join(REFERENCE_PINS)}")
        _check(math.isfinite(self.shift) and self.shift > 0, f"shift={self.shift}; must be a finite number > 0")
        _check(0.0 <= self.fusion_weight <= 1.0, f"fusion_weight={self.fusion_weight}; must be in [0, 1]")
        _check(self.ahead_step >= 1, f"ahead_step={self.ahead_step}; must be >= 1")
        _check(self.ahead_init >= 1, f"ahead_init={self.ahead_init}; must be >= 1")
        _check(0 <= self.context_noise < 1000, f"context_noise={self.context_noise}; must be in [0, 1000)")
        _check(self.sink_len >= 0, f"sink_len={self.sink_len}; must be >= 0")
        _check(self.sink_positions in SINK_POSITIONS,
               f"sink_positions={self.sink_positions!r}; allowed: {', '.join(SINK_POSITIONS)}")
        _check(self.sink_positions == "relative" or self.strategy == "longlive",
               f"sink_positions={self.sink_positions!r} with strategy={self.strategy!r}; only 'longlive' "
               "keeps its sink at absolute positions (set sink_positions='relative')")
        _check(self.commit_window_len >= 0, f"commit_window_len={self.commit_window_len}; must be >= 0")
        _check(not self.commit_window_len or self.strategy == "rolling_forcing",
               f"commit_window_len={self.commit_window_len} with strategy={self.strategy!r}; only "
               "'rolling_forcing' gives its commit pass its own window (set commit_window_len=0)")
        if self.strategy != "knot":
            _check(self.knot_len == 0, f"knot_len={self.knot_len} with strategy={self.strategy!r}; "
                   "only the 'knot' strategy uses a temporal knot (set knot_len=0)")
        if self.strategy == "avatar_forcing":
            _check(self.sink_len == 0, f"sink_len={self.sink_len} with strategy='avatar_forcing'; its anchor is "
                   "the reference latent (set sink_len=0)")
        if self.rolls:
            _check(not self.first_chunk_steps and self.reference_pin == "noised" and self.timestep_dtype == "float32",
                   "first_chunk_steps, reference_pin='clean' and timestep_dtype='bfloat16' are settings of the "
                   f"per-chunk strategies; {self.strategy} denoises a window of chunks jointly (unset them)")
        if self.strategy in ("longlive", "rolling_forcing"):
            _check(self.sink_len >= 1, f"sink_len={self.sink_len} with strategy={self.strategy!r}; "
                   "the frame sink needs >= 1 latent frame")

    @classmethod
    def for_strategy(cls, strategy: str, **overrides) -> StreamConfig:
        """Defaults of each strategy (the peers' published settings), then the overrides."""
        base: dict = {"strategy": strategy}
        if strategy == "self_forcing":
            base.update(knot_len=0, anchor=False, running_ahead=False, window_len=9)
        elif strategy == "longlive":  # local_attn_size 12 = sink 3 + window 6 + chunk 3, default (absolute) model
            base.update(knot_len=0, anchor=False, running_ahead=False, window_len=6, sink_len=3,
                        sink_positions="absolute")
        elif strategy == "rolling_forcing":  # 21-frame attention: 3 sink + 3 window + 15 in flight; clean pass 18 + 3
            base.update(knot_len=0, anchor=False, running_ahead=False, window_len=3, sink_len=3,
                        commit_window_len=18, steps=(1000, 800, 600, 400, 200))
        elif strategy == "avatar_forcing":  # 4 blocks x 4 frames in flight, 2 retained clean frames, 25 fps
            base.update(chunk_len=4, knot_len=0, running_ahead=False, window_len=2, steps=(1000, 800, 400, 200))
        base.update(overrides)
        return cls(**base)

    def steps_of_chunk(self, first_frame: int) -> tuple[int, ...]:
        """Denoising steps of the chunk starting at latent first_frame (chunk 0 may have its own list)."""
        return self.first_chunk_steps if first_frame == 0 and self.first_chunk_steps else self.steps

    @property
    def span(self) -> int:
        """Latent frames denoised together in one chunk (c + k)."""
        return self.chunk_len + self.knot_len

    @property
    def max_forward_frames(self) -> int:
        """Most latent frames one forward sees: rolling strategies denoise one chunk per step jointly."""
        return self.chunk_len * len(self.steps) if self.rolls else self.span

    @property
    def rolls(self) -> bool:
        """One joint forward over len(steps) chunks at staggered noise levels (rolling / avatar forcing)."""
        return self.strategy in ROLLING_STRATEGIES

    @property
    def lead_frames(self) -> int:
        """Latent frames of the video before the first generated one: AvatarForcing's reference is latent 0."""
        return 1 if self.strategy == "avatar_forcing" else 0

    @property
    def stored_window_len(self) -> int:
        """Committed frames the cache holds: the larger of the denoise and the commit windows."""
        return max(self.window_len, self.commit_window_len)

    @property
    def anchor_frames(self) -> int:
        """Frames of the anchor K/V: the reference frame (knot), else the frame sink (0 without one)."""
        return 1 if self.uses_reference_anchor else self.sink_len

    @property
    def uses_reference_anchor(self) -> bool:
        return (self.strategy == "knot" and self.anchor) or self.strategy == "avatar_forcing"

    def replace(self, **changes) -> StreamConfig:
        return replace(self, **changes)

    def with_settings(self, settings: Mapping[str, Any]) -> StreamConfig:
        """This config with user settings laid over it (names as the fields; steps may be "1000,750").

        The one way a front end's settings meet a model's recommendation: only the named fields change,
        every other recommended value stays. Unknown names are refused with the list of settings.
        """
        changes = check_settings(settings)
        strategy = changes.pop("strategy", self.strategy)
        if strategy != self.strategy:  # another loop: its published defaults, the model's schedule kept
            kept = {k: changes.pop(k, getattr(self, k)) for k in ("chunk_len", "steps", "shift")}
            return StreamConfig.for_strategy(strategy, **kept, **changes)
        return replace(self, **changes) if changes else self


STREAM_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(StreamConfig))
# Bounds of the numeric settings a user may give (widgets, flags, job files); lower bounds are StreamConfig's
# own; upper bounds keep memory sane and stay on-model (no released model uses more than 16 frames a chunk or
# a 64-frame window; a 100,000-frame window would allocate its K/V buffers for that many frames)
SETTING_RANGES: dict[str, tuple[float, float]] = {
    "chunk_len": (1, 16), "knot_len": (0, 15), "window_len": (1, 64), "shift": (0.1, 20.0),
    "fusion_weight": (0.0, 1.0), "ahead_init": (1, 4096), "ahead_step": (1, 4096), "sink_len": (0, 64),
    "context_noise": (0, 999)}

FIELD_TYPES: dict[str, type] = {f.name: type(f.default) for f in fields(StreamConfig)}
STEP_FIELDS: tuple[str, ...] = ("steps", "first_chunk_steps")
SETTING_CHOICES: dict[str, tuple[str, ...]] = {"strategy": STRATEGIES, "sink_positions": SINK_POSITIONS,
                                               "timestep_dtype": TIMESTEP_DTYPES, "reference_pin": REFERENCE_PINS}


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """User settings (names as StreamConfig's fields) checked one by one: known name, right type, finite,
    within SETTING_RANGES; steps parsed. Combinations are StreamConfig's own checks."""
    unknown = sorted(set(settings) - set(STREAM_FIELDS))
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown}; the settings are: {', '.join(STREAM_FIELDS)}")
    out: dict[str, Any] = {}
    for name, value in settings.items():
        kind = FIELD_TYPES[name]
        if name in STEP_FIELDS:
            value = parse_steps(value)
        elif kind is bool:
            _check(isinstance(value, bool), f"{name}={value!r}; give true or false")
        elif kind is str:
            _check(value in SETTING_CHOICES[name], f"{name}={value!r}; allowed: {', '.join(SETTING_CHOICES[name])}")
        elif kind in (int, float):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            _check(number and (kind is float or float(value).is_integer()),
                   f"{name}={value!r}; give a {'whole ' if kind is int else ''}number")
            _check(math.isfinite(value), f"{name}={value!r}; give a finite number (not NaN or infinity)")
            lo, hi = SETTING_RANGES.get(name, (-math.inf, math.inf))
            _check(lo <= value <= hi, f"{name}={value!r}; must be in [{lo:g}, {hi:g}]")
            value = kind(value)
        out[name] = value
    return out
