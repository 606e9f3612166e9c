"""Knot Settings and Running Ahead: small nodes that build typed settings the sampler reads.

Widget names are the StreamConfig field names (chunk_len, knot_len, window_len, ...), the same
as the CLI flags; an invalid combination raises StreamConfig's own ConfigError message.
"""

from __future__ import annotations

from knot_core.config import STRATEGIES, StreamConfig
from knot_core.errors import ConfigError

from .types import CATEGORY, KNOT_SETTINGS, KnotSettings, RunningAhead

DEFAULTS = StreamConfig()


def parse_steps(text: str) -> tuple[int, ...]:
    """'1000, 750, 500, 250' -> (1000, 750, 500, 250)."""
    try:
        steps = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError as err:
        raise ConfigError(f"steps={text!r}; give comma-separated integers in (0, 1000], e.g. 1000,750,500,250") \
            from err
    return steps


class SettingsNode:
    """What the settings nodes share: they output one KNOT_SETTINGS object that the sampler reads."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (KNOT_SETTINGS,)
    RETURN_NAMES = ("settings",)
    OUTPUT_TOOLTIPS = ("To the Streaming Sampler's settings (or another settings node's settings input).",)
    FUNCTION = "build"


class KnotForcingKnotSettings(SettingsNode):
    DESCRIPTION = ("The chunk loop: c new latent frames per chunk, k knot frames overlapping the next chunk, a "
                   "window of L cached frames, the few-step schedule. Unconnected: the model's recommended settings.")

    @classmethod
    def INPUT_TYPES(cls):
        d = DEFAULTS
        return {"required": {
            "strategy": (list(STRATEGIES), {"default": d.strategy, "tooltip": "knot = Knot Forcing; the others "
                                            "are the peers' loops (they need knot_len = 0)."}),
            "chunk_len": ("INT", {"default": d.chunk_len, "min": 1, "max": 16,
                                  "tooltip": "c: latent frames committed per chunk (4 video frames each)."}),
            "knot_len": ("INT", {"default": d.knot_len, "min": 0, "max": 15,
                                 "tooltip": "k: knot frames denoised past the chunk and handed to the next; "
                                            "0 <= k < c; only the knot strategy uses them."}),
            "window_len": ("INT", {"default": d.window_len, "min": 1, "max": 64,
                                   "tooltip": "L: committed latent frames kept as attention context."}),
            "steps": ("STRING", {"default": ",".join(map(str, d.steps)),
                                 "tooltip": "Denoising steps, strictly decreasing, each in (0, 1000]."}),
            "shift": ("FLOAT", {"default": d.shift, "min": 0.1, "max": 20.0, "step": 0.1,
                                "tooltip": "Flow-matching sigma shift (5 for Self Forcing-style students)."}),
            "fusion_weight": ("FLOAT", {"default": d.fusion_weight, "min": 0.0, "max": 1.0, "step": 0.05,
                                        "tooltip": "Weight of the previous chunk's knot prediction in the fused "
                                                   "knot frames (0.5 = plain average)."}),
        }}

    def build(self, strategy: str, chunk_len: int, knot_len: int, window_len: int, steps: str, shift: float,
              fusion_weight: float):
        cfg = StreamConfig.for_strategy(strategy, chunk_len=chunk_len, knot_len=knot_len, window_len=window_len,
                                        steps=parse_steps(steps), shift=shift, fusion_weight=fusion_weight)
        return (KnotSettings(stream=cfg),)


class KnotForcingRunningAhead(SettingsNode):
    DESCRIPTION = ("Running ahead: the reference frame's temporal index n starts at ahead_init and moves by "
                   "ahead_step whenever a chunk would reach it (before chunk i: if i + c + k > n then n += s).")

    @classmethod
    def INPUT_TYPES(cls):
        d = DEFAULTS
        return {"required": {
            "running_ahead": ("BOOLEAN", {"default": d.running_ahead,
                                          "tooltip": "Move the reference ahead of the video as it grows (paper: "
                                                     "running ahead); off keeps it at a fixed index."}),
            "ahead_init": ("INT", {"default": d.ahead_init, "min": 1, "max": 4096, "tooltip": "n_init."}),
            "ahead_step": ("INT", {"default": d.ahead_step, "min": 1, "max": 4096, "tooltip": "s."}),
        }, "optional": {
            "settings": (KNOT_SETTINGS, {"tooltip": "From Knot Settings; unconnected = the model's settings."}),
        }}

    def build(self, running_ahead: bool, ahead_init: int, ahead_step: int, settings: KnotSettings | None = None):
        ahead = RunningAhead(bool(running_ahead), ahead_init, ahead_step)
        settings = KnotSettings(stream=settings.stream if settings else None, ahead=ahead)
        settings.resolve(settings.stream or DEFAULTS)  # validate now, before any sampling
        return (settings,)
