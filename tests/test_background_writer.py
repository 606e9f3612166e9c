"""BackgroundWriter: the same file as writing inline, encoding overlapped, errors and stops keep every frame."""

import threading

import numpy as np
import pytest
import torch

from knot_core.background_writer import BackgroundWriter
from knot_core.video_reader import count_frames, read_frames
from knot_core.video_writer import OutputError, VideoWriter

CHUNKS = (1, 12, 12, 12, 5)


def chunks(seed=0):
    rng = np.random.default_rng(seed)
    return [torch.from_numpy(rng.integers(0, 256, (n, 32, 48, 3), dtype=np.uint8)) for n in CHUNKS]


def test_the_file_equals_writing_inline(tmp_path):
    with VideoWriter(tmp_path / "inline.mp4", 16, crf=0) as w:
        for c in chunks():
            w.write(c)
    with BackgroundWriter(VideoWriter(tmp_path / "bg.mp4", 16, crf=0), depth=2) as bg:
        for c in chunks():
            bg.write(c)
        assert bg.frames_submitted == sum(CHUNKS)
    a, b = list(read_frames(tmp_path / "inline.mp4")), list(read_frames(tmp_path / "bg.mp4"))
    assert len(a) == len(b) == sum(CHUNKS) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


class GatedWriter:
    """A writer that encodes only when the test lets it: shows write() does not wait for the encoder."""

    def __init__(self, fail_at: int | None = None):
        self.frames_written, self.gate, self.threads, self.fail_at = 0, threading.Event(), set(), fail_at
        self.closed = False

    def write(self, frames):
        self.gate.wait(5)
        self.threads.add(threading.current_thread().name)
        if self.fail_at is not None and self.frames_written >= self.fail_at:
            raise OutputError(f"disk full; the file holds the first {self.frames_written} frames and is playable")
        self.frames_written += frames.shape[0]

    def close(self):
        self.closed = True


def test_write_returns_before_the_chunk_is_encoded_and_flush_waits_for_it():
    inner = GatedWriter()
    bg = BackgroundWriter(inner, depth=1)
    bg.write(torch.zeros(12, 2, 2, 3, dtype=torch.uint8))  # the worker takes it and waits at the gate
    assert (bg.frames_submitted, bg.frames_written) == (12, 0)
    inner.gate.set()
    bg.flush()
    assert bg.frames_written == 12 and inner.threads == {"knot-forcing-encoder"}
    bg.close()
    assert inner.closed


def test_an_encoder_error_reaches_the_producer_and_names_what_the_file_holds():
    inner = GatedWriter(fail_at=12)
    inner.gate.set()
    bg = BackgroundWriter(inner, depth=1)
    with pytest.raises(OutputError, match="holds the first 12 frames"):
        for _ in range(10):
            bg.write(torch.zeros(12, 2, 2, 3, dtype=torch.uint8))
        bg.flush()
    bg.close()
    assert inner.closed and inner.frames_written == 12


def test_a_crash_in_the_producer_keeps_every_frame_handed_over(tmp_path):
    path = tmp_path / "crash.mp4"
    with pytest.raises(RuntimeError, match="generation failed"):
        with BackgroundWriter(VideoWriter(path, 16, crf=0), depth=2) as bg:
            for c in chunks()[:3]:
                bg.write(c)
            raise RuntimeError("generation failed")
    assert count_frames(path) == 25
