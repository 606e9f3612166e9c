"""Video encoding on a worker thread, overlapped with generating the next chunk.

H.264 encoding is CPU work between two chunks that the GPU would otherwise wait out: at
480x832 it costs ~10 ms a frame on a 2-core CPU (`python bench/encode_overlap.py`), a large
share of a real-time chunk budget. The worker holds at most `depth` chunks, so memory stays
flat; PyAV releases the GIL while x264 encodes, and the generating thread spends its waits
in CUDA synchronisation, so the two overlap. Every chunk handed over is written before
`close` returns, also after an error or an interrupt: the file keeps every frame produced.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from torch import Tensor

from .video_writer import VideoWriter

log = logging.getLogger(__name__)


class BackgroundWriter:
    """A VideoWriter fed through a bounded queue. `frames_written` counts durable frames;
    `frames_submitted` counts frames handed over; `flush` waits until they are equal."""

    def __init__(self, writer: VideoWriter, depth: int = 1):
        self.writer = writer
        self._queue: queue.Queue[Tensor | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None  # the encoder's first failure; it stays failed
        self._reported = False
        self._submitted = writer.frames_written
        self._thread = threading.Thread(target=self._encode_loop, name="knot-forcing-encoder", daemon=True)
        self._thread.start()

    def _encode_loop(self) -> None:
        while True:
            frames = self._queue.get()
            try:
                if frames is None:
                    return
                if self._error is None:  # after a failure the rest is dropped: the error says what the file holds
                    self.writer.write(frames)
            except BaseException as exc:  # handed to the producing thread, raised there
                self._error = exc
            finally:
                self._queue.task_done()

    @property
    def frames_written(self) -> int:
        return self.writer.frames_written

    @property
    def frames_submitted(self) -> int:
        return self._submitted

    def write(self, frames: Tensor) -> None:
        """Hand one chunk [T, H, W, 3] to the encoder; blocks while `depth` chunks are waiting."""
        self._raise_error(always=True)
        if not self._thread.is_alive():
            raise RuntimeError("BackgroundWriter is closed; open a new writer to write more")
        self._queue.put(frames)
        self._submitted += frames.shape[0]

    def flush(self) -> None:
        """Wait until every chunk handed over is durable in the file."""
        self._queue.join()
        self._raise_error(always=True)

    def close(self) -> None:
        """Write what is queued, stop the worker, close the file. Idempotent."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self.writer.close()
        self._raise_error()

    def _raise_error(self, always: bool = False) -> None:
        """Writes after a failure raise it again; close raises it only if nobody has seen it."""
        if self._error is not None and (always or not self._reported):
            self._reported = True
            raise self._error

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # keep the original error; the file holds every chunk produced before it
            self.close()
        except Exception as close_exc:  # noqa: BLE001 - the first error is the one to report
            log.error("closing the video after an error also failed: %s", close_exc)
