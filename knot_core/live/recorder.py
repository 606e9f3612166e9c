"""Recording a live stream to an MP4 as it goes: every chunk the stream publishes, with the audio it showed.

The project's crash-safe fragmented MP4 writer (knot_core.video_writer.VideoWriter) appends one fragment per
chunk, so however the stream stops (Ctrl-C, a closed page, a cancelled node) the file is playable and holds
every chunk written. Frames skipped by a late generator are not in the file (it is what was streamed).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from ..video_writer import VideoWriter
from .stream import LiveStream

log = logging.getLogger(__name__)

RECORDER_CHUNKS = 64  # ~30 s of chunks may wait for the encoder before the oldest is lost


class LiveRecorder:
    """Subscribes to a stream and writes it in its own thread; `close()` after the stream stopped (or to end early)."""

    def __init__(self, stream: LiveStream, path: str | Path, *, overwrite: bool = False) -> None:
        rate = stream.settings.sample_rate
        self.writer = VideoWriter(path, stream.settings.fps, audio=np.zeros((1, 0), np.float32), sample_rate=rate,
                                  overwrite=overwrite)
        self.stream = stream
        self.error: BaseException | None = None
        self._sub = stream.subscribe(maxlen=RECORDER_CHUNKS)
        self._thread = threading.Thread(target=self._run, name="knot-live-recorder", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path:
        return self.writer.path

    @property
    def frames_written(self) -> int:
        return self.writer.frames_written

    def _run(self) -> None:
        try:
            while (chunk := self._sub.get()) is not None:
                self.writer.append_audio(chunk.audio[None])  # (1, n * hop): exactly these frames' audio
                self.writer.write(chunk.frames)
        except BaseException as err:  # reported through self.error; the stream goes on without the recording
            self.error = err
            log.error("recording %s stopped: %s", self.writer.path, err)
            self.stream.unsubscribe(self._sub)

    def close(self, timeout: float = 30.0) -> None:
        """Finish: write what is queued, then close the file (the audio tail is trimmed to the video)."""
        self.stream.unsubscribe(self._sub)  # closes the queue: the thread drains it and ends
        self._thread.join(timeout)
        self.writer.close()
