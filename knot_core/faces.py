"""Procedural portraits with ground truth: varied synthetic faces drawn with OpenCV from driving parameters.

A `Portrait` is an identity (head shape, skin/hair/eye/lip colours, hair style, brows, mouth size,
accessories, background), drawn deterministically from a seed. `render(portrait, frame, size)` draws one
video frame for one `DrivingFrame` (head yaw/pitch/roll and translation, mouth opening and width, blink,
brow raise), anti-aliased (cv2.LINE_AA on a supersampled canvas, then area-downsampled). So any driving
sequence (knot_core.motion) has an exact ground-truth video: the training data of the demo model
(knot_core.demo) and the reference for its tests. Not a reproduction of any published dataset.
`regions` gives the pixel boxes a test can look at (mouth, eyes, face centre).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import cv2
import numpy as np

from .errors import InputError

PARAM_NAMES: tuple[str, ...] = ("yaw", "pitch", "roll", "tx", "ty", "mouth_open", "mouth_wide", "blink", "brow")
NUM_PARAMS = len(PARAM_NAMES)
SUPERSAMPLE = 4  # draw at 4x and downsample with area averaging: smooth edges at 96 px
HAIR_STYLES = ("short", "long", "bald", "bun")
ACCESSORIES = ("none", "glasses", "earrings", "glasses+earrings")


@dataclass(frozen=True)
class DrivingFrame:
    """Driving parameters of one video frame. Angles in [-1, 1] (about +-35 degrees of turn), translation in
    [-1, 1] of a small range, mouth_open / blink / brow in [0, 1], mouth_wide in [-1, 1]."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    tx: float = 0.0
    ty: float = 0.0
    mouth_open: float = 0.0
    mouth_wide: float = 0.0
    blink: float = 0.0
    brow: float = 0.0

    def vector(self) -> np.ndarray:
        return np.array([getattr(self, n) for n in PARAM_NAMES], dtype=np.float32)  # (NUM_PARAMS,)

    @classmethod
    def from_vector(cls, v) -> DrivingFrame:
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        if v.shape[0] != NUM_PARAMS:
            raise InputError(f"driving vector has {v.shape[0]} values; expected {NUM_PARAMS} "
                             f"({', '.join(PARAM_NAMES)})")
        return cls(*(float(x) for x in v))


