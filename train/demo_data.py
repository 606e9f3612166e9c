"""Training clips of the demo model: procedural portraits (knot_core.faces) under seeded driving (knot_core.motion).

Each clip is one identity, its driving rows as the signal serves them (no idle motion), the rows as drawn (idle
motion included) and the rendered frames; and a reference image of the same identity drawn at a pose of the same
sequence *after* the clip's last frame (the future-facing anchor, never one of the clip's frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from knot_core.demo import DEMO_SIZE
from knot_core.faces import NUM_PARAMS, DrivingFrame, Portrait, render, render_video
from knot_core.motion import MotionSequence

REFERENCE_GAP = (25, 250)  # video frames between a clip's end and its reference's pose


@dataclass
class Clips:
    videos: np.ndarray  # (N, V, H, W, 3) uint8, as drawn
    signal: np.ndarray  # (N, V, P) float32 driving rows the model gets
    drawn: np.ndarray  # (N, V, P) float32 rows as drawn (idle motion included)
    references: np.ndarray  # (N, H, W, 3) uint8
    portraits: list[Portrait]


def make_clips(n: int, seed: int, frames: int, size: int = DEMO_SIZE, idle: tuple[float, float] = (0.5, 1.5),
               neutral_reference: float = 0.5, blink_interval: tuple[float, float] | None = None,
               still_share: float = 0.0) -> Clips:
    """n clips of `frames` video frames. Half the references (neutral_reference) are the neutral pose (the
    demo's reference), the others a pose drawn after the clip's end, so the anchor is never a frame of the clip.
    blink_interval (lo, hi) seconds: each clip's blink slot drawn from it (default: the 3 s of every render).
    A blink is 5 of 75 frames at 3 s, too rare a target for the loss to learn; the driving row tells the model
    when one happens, so showing more of them changes no prior the model relies on at inference.
    still_share: the share of clips drawn without idle motion, as every render the demo itself makes (its driving
    holds all of the head's motion); drawn from its own stream, so the other clips are the default ones."""
    rng = np.random.default_rng(seed)
    # its own stream of draws, so the default clips stay exactly those rendered before the option existed
    intervals = np.random.default_rng([seed, 29]).uniform(*blink_interval, n) if blink_interval else None
    still = np.random.default_rng([seed, 31]).uniform(size=n) < still_share
    videos = np.zeros((n, frames, size, size, 3), np.uint8)
    signal = np.zeros((n, frames, NUM_PARAMS), np.float32)
    drawn = np.zeros((n, frames, NUM_PARAMS), np.float32)
    refs = np.zeros((n, size, size, 3), np.uint8)
    portraits = []
    for i in range(n):
        motion = MotionSequence(int(rng.integers(1 << 30)), amount=float(rng.uniform(0.3, 1.1)),
                                idle=float(rng.uniform(*idle)) * (not still[i]),  # drawn always: same clips
                                **({} if intervals is None else {"blink_interval": float(intervals[i])}))
        start = int(rng.integers(0, 5000))
        portrait = Portrait.random(int(rng.integers(1 << 30)))
        signal[i], drawn[i] = motion.signal_frames(start, frames), motion.frames(start, frames)
        videos[i] = render_video(portrait, drawn[i], size)
        portraits.append(portrait)
        if rng.uniform() < neutral_reference:
            refs[i] = render(portrait, DrivingFrame(), size)
        else:
            after = start + frames + int(rng.integers(*REFERENCE_GAP))
            refs[i] = render(portrait, DrivingFrame.from_vector(motion.frames(after, 1)[0]), size)
    return Clips(videos, signal, drawn, refs, portraits)


def to_video(clips: np.ndarray) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(clips).float().div(127.5).sub(1).permute(0, 4, 1, 2, 3)
