"""Pose driving signal: OpenPose/DWPose keypoints -> normalised tensors, smoothing, retargeting, pose maps.

Reads ComfyUI's POSE_KEYPOINT (comfyui_controlnet_aux DWPose/OpenPose: per frame a dict with
`people[]` holding flat [x, y, conf, ...] lists `pose_keypoints_2d`, `face_keypoints_2d`,
`hand_left_keypoints_2d`, `hand_right_keypoints_2d`, plus `canvas_width/height`) and folders of
OpenPose `*_keypoints.json` files (same per-frame structure). The keypoint order is OpenPose's
(COCO-18 body, 70 face, 2×21 hands). Pose maps use OpenPose's limb colours, drawn with OpenCV.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..text_file import read_text
from .base import DrivingSignal, EndPolicy

PART_KEYS = ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d")
FACE_POINTS, HAND_POINTS = 70, 21
Coords = Literal["auto", "pixels", "normalized"]
# OpenPose COCO-18 limbs (1-based pairs in OpenPose's drawing code, 0-based here) and their colours (RGB).
BODY18_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
BODY18_COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                  (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
                  (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
HAND_LIMBS = tuple((a, a + 1) if a % 4 else (0, a + 1) for a in range(20))


@dataclass(frozen=True)
class PoseLayout:
    """How the K keypoints of one person are laid out: body, face, left hand, right hand."""

    body: int = 18
    face: int = FACE_POINTS
    hand: int = HAND_POINTS

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        return self.body, self.face, self.hand, self.hand

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def part(self, index: int) -> slice:
        start = sum(self.sizes[:index])
        return slice(start, start + self.sizes[index])


@dataclass(frozen=True)
class PoseSequence:
    """keypoints [T, P, K, 3]: x / canvas width, y / canvas height, confidence (0 = missing, xy zeroed)."""

    keypoints: Tensor
    layout: PoseLayout
    aspect: float  # canvas width / height of the first frame, for isotropic geometry

    @property
    def mask(self) -> Tensor:
        return self.keypoints[..., 2] > 0  # [T, P, K]

    @property
    def num_frames(self) -> int:
        return self.keypoints.shape[0]


def _points(values, what: str) -> np.ndarray:
    if not isinstance(values, list) or len(values) % 3:
        got = f"{len(values)} values" if isinstance(values, list) else type(values).__name__
        raise InputError(f"{what}: got {got}; need a flat list [x, y, conf, ...] with a multiple of 3 values")
    try:
        return np.asarray(values, dtype=np.float32).reshape(-1, 3)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what}: keypoint values must be numbers ({exc})") from exc


def _body_area(body: np.ndarray) -> float:
    valid = body[body[:, 2] > 0]
    if len(valid) < 2:
        return 0.0
    span = valid[:, :2].max(0) - valid[:, :2].min(0)
    return float(span[0] * span[1])


def _parse_frame(frame, index: int, canvas: tuple[int, int] | None) -> tuple[list[list[np.ndarray]], tuple[int, int]]:
    what = f"pose frame {index}"
    if not isinstance(frame, dict) or not isinstance(frame.get("people"), list):
        got = sorted(frame) if isinstance(frame, dict) else type(frame).__name__
        raise InputError(f"{what}: got {got}; need a dict with a 'people' list (OpenPose / POSE_KEYPOINT format)")
    width, height = frame.get("canvas_width"), frame.get("canvas_height")
    if width is None or height is None:
        if canvas is None:
            raise InputError(f"{what} has no canvas_width/canvas_height; pass the canvas size of the source video")
        width, height = canvas
    if not (isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0):
        raise InputError(f"{what}: canvas {width}x{height}; need positive canvas_width and canvas_height")
    people = []
    for p, person in enumerate(frame["people"]):
        if not isinstance(person, dict):
            raise InputError(f"{what}, person {p}: got {type(person).__name__}; need a dict of keypoint lists")
        people.append([_points(person.get(key) or [], f"{what}, person {p}, {key}") for key in PART_KEYS])
    return people, (int(width), int(height))


def parse_pose_frames(frames: list, *, max_people: int = 1, coords: Coords = "auto",
                      canvas: tuple[int, int] | None = None) -> PoseSequence:
    """POSE_KEYPOINT-style frames -> PoseSequence of the `max_people` largest people per frame.

    coords 'auto' reads coordinates as normalised when every present point lies in [0, 1], else as pixels.
    """
    if not isinstance(frames, list) or not frames:
        raise InputError(f"pose input: got {type(frames).__name__ if not isinstance(frames, list) else 'no frames'}; "
                         "need a non-empty list of per-frame dicts with 'people'")
    parsed = [_parse_frame(frame, i, canvas) for i, frame in enumerate(frames)]
    bodies = {len(parts[0]) for people, _ in parsed for parts in people if len(parts[0])}
    if len(bodies) > 1:
        raise InputError(f"pose input mixes body layouts with {sorted(bodies)} points; use one detector output")
    layout = PoseLayout(body=bodies.pop() if bodies else 18)
    present = np.concatenate([part[part[:, 2] > 0, :2] for people, _ in parsed for parts in people
                              for part in parts] + [np.zeros((0, 2), np.float32)])
    normalised = coords == "normalized" or (coords == "auto" and (present.size == 0 or present.max() <= 1.0))
    out = np.zeros((len(frames), max_people, layout.total, 3), np.float32)
    for t, (people, (width, height)) in enumerate(parsed):
        people = sorted(people, key=lambda parts: -_body_area(parts[0]))[:max_people]
        for p, parts in enumerate(people):
            for i, part in enumerate(parts):
                sl = layout.part(i)
                if len(part) and len(part) != sl.stop - sl.start:
                    raise InputError(f"pose frame {t}: {PART_KEYS[i]} has {len(part)} points; "
                                     f"need {sl.stop - sl.start} (or an empty list)")
                if len(part):
                    out[t, p, sl] = part
        scale = np.array([1.0, 1.0] if normalised else [1.0 / width, 1.0 / height], np.float32)
        out[t, ..., :2] *= scale
    if not np.isfinite(out).all():
        frame = int(np.argwhere(~np.isfinite(out))[0][0])
        raise InputError(f"pose frame {frame} holds NaN or infinite keypoint values; every coordinate and "
                         "confidence must be a finite number (re-run the pose detector)")
    out[..., :2] *= (out[..., 2:] > 0)  # a missing point carries no position
    width, height = parsed[0][1]
    return PoseSequence(torch.from_numpy(out), layout, width / height)


def load_openpose_folder(folder: str | Path, **options) -> PoseSequence:
    """A folder of OpenPose JSON files (one per frame, sorted by name) -> PoseSequence."""
    folder = Path(folder)
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        raise InputError(f"{str(folder)!r} holds no OpenPose .json files; give a folder of *_keypoints.json")
    frames = []
    for file in files:
        try:
            frames.append(json.loads(read_text(file, "OpenPose JSON file")))
        except json.JSONDecodeError as exc:
            raise InputError(f"pose file {str(file)!r} is not valid JSON ({exc.msg} at line {exc.lineno}); give "
                             "OpenPose *_keypoints.json files") from exc
    return parse_pose_frames(frames, **options)


def smooth(seq: PoseSequence, sigma: float) -> PoseSequence:
    """Gaussian temporal smoothing (sigma in frames) over present points only; masks are kept."""
    if sigma <= 0:
        return seq
    radius = max(1, math.ceil(3 * sigma))
    kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1) / sigma) ** 2)  # [2r+1]
    kp = seq.keypoints
    valid = seq.mask.to(kp.dtype)  # [T, P, K]
    series = torch.cat([kp[..., :2] * valid[..., None], valid[..., None]], -1)  # [T, P, K, 3]
    flat = series.permute(1, 2, 3, 0).reshape(-1, 1, kp.shape[0])  # [P*K*3, 1, T]
    filtered = F.conv1d(F.pad(flat, (radius, radius), mode="replicate"), kernel[None, None])
    filtered = filtered.reshape(*kp.shape[1:], kp.shape[0]).permute(3, 0, 1, 2)  # [T, P, K, 3]
    xy = filtered[..., :2] / filtered[..., 2:].clamp(min=1e-8)
    out = kp.clone()
    out[..., :2] = torch.where(seq.mask[..., None], xy, 0.0)
    return PoseSequence(out, seq.layout, seq.aspect)


def _anchor(points: Tensor, mask: Tensor, aspect: float) -> tuple[Tensor, Tensor]:
    """Centroid and RMS radius of present points, in height units (x scaled by the aspect)."""
    if not mask.any():
        raise InputError("retarget: no face or body keypoints are present; cannot find the scale to retarget to")
    units = points[..., :2][mask] * torch.tensor([aspect, 1.0])  # [n, 2]
    centre = units.mean(0)
    return centre, (units - centre).pow(2).sum(-1).mean().sqrt().clamp(min=1e-6)


def retarget(seq: PoseSequence, reference: Tensor, reference_aspect: float) -> PoseSequence:
    """Scale and shift the whole sequence so its face (body if no face) matches the reference's.

    reference: one person's normalised keypoints [K, 3] in the same layout (e.g. detected on the
    portrait). One scale and offset for the whole sequence, so the driving motion is kept.
    """
    if reference.shape != (seq.layout.total, 3):
        raise InputError(f"retarget: reference keypoints {tuple(reference.shape)}; need [{seq.layout.total}, 3]")
    face = seq.layout.part(1)
    part = face if (reference[face, 2] > 0).any() and seq.mask[:, :, face].any() else seq.layout.part(0)
    c_ref, r_ref = _anchor(reference[part], reference[part, 2] > 0, reference_aspect)
    c_drv, r_drv = _anchor(seq.keypoints[:, :, part], seq.mask[:, :, part], seq.aspect)
    units = seq.keypoints[..., :2] * torch.tensor([seq.aspect, 1.0])
    moved = ((units - c_drv) * (r_ref / r_drv) + c_ref) / torch.tensor([reference_aspect, 1.0])
    out = seq.keypoints.clone()
    out[..., :2] = torch.where(seq.mask[..., None], moved, 0.0)
    return PoseSequence(out, seq.layout, reference_aspect)


def _draw_person(canvas: np.ndarray, points: np.ndarray, layout: PoseLayout, radius: int) -> None:
    h, w = canvas.shape[:2]
    pix = [(int(round(x * w)), int(round(y * h))) for x, y, _ in points]
    ok = points[:, 2] > 0
    body = layout.part(0)
    if layout.body == 18:
        for (a, b), colour in zip(BODY18_LIMBS, BODY18_COLOURS):
            if ok[a] and ok[b]:
                cv2.line(canvas, pix[a], pix[b], tuple(c // 2 for c in colour), max(1, radius // 2))
    for hand in (2, 3):
        sl = layout.part(hand)
        for a, b in HAND_LIMBS:
            if ok[sl.start + a] and ok[sl.start + b]:
                cv2.line(canvas, pix[sl.start + a], pix[sl.start + b], (0, 0, 255), 1)
    for i in range(layout.total):
        if not ok[i]:
            continue
        if body.start <= i < body.stop:
            cv2.circle(canvas, pix[i], radius, BODY18_COLOURS[i % len(BODY18_COLOURS)], -1)
        else:
            cv2.circle(canvas, pix[i], 1, (255, 255, 255), -1)


def render_pose_maps(seq: PoseSequence, width: int, height: int, radius: int = 4) -> Tensor:
    """OpenPose-style pose images [T, H, W, 3] float in [0, 1] (ComfyUI IMAGE layout), one per frame."""
    if width < 1 or height < 1:
        raise InputError(f"render_pose_maps: size {width}x{height}; need positive width and height")
    maps = np.zeros((seq.num_frames, height, width, 3), np.uint8)
    kp = seq.keypoints.numpy()
    for t in range(seq.num_frames):
        for person in kp[t]:
            _draw_person(maps[t], person, seq.layout, radius)
    return torch.from_numpy(maps).float() / 255.0


class PoseSignal(DrivingSignal):
    """Keypoint rows [P, K, 3] per video frame; with end_policy 'continue' the last pose is held."""

    name = "pose"

    def __init__(self, seq: PoseSequence, fps: float, end_policy: EndPolicy = "stop") -> None:
        super().__init__(fps, seq.num_frames, end_policy)
        self.seq = seq

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.seq.keypoints.shape[1:])

    def video_features(self, start: int, count: int) -> Tensor:
        index = torch.arange(start, start + count).clamp(max=self.seq.num_frames - 1)
        return self.seq.keypoints[index]  # [count, P, K, 3]