@dataclass(frozen=True)
class Portrait:
    """One synthetic identity; every field is drawn from the seed by `Portrait.random`."""

    head_w: float  # half-width of the head, fraction of the image
    head_h: float  # half-height
    skin: tuple[int, int, int]  # RGB
    hair: tuple[int, int, int]
    hair_style: str
    eye: tuple[int, int, int]
    lip: tuple[int, int, int]
    brow_thickness: float  # fraction of the head height
    eye_spacing: float  # fraction of the head width
    mouth_w: float  # fraction of the head width
    accessory: str
    accessory_colour: tuple[int, int, int]
    background: tuple[tuple[int, int, int], tuple[int, int, int]]  # top, bottom
    shirt: tuple[int, int, int]

    @classmethod
    def random(cls, seed: int) -> Portrait:
        rng = np.random.default_rng([int(seed), 7])

        def colour(lo: int, hi: int) -> tuple[int, int, int]:
            return tuple(int(c) for c in rng.integers(lo, hi, 3))

        tone = rng.uniform(0.25, 1.0)
        skin = tuple(int(c) for c in np.array([235, 200, 170]) * tone + np.array([20, 10, 5]) * (1 - tone))
        return cls(head_w=float(rng.uniform(0.19, 0.25)), head_h=float(rng.uniform(0.25, 0.31)), skin=skin,
                   hair=colour(10, 200), hair_style=str(rng.choice(HAIR_STYLES)), eye=colour(20, 160),
                   lip=(int(rng.integers(140, 220)), int(rng.integers(40, 100)), int(rng.integers(50, 110))),
                   brow_thickness=float(rng.uniform(0.04, 0.09)), eye_spacing=float(rng.uniform(0.36, 0.46)),
                   mouth_w=float(rng.uniform(0.32, 0.48)), accessory=str(rng.choice(ACCESSORIES)),
                   accessory_colour=colour(0, 255), background=(colour(40, 255), colour(0, 200)),
                   shirt=colour(0, 255))

    def describe(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Regions:
    """Pixel boxes (x0, y0, x1, y1) of a rendered frame, for tests and measurements."""

    face_centre: tuple[float, float]
    mouth: tuple[int, int, int, int]
    eyes: tuple[int, int, int, int]


class _Geometry:
    """Where the head and its features land on a canvas of side `side` for one frame."""

    def __init__(self, p: Portrait, f: DrivingFrame, side: float):
        self.side = side
        self.rx, self.ry = p.head_w * side * (1 - 0.12 * abs(f.yaw)), p.head_h * side
        self.cx = side * (0.5 + 0.08 * f.tx) + 0.25 * p.head_w * side * f.yaw
        self.cy = side * (0.5 + 0.06 * f.ty) + 0.15 * p.head_h * side * f.pitch
        self.roll = 25.0 * f.roll  # degrees
        # features slide across the face when it turns (a cheap 3D illusion)
        self.fx, self.fy = 0.38 * f.yaw, 0.25 * f.pitch

    def point(self, u: float, v: float) -> tuple[float, float]:
        """Head-local (u, v) in head radii (after the feature slide) -> canvas (x, y), rolled."""
        x, y = (u + self.fx) * self.rx, (v + self.fy) * self.ry
        a = math.radians(self.roll)
        return self.cx + x * math.cos(a) - y * math.sin(a), self.cy + x * math.sin(a) + y * math.cos(a)


def _pt(xy: tuple[float, float]) -> tuple[int, int]:
    return int(round(xy[0])), int(round(xy[1]))


def _ellipse(img: np.ndarray, g: _Geometry, centre, axes, colour, thickness: int = -1, start=0, end=360) -> None:
    cv2.ellipse(img, _pt(centre), (max(1, int(axes[0])), max(1, int(axes[1]))), g.roll, start, end, colour,
                thickness, cv2.LINE_AA)


def _background(p: Portrait, side: int) -> np.ndarray:
    top, bottom = (np.array(c, dtype=np.float32) for c in p.background)
    ramp = np.linspace(0.0, 1.0, side, dtype=np.float32)[:, None, None]  # (side, 1, 1)
    return np.broadcast_to(top * (1 - ramp) + bottom * ramp, (side, side, 3)).astype(np.uint8).copy()


def _head(img: np.ndarray, p: Portrait, g: _Geometry) -> None:
    s = g.side
    cv2.ellipse(img, _pt((g.cx, g.cy + 1.25 * g.ry)), (int(2.0 * g.rx), int(0.6 * g.ry)), 0, 180, 360, p.shirt, -1,
                cv2.LINE_AA)
    cv2.rectangle(img, _pt((g.cx - 0.4 * g.rx, g.cy + 0.6 * g.ry)), _pt((g.cx + 0.4 * g.rx, g.cy + 1.3 * g.ry)),
                  p.skin, -1, cv2.LINE_AA)
    if p.hair_style == "long":
        _ellipse(img, g, g.point(-g.fx, 0.25), (1.25 * g.rx, 1.2 * g.ry), p.hair)
    for side_u in (-1.0, 1.0):  # ears stay at the skull's sides
        _ellipse(img, g, g.point(side_u * 1.0 - g.fx * 0.5, 0.05), (0.2 * g.rx, 0.28 * g.ry), p.skin)
        if "earrings" in p.accessory:
            cv2.circle(img, _pt(g.point(side_u * 1.0 - g.fx * 0.5, 0.38)), max(1, int(0.012 * s * 4)),
                       p.accessory_colour, -1, cv2.LINE_AA)
    _ellipse(img, g, g.point(-g.fx, 0.0), (g.rx, g.ry), p.skin)
    if p.hair_style != "bald":
        _ellipse(img, g, g.point(-g.fx, -0.45), (1.04 * g.rx, 0.62 * g.ry), p.hair, -1, 180, 360)
    if p.hair_style == "bun":
        _ellipse(img, g, g.point(-g.fx, -1.05), (0.4 * g.rx, 0.3 * g.ry), p.hair)


def _eyes(img: np.ndarray, p: Portrait, g: _Geometry, f: DrivingFrame) -> None:
    open_ = max(0.0, 1.0 - f.blink)
    for side_u in (-1.0, 1.0):
        c = g.point(side_u * p.eye_spacing, -0.12)
        ax = (0.2 * g.rx, 0.12 * g.ry * open_)
        if open_ > 0.15:
            _ellipse(img, g, c, ax, (250, 250, 250))
            cv2.circle(img, _pt(c), max(1, int(0.1 * g.ry * min(1.0, open_ * 1.3))), p.eye, -1, cv2.LINE_AA)
            cv2.circle(img, _pt(c), max(1, int(0.045 * g.ry * min(1.0, open_ * 1.3))), (15, 15, 15), -1, cv2.LINE_AA)
        _ellipse(img, g, c, (ax[0], max(ax[1], 1)), (60, 40, 30), max(1, int(0.02 * g.side)))
        brow_v = -0.34 - 0.12 * f.brow
        b0, b1 = g.point(side_u * (p.eye_spacing - 0.2), brow_v + 0.02), g.point(side_u * (p.eye_spacing + 0.2), brow_v)
        cv2.line(img, _pt(b0), _pt(b1), tuple(int(c * 0.6) for c in p.hair),
                 max(1, int(p.brow_thickness * g.ry)), cv2.LINE_AA)
        if "glasses" in p.accessory:
            _ellipse(img, g, c, (0.3 * g.rx, 0.22 * g.ry), p.accessory_colour, max(1, int(0.015 * g.side)))
    if "glasses" in p.accessory:
        cv2.line(img, _pt(g.point(-p.eye_spacing + 0.3, -0.12)), _pt(g.point(p.eye_spacing - 0.3, -0.12)),
                 p.accessory_colour, max(1, int(0.015 * g.side)), cv2.LINE_AA)


def _mouth(img: np.ndarray, p: Portrait, g: _Geometry, f: DrivingFrame) -> None:
    nose = tuple(int(c * 0.8) for c in p.skin)
    cv2.line(img, _pt(g.point(0.0, 0.0)), _pt(g.point(0.05, 0.22)), nose, max(1, int(0.02 * g.side)), cv2.LINE_AA)
    c = g.point(0.0, 0.5)
    w = p.mouth_w * g.rx * (1 + 0.3 * f.mouth_wide) * (1 - 0.25 * f.mouth_open)
    h = 0.03 * g.ry + 0.3 * g.ry * f.mouth_open
    _ellipse(img, g, c, (w, h), p.lip)
    if f.mouth_open > 0.05:
        _ellipse(img, g, c, (0.8 * w, 0.75 * h), (70, 15, 25))
        _ellipse(img, g, g.point(0.0, 0.5 - 0.6 * h / g.ry), (0.5 * w, 0.18 * h), (240, 240, 235))


def render(portrait: Portrait, frame: DrivingFrame, size: int = 64) -> np.ndarray:
    """One RGB frame (size, size, 3) uint8 of `portrait` driven by `frame`; deterministic."""
    if size < 16:
        raise InputError(f"portrait size {size}; need >= 16 pixels")
    side = size * SUPERSAMPLE
    img = _background(portrait, side)
    g = _Geometry(portrait, frame, side)
    _head(img, portrait, g)
    _eyes(img, portrait, g, frame)
    _mouth(img, portrait, g, frame)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def render_video(portrait: Portrait, frames, size: int = 64) -> np.ndarray:
    """Frames (an iterable of DrivingFrame or parameter vectors) -> (T, size, size, 3) uint8."""
    out = [render(portrait, f if isinstance(f, DrivingFrame) else DrivingFrame.from_vector(f), size) for f in frames]
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def regions(portrait: Portrait, frame: DrivingFrame, size: int = 64) -> Regions:
    """Boxes of the mouth (open to its widest), of both eyes, and the head centre, in output pixels."""
    g = _Geometry(portrait, frame, float(size))
    mx, my = g.point(0.0, 0.5)
    mw, mh = portrait.mouth_w * g.rx * 1.3, 0.36 * g.ry
    ex0, ey = g.point(-portrait.eye_spacing, -0.12)
    ex1, _ = g.point(portrait.eye_spacing, -0.12)
    ew, eh = 0.25 * g.rx, 0.15 * g.ry

    def box(x0, y0, x1, y1):
        return (max(0, int(math.floor(x0))), max(0, int(math.floor(y0))),
                min(size, int(math.ceil(x1))), min(size, int(math.ceil(y1))))

    return Regions(face_centre=(g.cx, g.cy), mouth=box(mx - mw, my - mh, mx + mw, my + mh),
                   eyes=box(min(ex0, ex1) - ew, ey - eh, max(ex0, ex1) + ew, ey + eh))
