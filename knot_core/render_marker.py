"""What is on disk for a render's output: finished or not, frames held, a resume state, and saying so.

A finished render appends one top-level ISO-BMFF `free` box to its MP4 (players skip `free` boxes; ISO/IEC
14496-12 8.1.2) holding `knot_forcing.finished` and the frame count. A file without it was stopped or
killed, whatever its length: `batch --resume` skips only marked files, and the messages after a stop and
before a resume (`describe_output`) say exactly what exists — the file and its frames, the resume state and
the frame it was saved at — rather than guessing.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

MARKER = b"knot_forcing.finished "
MARKER_BOX = b"free"


def mark_finished(out: Path, frames: int) -> None:
    """Append the completion box to a closed MP4 (one write; a torn write leaves an unmarked file)."""
    payload = MARKER + json.dumps({"frames": int(frames)}).encode("ascii")
    box = struct.pack(">I4s", 8 + len(payload), MARKER_BOX) + payload
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | getattr(os, "O_BINARY", 0))
    try:
        os.write(fd, box)
    finally:
        os.close(fd)


def finished_frames(out: Path) -> int | None:
    """The frame count a finished render recorded in `out`, or None when it never finished."""
    try:
        size = out.stat().st_size
        with open(out, "rb") as f:
            f.seek(max(0, size - 256))
            tail = f.read()
    except OSError:
        return None
    at = tail.rfind(MARKER)
    if at < 8 or tail[at - 4 : at] != MARKER_BOX or at - 8 + struct.unpack(">I", tail[at - 8 : at - 4])[0] != len(tail):
        return None  # the marker must be the file's last box
    try:
        return int(json.loads(tail[at + len(MARKER) :])["frames"])
    except (ValueError, KeyError, TypeError):
        return None


def frames_in_file(out: Path) -> int | None:
    """Video frames an MP4 holds (demuxed, not decoded), or None when it cannot be read."""
    import av

    try:
        with av.open(str(out)) as container:
            return sum(1 for p in container.demux(container.streams.video[0]) if p.size)
    except (av.error.FFmpegError, IndexError, OSError):
        return None


def state_frames(state_file: Path) -> int | None:
    """The frame a resume state was saved at, or None when there is no readable state."""
    from safetensors import safe_open

    if not state_file.is_file():
        return None
    try:
        with safe_open(str(state_file), "pt") as f:
            return int(json.loads((f.metadata() or {})["render"])["frames_written"])
    except Exception:  # noqa: BLE001 - unreadable or foreign: no usable state
        return None


@dataclass(frozen=True)
class OutputStatus:
    """One render output as found on disk."""

    out: Path
    exists: bool
    frames: int | None  # frames the file holds (None: absent or unreadable)
    finished: bool
    saved_at: int | None  # frame of a usable resume state, None without one

    def describe(self) -> str:
        """One sentence: what is there and what to do with it."""
        out = str(self.out)
        if not self.exists:
            return f"nothing was written: {out!r} does not exist; start the render again"
        if self.finished:
            return f"{out!r} is a finished render ({self.frames} frames); nothing to resume"
        held = f"{out!r} holds {self.frames} frames (playable)" if self.frames is not None \
            else f"{out!r} exists but cannot be read"
        if self.saved_at is None:
            return (f"{held} but has no resume state: the render stopped or was killed before its first save "
                    "(every 60 s, or --save-every N chunks); render it again with --overwrite")
        again = "" if self.frames == self.saved_at else f" (frames after {self.saved_at} are rendered again)"
        return f"{held}; its resume state is at frame {self.saved_at}: continue with the same command plus " \
               f"--resume{again}"


def describe_output(out: str | Path, state_file: str | Path) -> OutputStatus:
    out = Path(out)
    if not out.is_file():
        return OutputStatus(out, False, None, False, None)
    done = finished_frames(out)
    if done is not None:
        return OutputStatus(out, True, done, True, None)
    return OutputStatus(out, True, frames_in_file(out), False, state_frames(Path(state_file)))
