"""Expression driving signal: per-frame coefficient sequences resampled to the video fps.

Reads ARKit-52 blendshape CSVs as Epic's Live Link Face app exports them (header
`Timecode,BlendShapeCount,EyeBlinkLeft,...`: 52 blendshapes in Apple's ARKit order,
optionally followed by 9 head/eye rotation columns; timecodes `HH:MM:SS:FF.fff`), plain
numeric CSVs (optional header row) and JSON arrays (`[[...], ...]` or
`{"fps": 30, "frames": [[...], ...]}`). Resampling is linear in time.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import InputError
from ..text_file import read_text
from .base import DrivingSignal, EndPolicy, check_fps

ARKIT_52 = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeSquintLeft",
    "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight", "JawForward", "JawRight", "JawLeft", "JawOpen", "MouthClose", "MouthFunnel",
    "MouthPucker", "MouthRight", "MouthLeft", "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft",
    "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight",
    "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper", "MouthPressLeft", "MouthPressRight",
    "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft", "MouthUpperUpRight", "BrowDownLeft",
    "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft",
    "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight", "TongueOut",
)
ARKIT_HEAD = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
              "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
LIVE_LINK_FPS = 60.0  # Live Link Face records at 60 fps by default


@dataclass(frozen=True)
class ExpressionSequence:
    """values [T, D] sampled at times [T] (seconds from the first sample); names of the D columns."""

    values: Tensor
    times: Tensor
    names: tuple[str, ...]

    def resample(self, fps: float) -> Tensor:
        """Values at t = i / fps for every i with t within the recording: [T', D], linear in time."""
        fps = check_fps(fps, "expression resample")
        count = math.floor(float(self.times[-1]) * fps + 1e-6) + 1
        t = torch.arange(count, dtype=torch.float64) / fps  # [T']
        times = self.times.to(torch.float64)
        right = torch.searchsorted(times, t, right=True).clamp(1, max(len(times) - 1, 1))  # [T']
        left = right - 1
        if len(times) == 1:
            return self.values[[0] * count]
        span = (times[right] - times[left]).clamp(min=1e-9)
        w = ((t - times[left]) / span).clamp(0, 1).to(self.values.dtype)[:, None]  # [T', 1]
        return self.values[left] * (1 - w) + self.values[right] * w  # [T', D]


def _floats(row: list[str], where: str) -> list[float]:
    try:
        values = [float(v) for v in row]
    except ValueError as exc:
        raise InputError(f"{where}: {exc}; every coefficient must be a number") from exc
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"{where}: NaN or infinite coefficient; every coefficient must be finite")
    return values


def _timecode_seconds(code: str, source_fps: float, where: str) -> float:
    """Live Link Face timecode HH:MM:SS:FF.fff (frames with a sub-frame fraction) -> seconds."""
    parts = code.strip().split(":")
    try:
        h, m, s, frames = int(parts[0]), int(parts[1]), int(parts[2]), float(parts[3])
    except (IndexError, ValueError) as exc:
        raise InputError(f"{where}: timecode {code!r}; need HH:MM:SS:FF.fff as Live Link Face writes") from exc
    return h * 3600 + m * 60 + s + frames / source_fps


def _parse_arkit(header: list[str], rows: list[list[str]], source_fps: float, path: str) -> ExpressionSequence:
    names = [n.strip() for n in header[2:]]
    if len(names) not in (len(ARKIT_52), len(ARKIT_52) + len(ARKIT_HEAD)):
        raise InputError(f"{path}: the header has {len(header)} columns; a Live Link Face CSV has "
                         f"{2 + len(ARKIT_52)} (Timecode, BlendShapeCount, 52 blendshapes) or "
                         f"{2 + len(ARKIT_52) + len(ARKIT_HEAD)} (with head and eye rotations)")
    lookup = {n.lower(): i for i, n in enumerate(names)}
    missing = [n for n in ARKIT_52 if n.lower() not in lookup]
    if missing:
        raise InputError(f"{path}: blendshape columns {missing[:4]} are missing; need all 52 ARKit names")
    order = [lookup[n.lower()] for n in ARKIT_52]
    times, values = [], []
    for r, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise InputError(f"{path}, line {r}: {len(row)} columns but the header has {len(header)}; "
                             "every row needs one value per header column")
        times.append(_timecode_seconds(row[0], source_fps, f"{path}, line {r}"))
        coeffs = _floats(row[2:], f"{path}, line {r}")
        values.append([coeffs[i] for i in order])
    t = torch.tensor(times, dtype=torch.float64)
    if (t[1:] < t[:-1]).any():
        # A timecode that runs backwards (e.g. a wrap at midnight): fall back to the nominal frame rate.
        t = torch.arange(len(times), dtype=torch.float64) / source_fps
    return ExpressionSequence(torch.tensor(values, dtype=torch.float32), t - t[0], ARKIT_52)


