"""Knot Settings and Running Ahead: small nodes whose widgets override the loaded model's recommended settings.

Widget names are the StreamConfig field names (chunk_len, knot_len, window_len, ...), the same as the CLI
flags. A widget left at "model" / -1 / empty keeps the model's recommendation, so connecting Knot Settings
to change knot_len keeps every other setting of the model (its steps, shift, window). Bounds come from
knot_core.config.SETTING_RANGES; an invalid combination raises StreamConfig's own ConfigError message.
"""

from __future__ import annotations

from knot_core.config import SETTING_RANGES, STRATEGIES, StreamConfig, parse_steps

from .types import CATEGORY, KNOT_SETTINGS, KnotSettings

MODEL = "model"  # the strategy choice that keeps the model's
KEEP = -1  # a numeric widget at -1 keeps the model's value
DEFAULTS = StreamConfig()


def _number(name: str, kind: str, tooltip: str, **extra) -> tuple:
    lo, hi = SETTING_RANGES[name]
    return (kind, {"default": KEEP, "min": KEEP, "max": hi, "tooltip": f"{tooltip} -1: the model's "
                   f"recommendation; else {lo:g}..{hi:g}.", **extra})


class SettingsNode:
    """What the settings nodes share: they output one KNOT_SETTINGS object that the sampler reads."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (KNOT_SETTINGS,)
    RETURN_NAMES = ("settings",)
    OUTPUT_TOOLTIPS = ("To the Streaming Sampler's settings (or another settings node's settings input).",)
    FUNCTION = "build"


class KnotForcingKnotSettings(SettingsNode):
    DESCRIPTION = ("The chunk loop: c new latent frames per chunk, k knot frames overlapping the next chunk, a "
                   "window of L cached frames, the few-step schedule. Each widget overrides the loaded model's "
                   "recommendation; left at model / -1 / empty it keeps the model's. Unconnected: all the model's.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "strategy": ([MODEL, *STRATEGIES], {"default": MODEL, "tooltip": "knot = Knot Forcing; the others are "
                                                "the peers' loops (they need knot_len = 0); model = the model's."}),
            "chunk_len": _number("chunk_len", "INT", "c: latent frames committed per chunk (4 video frames each)."),
            "knot_len": _number("knot_len", "INT", "k: knot frames denoised past the chunk and handed to the next; "
                                "0 <= k < c; only the knot strategy uses them."),
            "window_len": _number("window_len", "INT", "L: committed latent frames kept as attention context."),
            "steps": ("STRING", {"default": "", "tooltip": "Denoising steps, strictly decreasing, each in (0, 1000], "
                                 "e.g. 1000,750,500,250; empty: the model's."}),
            "shift": _number("shift", "FLOAT", "Flow-matching sigma shift (5 for Self Forcing-style students).",
                             step=0.1),
            "fusion_weight": _number("fusion_weight", "FLOAT", "Weight of the previous chunk's knot prediction in "
                                     "the fused knot frames (0.5 = plain average).", step=0.05),
        }}

    def build(self, strategy: str, chunk_len: int, knot_len: int, window_len: int, steps: str, shift: float,
              fusion_weight: float):
        numbers = {"chunk_len": chunk_len, "knot_len": knot_len, "window_len": window_len, "shift": shift,
                   "fusion_weight": fusion_weight}
        overrides = {k: v for k, v in numbers.items() if v != KEEP}
        if steps.strip():
            overrides["steps"] = parse_steps(steps)
        if strategy != MODEL:
            overrides["strategy"] = strategy
        if len(overrides) == len(numbers) + 2:  # every widget set: the whole config is known, check it now
            StreamConfig.for_strategy(strategy, **{k: v for k, v in overrides.items() if k != "strategy"})
        return (KnotSettings(overrides),)


class KnotForcingRunningAhead(SettingsNode):
    DESCRIPTION = ("Running ahead: the reference frame's temporal index n starts at ahead_init and moves by "
                   "ahead_step whenever a chunk would reach it (before chunk i: if i + c + k > n then n += s).")

    @classmethod
    def INPUT_TYPES(cls):
        d = DEFAULTS
        init_lo, init_hi = SETTING_RANGES["ahead_init"]
        step_lo, step_hi = SETTING_RANGES["ahead_step"]
        return {"required": {
            "running_ahead": ("BOOLEAN", {"default": d.running_ahead,
                                          "tooltip": "Move the reference ahead of the video as it grows (paper: "
                                                     "running ahead); off keeps it at a fixed index."}),
            "ahead_init": ("INT", {"default": d.ahead_init, "min": init_lo, "max": init_hi, "tooltip": "n_init."}),
            "ahead_step": ("INT", {"default": d.ahead_step, "min": step_lo, "max": step_hi, "tooltip": "s."}),
        }, "optional": {
            "settings": (KNOT_SETTINGS, {"tooltip": "From Knot Settings; unconnected = the model's settings."}),
        }}

    def build(self, running_ahead: bool, ahead_init: int, ahead_step: int, settings: KnotSettings | None = None):
        settings = (settings or KnotSettings()).add(running_ahead=bool(running_ahead), ahead_init=ahead_init,
                                                    ahead_step=ahead_step)
        DEFAULTS.replace(running_ahead=bool(running_ahead), ahead_init=ahead_init, ahead_step=ahead_step)  # check
        return (settings,)
