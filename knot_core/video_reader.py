"""Small PyAV reader for the MP4 files `video_writer.VideoWriter` produces (and any other video PyAV opens).

Used by the tests across the project and by the ComfyUI nodes to hand a written video back as frames.
`probe` only demuxes (fast, no decoding); `count_frames` and `read_frames` decode, so they report what a
player would actually show, including for a file cut off mid-render.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds: frame count (video packets), rate, size and audio length."""

    frames: int
    fps: Fraction
    width: int
    height: int
    has_audio: bool
    audio_duration_s: float


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"video file {str(path)!r} does not exist; check the path (a render creates it on its first chunk)"
        )
    try:
        container = av.open(str(path), "r")
    except av.error.FFmpegError as exc:
        raise InputError(
            f"{str(path)!r} is not a readable video ({exc}); expected an MP4 written by VideoWriter"
        ) from exc
    if not container.streams.video:
        container.close()
        raise InputError(f"{str(path)!r} holds no video stream; expected an MP4 with one H.264 video track")
    return container


def probe(path: str | Path) -> VideoInfo:
    """Demux (without decoding) and report frames, fps, size and audio duration.

    frames counts non-empty video packets (one per frame for H.264/MPEG-4 without B-frames, which is what
    VideoWriter writes); audio_duration_s sums the audio packets' durations as stored in the file.
    """
    with _open(path) as container:
        vstream = container.streams.video[0]
        astream = container.streams.audio[0] if container.streams.audio else None
        fps = vstream.average_rate or vstream.guessed_rate or Fraction(0)
        frames = 0
        audio_ticks = 0
        streams = [vstream] if astream is None else [vstream, astream]
        for packet in container.demux(streams):
            if packet.size == 0:
                continue  # demuxer's end-of-stream marker
            if packet.stream.index == vstream.index:
                frames += 1
            elif packet.duration:
                audio_ticks += packet.duration
        audio_s = float(audio_ticks * astream.time_base) if astream is not None else 0.0
        return VideoInfo(
            frames=frames,
            fps=Fraction(fps),
            width=vstream.codec_context.width,
            height=vstream.codec_context.height,
            has_audio=astream is not None,
            audio_duration_s=audio_s,
        )


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Yield decoded frames one at a time as uint8 [H, W, 3] RGB; never holds the whole video."""
    with _open(path) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8


def count_frames(path: str | Path) -> int:
    """Number of frames a decoder gets out of the file (decodes; authoritative for partial files)."""
    with _open(path) as container:
        return sum(1 for _ in container.decode(video=0))


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode the first audio track to float32 [C, N] plus its sample rate (for tests and nodes)."""
    with _open(path) as container:
        if not container.streams.audio:
            raise InputError(f"{str(path)!r} has no audio track; write it with VideoWriter(..., audio=, sample_rate=)")
        rate = container.streams.audio[0].rate
        parts = [frame.to_ndarray() for frame in container.decode(audio=0)]  # each (C, n) float32 planar
    if not parts:
        return np.zeros((1, 0), np.float32), rate
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False), rate