def _uniform(values: list[list[float]], names: tuple[str, ...], source_fps: float | None,
             path: str) -> ExpressionSequence:
    if source_fps is None:
        raise InputError(f"{path}: a plain coefficient file carries no frame rate; pass source_fps (the rate "
                         "its rows were recorded at; CLI: --expression-fps), or use JSON "
                         "{\"fps\": ..., \"frames\": [...]}")
    widths = {len(v) for v in values}
    if len(widths) != 1 or 0 in widths:
        raise InputError(f"{path}: rows have {sorted(widths)} values; every frame needs the same number (> 0)")
    times = torch.arange(len(values), dtype=torch.float64) / check_fps(source_fps, f"{path} source")
    return ExpressionSequence(torch.tensor(values, dtype=torch.float32), times, names)


def load_expression(path: str | Path, *, source_fps: float | None = None) -> ExpressionSequence:
    """A Live Link Face CSV, a plain numeric CSV or a JSON array of per-frame coefficients.

    source_fps: rate of the file's rows (Live Link Face: 60 by default; JSON may carry "fps").
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"expression file {str(path)!r} does not exist; give a .csv or .json file")
    text = read_text(path, "expression file (.csv or .json)", encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc})") from exc
        if isinstance(data, dict):
            source_fps = source_fps if source_fps is not None else data.get("fps")
            data = data.get("frames", data.get("coefficients"))
        if not isinstance(data, list) or not data or not all(isinstance(r, list) for r in data):
            raise InputError(f"{path}: need a JSON list of per-frame coefficient lists, or "
                             '{"fps": ..., "frames": [[...], ...]}')
        rows = [_floats([str(v) for v in r], f"{path}, frame {i}") for i, r in enumerate(data)]
        return _uniform(rows, (), source_fps, str(path))
    table = [row for row in csv.reader(text.splitlines()) if row]
    if not table:
        raise InputError(f"{path}: the file is empty; need a header and one row per frame")
    header = [c.strip() for c in table[0]]
    if header[:2] == ["Timecode", "BlendShapeCount"]:
        return _parse_arkit(header, table[1:], source_fps or LIVE_LINK_FPS, str(path))
    has_header = any(not _is_number(c) for c in header)
    rows = [_floats(r, f"{path}, line {i + 1 + has_header}") for i, r in enumerate(table[has_header:])]
    if has_header and rows and len(rows[0]) != len(header):
        raise InputError(f"{path}: the header has {len(header)} columns but rows have {len(rows[0])}")
    return _uniform(rows, tuple(header) if has_header else (), source_fps, str(path))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class ExpressionSignal(DrivingSignal):
    """Coefficient rows [D] per video frame at `fps`; with end_policy 'continue' the last frame is held."""

    name = "expression"

    def __init__(self, seq: ExpressionSequence, fps: float, end_policy: EndPolicy = "stop") -> None:
        self.values = seq.resample(check_fps(fps, "expression signal"))  # [T', D]
        super().__init__(fps, self.values.shape[0], end_policy)
        self.names = seq.names

    @property
    def row_shape(self) -> tuple[int, ...]:
        return (self.values.shape[1],)

    def video_features(self, start: int, count: int) -> Tensor:
        index = torch.arange(start, start + count).clamp(max=self.values.shape[0] - 1)
        return self.values[index]  # [count, D]
