"""Driving sequences for the procedural portraits (knot_core.faces): smooth random motion, speech-driven mouth.

Every sequence is random-access and lazy: `frame(i)` computes frame i from the seed alone (sums of
sinusoids with seeded frequencies and phases; blinks from a seeded per-interval draw), so a 10,000+ frame
(or unbounded) sequence costs nothing until a frame is asked for, and `frames(start, count)` serves the
chunk the stream needs. `SpeechMouth` drives the mouth from the loudness envelope of any speech file
(decoded with PyAV, RMS per video frame in dB). `MotionSignal` serves a sequence to the engine as a
`DrivingSignal` named "motion" (one parameter row per video frame, 4 rows per latent frame).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import InputError
from .faces import NUM_PARAMS, PARAM_NAMES, DrivingFrame
from .signals.base import DrivingSignal

FPS = 25
_MOUTH = PARAM_NAMES.index("mouth_open")
_WIDE = PARAM_NAMES.index("mouth_wide")
_BLINK = PARAM_NAMES.index("blink")
BLINK_INTERVAL = 3.0  # seconds per blink slot; one blink at a seeded time inside each slot
BLINK_FRAMES = 5  # a blink closes and reopens over 5 frames (0.2 s)
# Idle head motion: what the driving signal does not carry. Per channel (yaw, pitch, roll, tx, ty) the largest
# excursion; 0.4 of tx is ~3 px at 96 px, and at 0.3-1.2 Hz the head drifts several pixels per 12-frame chunk.
IDLE_GAIN = np.array([0.12, 0.12, 0.12, 0.4, 0.4, 0, 0, 0, 0])
IDLE_HZ = (0.3, 1.2)


class MotionSequence:
    """Smooth random head motion, brows, blinks and (unless replaced) a speech-like mouth; seeded, lazy.

    Each channel is a sum of three sinusoids with seeded frequencies (slow for the head, faster for the
    mouth) and phases, scaled by `amount`; num_frames None means unbounded. Blinks fall at a seeded random
    time in each `blink_interval` slot (3 s; training clips may use shorter ones to see more blinks).
    `idle` (0 = none) scales a seeded idle head motion (IDLE_GAIN, four sinusoids of
    0.3-1.2 Hz per channel) that `frames` (what is drawn) contains and `signal_frames` (what the driving
    signal gives the model) leaves out: motion a model must carry across chunk boundaries itself.
    """

    def __init__(self, seed: int, num_frames: int | None = None, fps: int = FPS, amount: float = 1.0,
                 mouth: SpeechMouth | None = None, idle: float = 0.0, blink_interval: float = BLINK_INTERVAL):
        if num_frames is not None and num_frames < 1:
            raise InputError(f"num_frames={num_frames}; a driving sequence needs >= 1 frame (or None: unbounded)")
        if not blink_interval * fps > 2 * BLINK_FRAMES:
            raise InputError(f"blink_interval={blink_interval} s; give more than {2 * BLINK_FRAMES / fps:.2f} s "
                             f"(a blink takes {BLINK_FRAMES} frames, a slot at least twice that)")
        self.blink_interval = float(blink_interval)
        self.seed, self.num_frames, self.fps, self.amount, self.mouth = int(seed), num_frames, fps, amount, mouth
        rng = np.random.default_rng([self.seed, 11])
        # Hz per channel: head 0.05-0.4, mouth 1.5-5 (syllables), brows 0.1-0.6
        lo = np.array([0.05, 0.05, 0.05, 0.03, 0.03, 1.5, 0.3, 0.0, 0.1])
        hi = np.array([0.4, 0.4, 0.3, 0.2, 0.2, 5.0, 1.5, 0.0, 0.6])
        self.freq = rng.uniform(lo[:, None], hi[:, None], (NUM_PARAMS, 3))  # (P, 3)
        self.phase = rng.uniform(0, 2 * math.pi, (NUM_PARAMS, 3))
        self.gain = np.array([0.9, 0.6, 0.5, 0.6, 0.5, 1.0, 0.8, 0.0, 0.8]) * rng.uniform(0.5, 1.0, NUM_PARAMS)
        self.speech_rate = rng.uniform(0.15, 0.5)  # Hz of talking/pausing alternation
        self._blink_slot = (-1, 0)  # (slot, first blink frame) of the last slot asked for
        self.idle = float(idle)
        idle_rng = np.random.default_rng([self.seed, 17])
        self.idle_freq = idle_rng.uniform(*IDLE_HZ, (NUM_PARAMS, 4))  # (P, 4)
        self.idle_phase = idle_rng.uniform(0, 2 * math.pi, (NUM_PARAMS, 4))

    def __len__(self) -> int:
        if self.num_frames is None:
            raise TypeError("an unbounded MotionSequence has no length")
        return self.num_frames

    def frames(self, start: int, count: int) -> np.ndarray:
        """Parameter rows of frames start .. start+count-1 as drawn (idle motion included): (count, P) float32."""
        rows = self.signal_frames(start, count)
        if self.idle:
            rows = np.clip(rows + self.idle_motion(start, count), -1.0, 1.0)
        return rows.astype(np.float32)

    def idle_motion(self, start: int, count: int) -> np.ndarray:
        """The idle head motion of frames start .. start+count-1: (count, P), zero outside the head's channels."""
        t = (np.arange(start, start + count, dtype=np.float64) / self.fps)[:, None, None]  # (count, 1, 1)
        waves = np.sin(2 * math.pi * self.idle_freq[None] * t + self.idle_phase[None]).mean(-1)  # (count, P)
        return (waves * 2 * IDLE_GAIN * self.idle).astype(np.float32)  # mean of 4 unit waves stays within +-0.5

    def signal_frames(self, start: int, count: int) -> np.ndarray:
        """Parameter rows of frames start .. start+count-1 without the idle motion (the driving signal)."""
        if start < 0 or count < 0 or (self.num_frames is not None and start + count > self.num_frames):
            raise InputError(f"frames({start}, {count}) outside a sequence of {self.num_frames} frames")
        t = (np.arange(start, start + count, dtype=np.float64) / self.fps)[:, None, None]  # (count, 1, 1)
        waves = np.sin(2 * math.pi * self.freq[None] * t + self.phase[None]).mean(-1)  # (count, P)
        out = np.clip(waves * self.gain * 1.6 * self.amount, -1.0, 1.0)
        talk = 0.5 + 0.5 * np.sin(2 * math.pi * self.speech_rate * t[:, 0, 0] + self.phase[_MOUTH, 0])
        out[:, _MOUTH] = np.clip((0.5 + 0.9 * out[:, _MOUTH]) * np.clip(talk * 1.5, 0, 1), 0.0, 1.0)
        out[:, PARAM_NAMES.index("brow")] = np.abs(out[:, PARAM_NAMES.index("brow")])
        out[:, _BLINK] = [self._blink(i) for i in range(start, start + count)]
        if self.mouth is not None:
            out[:, _MOUTH] = self.mouth.opening(start, count)
            out[:, _WIDE] *= 0.5
        return out.astype(np.float32)

    def frame(self, index: int) -> DrivingFrame:
        return DrivingFrame.from_vector(self.frames(index, 1)[0])

    def __iter__(self) -> Iterator[DrivingFrame]:
        """Frame after frame, computed on demand one second (fps frames) at a time: memory stays flat."""
        i = 0
        while self.num_frames is None or i < self.num_frames:
            count = self.fps if self.num_frames is None else min(self.fps, self.num_frames - i)
            for row in self.frames(i, count):
                yield DrivingFrame.from_vector(row)
            i += count

    def _blink(self, index: int) -> float:
        slot_len = int(self.blink_interval * self.fps)
        slot = index // slot_len
        if self._blink_slot[0] != slot:  # one seeded draw per slot, kept while frames of that slot are asked
            offset = int(np.random.default_rng([self.seed, 13, slot]).integers(0, slot_len - BLINK_FRAMES))
            self._blink_slot = (slot, slot * slot_len + offset)
        start = self._blink_slot[1]
        k = index - start
        if not 0 <= k < BLINK_FRAMES:
            return 0.0
        return float(math.sin(math.pi * (k + 0.5) / BLINK_FRAMES))


