"""The built-in demo model, live: the stream `python -m knot_core live` serves."""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..demo import (
    DEMO_MOTION_AMOUNT,
    DEMO_PORTRAIT_SEED,
    MODELS_DIR,
    check_portrait_seed,
    demo_reference,
    demo_size,
    load_demo,
)
from ..engine.stream import StreamInputs
from ..errors import InputError, KnotError
from ..render_path import check_seed
from .driving import live_driving
from .stream import LiveSettings, LiveStream


@dataclass(frozen=True)
class DemoLiveOptions:
    portrait_seed: int = DEMO_PORTRAIT_SEED
    motion_seed: int = 0  # head motion, blinks, brows
    motion_amount: float = DEMO_MOTION_AMOUNT  # head motion amplitude; 0 = still head (mouth and blinks move)
    models: Path = MODELS_DIR  # demo.safetensors + demo_codec.safetensors: the bundled ones, or a recipe run's

    def __post_init__(self) -> None:
        check_portrait_seed(self.portrait_seed)
        check_seed(self.motion_seed)
        if not (isinstance(self.motion_amount, (int, float)) and 0 <= self.motion_amount <= 1):  # NaN fails too
            raise InputError(f"motion amount {self.motion_amount}; give 0..1 (the range the demo was trained on)")


def demo_live_stream(options: DemoLiveOptions = DemoLiveOptions(), settings: LiveSettings | None = None) -> LiveStream:
    """A live stream of the demo portrait (not started)."""
    settings = settings or LiveSettings()
    model, info, codec = load_demo(options.models)
    _, reference = demo_reference(codec, options.portrait_seed, demo_size(info))  # (1, 16, 1, h, w)
    inputs = StreamInputs(latent_size=tuple(reference.shape[3:]), reference=reference)
    driving = live_driving(model, seed=options.motion_seed, motion_amount=options.motion_amount, fps=settings.fps)
    return LiveStream(model, info.stream_config(), inputs, codec, driving, settings)


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8390
    record: str | None = None  # MP4 path written as the stream goes
    overwrite: bool = False
    seconds: float | None = None  # None: until Ctrl-C
    demo: DemoLiveOptions = DemoLiveOptions()

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise InputError(f"port {self.port}; give a port from 1 to 65535 (0 picks a free one)")
        seconds = self.seconds
        if seconds is not None and not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
            raise InputError(f"seconds={seconds}; give a positive, finite duration, or leave it out to run until "
                             "Ctrl-C")


def serve_demo(options: ServeOptions, say: Callable[[str], None]) -> None:
    """Serve one live demo stream until Ctrl-C (or options.seconds); everything is stopped and closed on the way out.

    `say` gets the lines a user reads (the CLI prints them)."""
    from .recorder import LiveRecorder
    from .server import LiveServer, require_server_modules, serve_forever

    require_server_modules()
    server = LiveServer(options.host, options.port)
    stream = demo_live_stream(options.demo)
    recorder = LiveRecorder(stream, options.record, overwrite=options.overwrite) if options.record else None
    stream.start()
    try:
        with _stop_on_signals():
            asyncio.run(serve_forever(server, [stream], options.seconds,
                                      on_ready=lambda: _announce(server, stream, say)))
    except KeyboardInterrupt:
        say("stopping (Ctrl-C or SIGTERM)")
    finally:
        stream.stop()
        if recorder is not None:
            recorder.close()
            say(f"recorded {recorder.frames_written} frames to {recorder.path}")
    if stream.error is not None:
        raise KnotError(f"the live stream failed: {stream.error}")


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM stop the server cleanly, as they stop a render, however it was started.

    A process launched in the background by a script (`cmd &`, nohup) inherits SIGINT ignored, and Python then
    installs no KeyboardInterrupt for it, so Ctrl-C / kill -INT did nothing; SIGTERM killed it mid-recording.
    With SIGINT on Python's own handler, asyncio.run cancels the serving task on it (closing sockets, stream and
    recording); SIGTERM raises the same KeyboardInterrupt, which asyncio.run also ends the task on."""
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, signal.default_int_handler) for s in stops}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _announce(server, stream: LiveStream, say: Callable[[str], None]) -> None:
    if server.host not in ("127.0.0.1", "localhost", "::1"):
        say(f"warning: listening on {server.host}: anyone who can reach this machine and has the link can use it; "
            "browsers only give the microphone to https or localhost pages")
    say(f"live: open {server.url(stream)} (the microphone drives the portrait)")
    say(f"program API: ws://127.0.0.1:{server.port}/knotforcing/live/{stream.id}/ws (16 kHz mono s16le PCM in, "
        f"JPEG frames + PCM out); latency ~{stream.delay_s:.2f} s + network. Ctrl-C stops.")
