"""Driving signals: per-video-frame feature streams, served per latent frame of the Wan2.1 VAE.

Latent/video alignment of the Wan2.1 causal VAE (temporal stride 4): latent 0 decodes to
video frame 0, latent k >= 1 to video frames 4k-3 .. 4k. A signal serves each latent frame
as a group of 4 feature rows, so the engine can ask for chunk after chunk (including a
re-ask of the knot frame) and only what that range needs is computed. Signals that
pre-date this mapping (AvatarForcing's audio) override `video_frames_of_latent`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor

from ..config import FRAMES_PER_LATENT
from ..errors import InputError

EndPolicy = Literal["stop", "continue"]
END_POLICIES: tuple[str, ...] = ("stop", "continue")
NO_FRAME = -1  # marks a row filled with zeros (AvatarForcing's leading zero row)


def check_fps(fps: float, what: str) -> float:
    if not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise InputError(f"{what}: fps={fps!r}; the frame rate must be a positive number (e.g. 25 or 16)")
    return float(fps)


def check_end_policy(end_policy: str, what: str) -> str:
    if end_policy not in END_POLICIES:
        raise InputError(f"{what}: end_policy={end_policy!r}; choose 'stop' (end with the signal) or "
                         "'continue' (run on past its end)")
    return end_policy


def wan_video_frames_of_latent(k: int) -> list[int]:
    """Video frames decoded from latent k by the Wan2.1 VAE; latent 0's single frame is repeated ×4."""
    if k == 0:
        return [0] * FRAMES_PER_LATENT
    return list(range(FRAMES_PER_LATENT * k - FRAMES_PER_LATENT + 1, FRAMES_PER_LATENT * k + 1))


class RowCache:
    """A small LRU of computed row blocks keyed by their first video frame (bounded memory)."""

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self._blocks: OrderedDict[int, Tensor] = OrderedDict()

    def get(self, key: int) -> Tensor | None:
        block = self._blocks.get(key)
        if block is not None:
            self._blocks.move_to_end(key)
        return block

    def put(self, key: int, block: Tensor) -> None:
        self._blocks[key] = block
        self._blocks.move_to_end(key)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)

    def __len__(self) -> int:
        return len(self._blocks)


class DrivingSignal(ABC):
    """A feature stream aligned to video frames at `fps`; `num_frames` video frames exist (None = unbounded).

    Subclasses implement `video_features(start, count)` -> [count, ...] for video frames that exist
    (or, with end_policy 'continue', past the end). `latent_features` groups them per latent frame.
    """

    name: str = ""

    def __init__(self, fps: float, num_frames: int | None, end_policy: EndPolicy = "stop") -> None:
        self.fps = check_fps(fps, f"{self.name or 'driving'} signal")
        if num_frames is not None and num_frames < 1:
            raise InputError(f"{self.name} signal has {num_frames} frames; it needs at least one frame")
        self.num_frames = num_frames
        self.end_policy: EndPolicy = check_end_policy(end_policy, f"{self.name} signal")

    @abstractmethod
    def video_features(self, start: int, count: int) -> Tensor:
        """Feature rows of video frames start .. start+count-1, [count, ...]."""

    @property
    @abstractmethod
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one video frame's feature row."""

    @property
    def device(self) -> torch.device:
        """Where the feature rows are produced."""
        return torch.device("cpu")

    def video_frames_of_latent(self, k: int) -> list[int]:
        return wan_video_frames_of_latent(k)

    def available_latent_frames(self) -> int | None:
        """Latent frames whose rows all exist; None when the stream runs on (unbounded or 'continue')."""
        if self.num_frames is None or self.end_policy == "continue":
            return None
        k = self.num_frames // FRAMES_PER_LATENT + 2  # an upper bound; the mapping is monotone in k
        while k > 0 and max(self.video_frames_of_latent(k - 1)) >= self.num_frames:
            k -= 1
        return k

    def latent_features(self, start: int, count: int) -> Tensor:
        """Rows for latent frames start .. start+count-1: [count, 4, *row_shape]."""
        if start < 0 or count < 1:
            raise InputError(f"{self.name} signal: asked for latent frames start={start}, count={count}; "
                             "need start >= 0 and count >= 1")
        available = self.available_latent_frames()
        if available is not None and start + count > available:
            raise InputError(
                f"{self.name} signal ends at latent frame {available} ({self.num_frames} video frames at "
                f"{self.fps:g} fps) but latent frames up to {start + count} were asked for; shorten the video "
                "or set end_policy='continue' to run on past the end of the signal")
        frames = [f for k in range(start, start + count) for f in self.video_frames_of_latent(k)]
        real = [f for f in frames if f != NO_FRAME]
        if not real:
            return torch.zeros(count, FRAMES_PER_LATENT, *self.row_shape, device=self.device)
        lo, hi = min(real), max(real)
        block = self.video_features(lo, hi - lo + 1)  # [hi-lo+1, *row]
        rows = block.new_zeros(len(frames), *self.row_shape)  # [count*4, *row]
        take = torch.tensor([f - lo for f in real], device=block.device)
        keep = torch.tensor([i for i, f in enumerate(frames) if f != NO_FRAME], device=block.device)
        rows[keep] = block[take]
        return rows.reshape(count, FRAMES_PER_LATENT, *self.row_shape)


class SignalSet:
    """Several signals driving one stream, asked together per chunk; keyed by signal name."""

    def __init__(self, signals: Iterable[DrivingSignal]) -> None:
        self.signals: dict[str, DrivingSignal] = {}
        for signal in signals:
            if signal.name in self.signals:
                raise InputError(f"two '{signal.name}' signals given; give at most one signal of each kind")
            self.signals[signal.name] = signal
        rates = {s.fps for s in self.signals.values()}
        if len(rates) > 1:
            raise InputError(f"signals are aligned to different frame rates {sorted(rates)}; build every "
                             "signal at the video's fps")

    def available_latent_frames(self) -> int | None:
        bounded = [n for s in self.signals.values() if (n := s.available_latent_frames()) is not None]
        return min(bounded) if bounded else None

    def latent_features(self, start: int, count: int) -> dict[str, Tensor]:
        return {name: signal.latent_features(start, count) for name, signal in self.signals.items()}