def loudness_envelope(path: str | Path, fps: int = FPS) -> np.ndarray:
    """Mouth opening per video frame from a speech file: RMS per 1/fps window in dB, mapped to [0, 1].

    Any format PyAV reads; channels are averaged. 42 dB below the loudest frame (or silence) maps to 0,
    2 dB below it to 1; a clip that never gets 42 dB quieter (silence, a constant level) is measured from
    its 10th-percentile level instead, so it keeps the mouth closed.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file {str(path)!r} does not exist; give a speech file (wav, m4a, mp3, ...)")
    return loudness_of(*decode_audio(path), fps=fps)


LOUDNESS_RANGE_DB = 42.0  # this far below the loudest frame the mouth is closed ...
LOUDNESS_OPEN_DB = 2.0  # ... and this far below it fully open (the live stream's causal version uses the same)


def loudness_of(samples: np.ndarray, rate: int, fps: int = FPS) -> np.ndarray:
    """`loudness_envelope` of mono samples (N,) at `rate` Hz already in memory (e.g. a ComfyUI AUDIO)."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if samples.size == 0 or rate <= 0:
        raise InputError(f"audio has {samples.size} samples at {rate} Hz; give a non-empty clip with a positive rate")
    hop = rate / fps
    n = max(1, int(math.ceil(len(samples) / hop)))
    idx = (np.arange(n)[:, None] * hop + np.arange(int(hop))[None]).astype(np.int64)  # (n, hop)
    frames = np.where(idx < len(samples), samples[np.minimum(idx, len(samples) - 1)], 0.0)
    db = 20 * np.log10(np.sqrt((frames**2).mean(1)) + 1e-8)
    # closed at 42 dB below the loudest frame, or at the clip's usual quiet level (10th percentile) when it
    # never gets that quiet: silence or a constant level has no syllables and keeps the mouth closed rather
    # than wide open (the old mapping was relative to the maximum alone)
    floor = max(db.max() - LOUDNESS_RANGE_DB, float(np.percentile(db, 10)))
    env = np.clip((db - floor) / max(db.max() - LOUDNESS_OPEN_DB - floor, 10.0), 0.0, 1.0)
    return np.convolve(env, np.ones(2) / 2, mode="same").astype(np.float32)  # soften frame-to-frame jitter


