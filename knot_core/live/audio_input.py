"""Live audio of one stream: pushed samples placed on the stream's clock, with a bounded buffer, and the mouth
opening they drive.

The stream's clock starts when the stream starts; timeline sample p is the audio of stream time p / rate.
A push is placed where the live position is (minus `slack_s` of jitter allowance), or right after the previous
push when that is later, so audio that arrives in real time (a microphone) plays back continuously, and a
gap in the input (nothing pushed) becomes silence. Bounds, so latency never grows:
- flood: audio more than `max_ahead_s` ahead of the live position is dropped (the newest samples; the
  pusher is told how many) — a program pushing faster than real time must pace itself;
- a late generator skips timeline audio instead of queueing it (knot_core.live.stream).

`LiveLoudness` is `knot_core.motion.loudness_of` made causal: the same RMS-per-video-frame in dB, 42 dB range
and two-frame smoothing, but relative to a running peak (a live stream has no "loudest frame of the clip").
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..motion import LOUDNESS_OPEN_DB, LOUDNESS_RANGE_DB

LOUDNESS_SPAN_DB = LOUDNESS_RANGE_DB - LOUDNESS_OPEN_DB  # closed at the range below the peak, open near it
PEAK_FLOOR_DB = -30.0  # the running peak never falls below this, so room noise alone keeps the mouth closed
PEAK_DECAY_DB_PER_S = 3.0  # a loud moment stops setting the scale after ~10 s


@dataclass
class InputCounts:
    """What happened to the pushed audio, in samples."""

    pushed: int = 0
    placed: int = 0
    dropped_flood: int = 0  # beyond max_ahead_s: refused
    silence: int = 0  # gaps filled with silence (no input, or input that came too late)


class AudioTimeline:
    """Mono float32 samples on the stream clock; one writer (`push`) and one reader (the stream thread)."""

    def __init__(self, rate: int, *, slack_s: float, max_ahead_s: float, started: float | None = None) -> None:
        self.rate, self.slack, self.max_ahead = rate, int(slack_s * rate), int(max_ahead_s * rate)
        self.started = time.monotonic() if started is None else started
        self._cond = threading.Condition()
        self._buf = np.zeros(0, np.float32)  # timeline samples [base, end)
        self._base = 0
        self._segments: deque[tuple[int, int, int, float]] = deque()  # (timeline start, length, input index, arrival)
        self._closed = False
        self.counts = InputCounts()

    @property
    def end(self) -> int:
        return self._base + self._buf.shape[0]

    def live_position(self, now: float | None = None) -> int:
        return int(((time.monotonic() if now is None else now) - self.started) * self.rate)

    def push(self, samples: np.ndarray, now: float | None = None) -> int:
        """Place samples (n,) float in [-1, 1]; returns how many were dropped (flood bound)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not np.isfinite(samples).all():
            raise InputError("audio samples contain NaN or Inf; send finite PCM")
        now = time.monotonic() if now is None else now
        with self._cond:
            live = self.live_position(now)
            place = max(self.end, live - self.slack)
            self._silence_to(place)
            keep = int(np.clip(live + self.max_ahead - place, 0, samples.shape[0]))
            if keep:
                self._buf = np.concatenate([self._buf, samples[:keep]])
                self._segments.append((place, keep, self.counts.pushed, now))
            self.counts.pushed += samples.shape[0]
            self.counts.placed += keep
            self.counts.dropped_flood += samples.shape[0] - keep
            self._cond.notify_all()
        return samples.shape[0] - keep

    def wait_for(self, position: int, deadline: float) -> bool:
        """Block until the timeline reaches `position` (True) or `deadline` passes / the timeline closes (False)."""
        with self._cond:
            while self.end < position and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return self.end >= position

    def fill_silence(self, position: int) -> None:
        with self._cond:
            self._silence_to(position)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) (zeros for any not yet there or already released)."""
        out = np.zeros(max(0, stop - start), np.float32)
        with self._cond:
            lo, hi = max(start, self._base), min(stop, self.end)
            if hi > lo:
                out[lo - start : hi - start] = self._buf[lo - self._base : hi - self._base]
        return out

    def source_of(self, position: int) -> tuple[int, float]:
        """(the pusher's sample index, its arrival time) of timeline sample `position`; (-1, nan) for silence."""
        with self._cond:
            for start, length, index, arrival in self._segments:
                if start <= position < start + length:
                    return index + position - start, arrival
        return -1, math.nan

    def release(self, position: int) -> None:
        """The reader is done with everything before `position`: free it."""
        with self._cond:
            drop = int(np.clip(position - self._base, 0, self._buf.shape[0]))
            self._buf, self._base = self._buf[drop:], self._base + drop
            while self._segments and self._segments[0][0] + self._segments[0][1] <= self._base:
                self._segments.popleft()

    def buffered(self) -> int:
        with self._cond:
            return self._buf.shape[0]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _silence_to(self, position: int) -> None:
        gap = position - self.end
        if gap > 0:
            self._buf = np.concatenate([self._buf, np.zeros(gap, np.float32)])
            self.counts.silence += gap


class LiveLoudness:
    """Mouth opening of each video frame's audio, causally (see the module docstring)."""

    def __init__(self, fps: int) -> None:
        self.fps = fps
        self.peak = PEAK_FLOOR_DB
        self.previous = 0.0

    def frame(self, samples: np.ndarray) -> float:
        db = 20.0 * math.log10(math.sqrt(float(np.mean(np.square(samples, dtype=np.float64)))) + 1e-8)
        self.peak = max(db, self.peak - PEAK_DECAY_DB_PER_S / self.fps, PEAK_FLOOR_DB)
        level = min(max((db - (self.peak - LOUDNESS_RANGE_DB)) / LOUDNESS_SPAN_DB, 0.0), 1.0)
        out, self.previous = 0.5 * (level + self.previous), level  # loudness_of's two-frame smoothing
        return out


class LiveMouth:
    """`SpeechMouth`'s interface (`opening(start, count)`) over values set per video frame as audio arrives.

    Keeps the last `keep` frames only (the engine re-reads at most a chunk and its knot)."""

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self._values: dict[int, float] = {}
        self.last = -1  # highest frame set

    def set(self, frame: int, value: float) -> None:
        self._values[frame] = value
        self.last = max(self.last, frame)
        for old in [f for f in self._values if f <= self.last - self.keep]:
            del self._values[old]

    def opening(self, start: int, count: int) -> np.ndarray:
        return np.array([self._values.get(f, 0.0) for f in range(start, start + count)], np.float32)
