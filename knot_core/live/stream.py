"""A live stream: one model, reference and driving, generating chunk after chunk for as long as it runs, paced to
the wall clock and driven by audio pushed while it runs.

The chunks come from the one render path (`knot_core.render_path`: `prepare` runs every pre-flight check with a
length no one reaches, `start` opens the engine state and the codec's streaming decoder, `frames` streams and
decodes with knot, window and anchor state carried across chunks; the stream stops by leaving that loop).
What is live is around it: before each chunk the stream waits for the audio its frames (and its knot) show,
turns it into the driving, and publishes the decoded frames with their audio and due times to subscribers.

Timing (video frame f is due on screen at `started + delay_s + (f + skipped) / fps`):
- a chunk needs audio up to the end of its knot: c + k latent frames (16 video frames for the demo model's
  c = 3, k = 1), plus `slack_s` of input jitter and `compute_s` to make it — that sum is `delay_s`;
- it is started no earlier than `lead_s` before it is due (output never runs far ahead: bounded queues);
- no audio by its deadline: the missing audio is silence and the portrait idles (head motion, blinks);
- late (the generator fell behind): the stream skips the frames it cannot show on time — their audio is
  dropped, the picture holds — so latency returns to `delay_s` instead of growing;
- a slow subscriber loses its oldest chunks (its own queue of `viewer_chunks`), nobody else is affected.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import VAE_STRIDE, StreamConfig, video_frames_for
from ..dit import KnotDiT
from ..engine.stream import StreamInputs
from ..errors import InputError
from ..render_path import LatentCodec, RenderPlan, frames, prepare, start, torch_threads
from ..render_plan import Length
from .audio_input import AudioTimeline, LiveLoudness
from .driving import LiveDriving

log = logging.getLogger(__name__)

LIVE_LENGTH = Length(10**12, "frames")  # a live stream has no end: a length it never reaches (1,270 years at 25 fps)


@dataclass(frozen=True)
class LiveSettings:
    fps: int = 25
    sample_rate: int = 16000  # the pushed audio and the audio sent with the video: mono float / s16le
    slack_s: float = 0.1  # input jitter allowance: audio is placed this far behind the live position
    compute_s: float = 0.2  # time budgeted to make one chunk (the demo model: ~0.1 s on a loaded 2-core CPU)
    lead_s: float = 0.3  # a chunk starts at most this long before its deadline
    max_ahead_s: float = 2.0  # the input buffer: audio pushed further ahead of the live position is dropped
    viewer_chunks: int = 4  # each subscriber's queue; a slower one loses its oldest chunks
    seed: int = 0  # the sampler noise
    threads: int | None = 1  # torch intra-op threads for the generator (1: the demo's tiny matrices)

    def __post_init__(self) -> None:
        if self.fps <= 0 or self.sample_rate % self.fps:
            raise InputError(f"sample_rate {self.sample_rate} must be a whole number of samples per video frame "
                             f"at fps {self.fps} (16000 at 25 fps: 640)")
        for name in ("slack_s", "compute_s", "lead_s", "max_ahead_s"):
            if not getattr(self, name) >= 0:
                raise InputError(f"{name}={getattr(self, name)}; give a non-negative number of seconds")
        if self.viewer_chunks < 1:
            raise InputError(f"viewer_chunks={self.viewer_chunks}; each viewer needs a queue of at least 1 chunk")

    @property
    def hop(self) -> int:
        """Audio samples per video frame."""
        return self.sample_rate // self.fps


@dataclass(frozen=True)
class LiveChunk:
    stream_id: str
    first_frame: int  # video index of frames[0]
    frames: np.ndarray  # (n, H, W, 3) uint8
    clock: np.ndarray  # (n,) int: each frame's slot on the stream clock (index + frames skipped before it)
    due: np.ndarray  # (n,) float: time.monotonic() at which each frame is due on screen
    audio: np.ndarray  # (n * hop,) float32 mono: the audio these frames show, frame by frame
    input_sample: np.ndarray  # (n,) int64: the pusher's sample index at each frame's audio start; -1 = silence
    input_arrival: np.ndarray  # (n,) float: time.monotonic() at which that sample arrived; nan = silence
    mouth: np.ndarray  # (n,) float32: the driving mouth opening of each frame


@dataclass
class LiveStats:
    chunks: int = 0
    frames: int = 0
    skipped_frames: int = 0  # frames dropped because the generator fell behind
    late_chunks: int = 0
    chunk_s: float = 0.0  # the last chunk's generation + decode time
    chunk_s_max: float = 0.0
    lateness_s_max: float = 0.0  # worst (ready - due) of a chunk's first frame; > 0 means shown late
    subscriber_drops: int = 0  # chunks a slow subscriber lost
    extra: dict = field(default_factory=dict)


class Subscription:
    """A bounded, thread-safe queue of chunks for one consumer; `notify` is called (from the stream thread) after
    each chunk, so an asyncio consumer can wake itself. get() returns None once the stream ended and it is empty."""

    def __init__(self, maxlen: int, notify: Callable[[], None] | None = None) -> None:
        self._chunks: deque[LiveChunk] = deque()
        self.maxlen, self.notify = maxlen, notify
        self._cond = threading.Condition()
        self.closed = False
        self.dropped = 0

    def put(self, chunk: LiveChunk) -> None:
        with self._cond:
            self._chunks.append(chunk)
            while len(self._chunks) > self.maxlen:
                self._chunks.popleft()
                self.dropped += 1
            self._cond.notify_all()
        self._wake_consumer()

    def get(self, timeout: float | None = None) -> LiveChunk | None:
        with self._cond:
            self._cond.wait_for(lambda: self._chunks or self.closed, timeout)
            return self._chunks.popleft() if self._chunks else None

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self._wake_consumer()

    def _wake_consumer(self) -> None:
        if self.notify is None:
            return
        try:
            self.notify()
        except RuntimeError:  # the consumer's event loop is closed: it is gone, stop feeding it
            self.notify, self.closed = None, True


class LiveStream:
    """Generates in its own thread from start() until stop(); audio comes in through push_audio()."""

    def __init__(self, model: KnotDiT, cfg: StreamConfig, inputs: StreamInputs, codec: LatentCodec,
                 driving: LiveDriving, settings: LiveSettings = LiveSettings(), stream_id: str | None = None) -> None:
        self.model, self.cfg, self.codec, self.driving, self.settings = model, cfg, codec, driving, settings
        self.inputs = StreamInputs(**{**inputs.__dict__, "signals": tuple(inputs.signals) + driving.signals})
        self.id = stream_id or secrets.token_urlsafe(12)  # unguessable: the id is the key to the stream's pages
        self.stats = LiveStats()
        self.error: BaseException | None = None
        self.timeline: AudioTimeline | None = None
        self.plan: RenderPlan | None = None
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.skip = 0  # frames skipped so far: frame f shows stream-clock slot f + skip

    # ---- control
    @property
    def delay_s(self) -> float:
        """Audio in -> its frame due on screen: the chunk and its knot, the jitter allowance, the compute budget."""
        s = self.settings
        ahead = VAE_STRIDE[0] * self.cfg.span  # video frames from a chunk's first to its knot's last
        return ahead / s.fps + s.slack_s + s.compute_s

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> LiveStream:
        if self._thread is not None:
            raise RuntimeError("a live stream starts once; make a new LiveStream")
        s = self.settings
        self.plan = prepare(self.model, self.codec, self.cfg, self.inputs, fps=s.fps, length=LIVE_LENGTH, seed=s.seed)
        self.timeline = AudioTimeline(s.sample_rate, slack_s=s.slack_s, max_ahead_s=s.max_ahead_s)
        self._thread = threading.Thread(target=self._run, name=f"knot-live-{self.id[:6]}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """End the stream: the generator finishes its chunk, every subscriber's get() then returns None."""
        self._stop.set()
        if self.timeline is not None:
            self.timeline.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def push_audio(self, samples: np.ndarray) -> int:
        """Mono float samples in [-1, 1] at settings.sample_rate; returns how many were dropped (flood bound)."""
        if self.timeline is None:
            raise RuntimeError("start() the stream before pushing audio")
        return self.timeline.push(samples)

    def subscribe(self, notify: Callable[[], None] | None = None, maxlen: int | None = None) -> Subscription:
        sub = Subscription(maxlen or self.settings.viewer_chunks, notify)
        with self._lock:
            if self._stop.is_set() or (self._thread is not None and not self._thread.is_alive()):
                sub.close()
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
                self.stats.subscriber_drops += sub.dropped
        sub.close()

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def due(self, frame: int) -> float:
        """time.monotonic() at which video frame `frame` is due on screen."""
        return self.timeline.started + self.delay_s + (frame + self.skip) / self.settings.fps

    # ---- the generator thread
    def _run(self) -> None:
        try:
            with torch_threads(self.settings.threads), torch.no_grad():
                self._generate()
        except BaseException as err:  # reported to the owner through self.error; the thread must not die silently
            self.error = err
            log.exception("live stream %s failed", self.id[:6])
        finally:
            with self._lock:
                subs, self._subs = self._subs, []
            for sub in subs:
                self.stats.subscriber_drops += sub.dropped
                sub.close()

    def _generate(self) -> None:
        position = start(self.plan)
        state, decoder = position.state, position.decoder
        pieces = frames(self.plan, position)
        loudness = LiveLoudness(self.settings.fps)
        prepared = -1  # last video frame whose driving is set
        while not self._stop.is_set():
            first = decoder.frames_decoded
            need = video_frames_for(state.next_frame + self.cfg.span) - 1  # the chunk's driving ends with its knot
            prepared = self._prepare(first, need, prepared, loudness)
            if self._stop.is_set():
                return
            started = time.monotonic()
            piece = next(pieces)
            elapsed = time.monotonic() - started
            self._publish(self._chunk(piece.first_frame, piece.frames.numpy()), elapsed)

    def _prepare(self, first: int, need: int, prepared: int, loudness: LiveLoudness) -> int:
        """Wait for (or give up on) the audio of frames up to `need`, skip if late; set the driving."""
        s, timeline = self.settings, self.timeline
        late = time.monotonic() + s.compute_s - self.due(first)
        if late > 0 and first > 0:
            skip = math.ceil(late * s.fps)
            self.skip += skip
            self.stats.skipped_frames += skip
            self.stats.late_chunks += 1
            log.info("live stream %s fell behind by %.2f s: skipping %d frames", self.id[:6], late, skip)
        deadline = self.due(first) - s.compute_s
        self._stop.wait(max(0.0, deadline - s.lead_s - time.monotonic()))
        target = (need + 1 + self.skip) * s.hop
        if not timeline.wait_for(target, deadline):
            timeline.fill_silence(target)
        for f in range(prepared + 1, need + 1):
            slot = (f + self.skip) * s.hop
            self.driving.set_mouth(f, loudness.frame(timeline.read(slot, slot + s.hop)))
        return max(prepared, need)

    def _chunk(self, first: int, frames: np.ndarray) -> LiveChunk:
        s, n = self.settings, frames.shape[0]
        clock = np.arange(first, first + n) + self.skip
        start, stop = int(clock[0]) * s.hop, int(clock[-1] + 1) * s.hop
        sources = [self.timeline.source_of(int(c) * s.hop) for c in clock]
        chunk = LiveChunk(self.id, first, frames, clock, np.array([self.due(f) for f in range(first, first + n)]),
                          self.timeline.read(start, stop), np.array([i for i, _ in sources], np.int64),
                          np.array([a for _, a in sources]), self.driving.mouth.opening(first, n))
        self.timeline.release(stop)
        return chunk

    def _publish(self, chunk: LiveChunk, elapsed: float) -> None:
        st = self.stats
        st.chunks, st.frames = st.chunks + 1, st.frames + chunk.frames.shape[0]
        st.chunk_s, st.chunk_s_max = elapsed, max(st.chunk_s_max, elapsed)
        st.lateness_s_max = max(st.lateness_s_max, time.monotonic() - float(chunk.due[0]))
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.put(chunk)

    def summary(self) -> dict:
        st, t = self.stats, self.timeline
        counts = t.counts if t is not None else None
        rate = self.settings.sample_rate
        return {"stream": self.id, "running": self.running, "chunks": st.chunks, "frames": st.frames,
                "fps": self.settings.fps, "delay_s": round(self.delay_s, 3), "chunk_s": round(st.chunk_s, 4),
                "chunk_s_max": round(st.chunk_s_max, 4), "skipped_frames": st.skipped_frames,
                "late_chunks": st.late_chunks, "lateness_s_max": round(st.lateness_s_max, 3),
                "subscribers": self.subscribers, "subscriber_drops": st.subscriber_drops,
                "input_s": counts.pushed / rate if counts else 0.0,
                "dropped_flood_s": counts.dropped_flood / rate if counts else 0.0,
                "silence_s": counts.silence / rate if counts else 0.0,
                "buffered_s": t.buffered() / rate if t else 0.0,
                "error": None if self.error is None else str(self.error)}