def decode_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the sample rate of the first audio stream (audio.load_audio, the
    one decoder; channels averaged)."""
    from .audio import load_audio

    wave, rate = load_audio(path)  # (C, N)
    return wave.mean(dim=0).numpy(), rate


class SpeechMouth:
    """Mouth opening from a loudness envelope; past the end of the audio the mouth stays closed."""

    def __init__(self, envelope: np.ndarray):
        self.envelope = np.asarray(envelope, dtype=np.float32)

    @classmethod
    def from_file(cls, path: str | Path, fps: int = FPS) -> SpeechMouth:
        return cls(loudness_envelope(path, fps))

    def opening(self, start: int, count: int) -> np.ndarray:
        out = np.zeros(count, np.float32)
        lo, hi = min(start, len(self.envelope)), min(start + count, len(self.envelope))
        out[: hi - lo] = self.envelope[lo:hi]
        return out


class MotionSignal(DrivingSignal):
    """A MotionSequence as the engine's "motion" driving signal: rows (NUM_PARAMS,) per video frame."""

    name = "motion"

    def __init__(self, sequence: MotionSequence, ends_at: int | None = None):
        """ends_at: where a render measured in 'signal' stops (e.g. the end of the speech its mouth follows) on an
        unbounded sequence, which runs on past it (end_policy 'continue'); None: the sequence's own end."""
        if ends_at is None:
            super().__init__(sequence.fps, sequence.num_frames, "stop")
        else:
            if sequence.num_frames is not None:
                raise InputError("MotionSignal(ends_at=...) takes an unbounded sequence (num_frames=None)")
            super().__init__(sequence.fps, ends_at, "continue")
        self.sequence = sequence

    @classmethod
    def speaking(cls, seed: int, envelope: np.ndarray, amount: float) -> MotionSignal:
        """The demo's driving with speech: seeded head motion, blinks and brows, the mouth following the loudness
        `envelope` (one value per frame at FPS) and closed after it; the signal's end is the speech's end
        (length 'signal' stops there), and a longer render runs on with the mouth closed."""
        sequence = MotionSequence(seed, None, amount=amount, mouth=SpeechMouth(envelope))
        return cls(sequence, ends_at=max(1, len(envelope)))

    @property
    def row_shape(self) -> tuple[int, ...]:
        return (NUM_PARAMS,)

    def video_features(self, start: int, count: int) -> Tensor:
        return torch.from_numpy(self.sequence.signal_frames(start, count))  # (count, NUM_PARAMS), no idle motion
