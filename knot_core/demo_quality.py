"""How closely a demo render follows its ground truth: the measures tests/test_demo.py sets its bars on and
bench/demo_render.py prints (for the shipped weights or any trained models folder).

The demo's driving has no idle motion, so every frame of a render is fixed by the anchor and the driving and the
procedural drawing of the same rows is its ground truth. All measures are taken on the decoded video as a viewer
gets it (read back from the MP4 by the caller)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import video_frames_for
from .demo import DEMO_PORTRAIT_SEED, MODELS_DIR, demo_frames, demo_latent_frames
from .faces import PARAM_NAMES, DrivingFrame, Portrait, regions, render, render_video
from .motion import MotionSequence, SpeechMouth
from .quality_metrics import histogram_distance, mouth_darkness, psnr, sharpness, skin_centroid

MOUTH, BLINK = PARAM_NAMES.index("mouth_open"), PARAM_NAMES.index("blink")
LAST_FRAMES = 100  # frames compared with the ground truth: the end of the render, far past the window
IDENTITY_FRAMES = 25  # the last second: identity after the longest run
BACKGROUND_ROWS = 10  # the static background above the head
OTHER_PORTRAIT_SEED = 1  # a different face: the identity distance's scale


@dataclass(frozen=True)
class DriveFollowing:
    """Correlation of the decoded video with the driving: mouth-box darkness vs mouth opening, eye-box darkness vs
    blink (negative: closed eyes hide the dark pupils), skin centroid x vs the face centre the driving draws."""

    mouth_r: float
    blink_r: float
    head_r: float


@dataclass(frozen=True)
class RenderQuality:
    following: DriveFollowing
    identity: float  # colour-histogram distance of the last second to the reference image
    other_identity: float  # the same to another face
    sharpness: float  # mean |Laplacian| of the last 100 frames over the ground truth's
    psnr: float  # dB, last 100 frames against the ground truth
    background_psnr: float  # dB, the rows above the head in those frames


def following(video: np.ndarray, rows: np.ndarray, portrait: Portrait) -> DriveFollowing:
    size = video.shape[1]
    geo = [regions(portrait, DrivingFrame.from_vector(r), size) for r in rows]
    r = lambda a, b: float(np.corrcoef(a, b)[0, 1])  # noqa: E731
    return DriveFollowing(r(mouth_darkness(video, [g.mouth for g in geo]), rows[:, MOUTH]),
                          r(mouth_darkness(video, [g.eyes for g in geo]), rows[:, BLINK]),
                          r(skin_centroid(video, portrait.skin)[:, 0], [g.face_centre[0] for g in geo]))


def render_quality(video: np.ndarray, rows: np.ndarray, portrait_seed: int = DEMO_PORTRAIT_SEED) -> RenderQuality:
    """The measures of a demo render `video` (T, H, W, 3) uint8 driven by `rows` (T, P)."""
    size, portrait = video.shape[1], Portrait.random(portrait_seed)
    truth = render_video(portrait, rows[-LAST_FRAMES:], size)
    last, tail = video[-LAST_FRAMES:], video[-IDENTITY_FRAMES:]
    return RenderQuality(
        following(video, rows, portrait),
        float(histogram_distance(tail, render(portrait, DrivingFrame(), size)).mean()),
        float(histogram_distance(tail, render(Portrait.random(OTHER_PORTRAIT_SEED), DrivingFrame(), size)).mean()),
        float(sharpness(last).mean() / sharpness(truth).mean()),
        float(psnr(last, truth).mean()),
        float(psnr(last[:, :BACKGROUND_ROWS], truth[:, :BACKGROUND_ROWS]).mean()))


def mouth_change(models: str | Path = MODELS_DIR, portrait_seed: int = DEMO_PORTRAIT_SEED) -> float:
    """Grey levels by which the mouth box darkens with the mouth held open rather than closed (a still head, 2 s,
    after the first 0.5 s): whether the driving's mouth reaches the picture at all."""
    frames, portrait, darkness = video_frames_for(demo_latent_frames(2.0)), Portrait.random(portrait_seed), {}
    for name, value in (("open", 1.0), ("closed", 0.0)):
        motion = MotionSequence(0, frames + 16, amount=0.0, mouth=SpeechMouth(np.full(frames + 16, value)))
        video = demo_frames(motion, 2.0, models=models, portrait_seed=portrait_seed)
        boxes = [regions(portrait, DrivingFrame.from_vector(r), video.shape[1]).mouth for r in motion.frames(0, frames)]
        darkness[name] = mouth_darkness(video, boxes)[13:].mean()
    return float(darkness["open"] - darkness["closed"])
