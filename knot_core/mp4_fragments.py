"""Reading back the fragmented MP4s that VideoWriter writes: box splitting and fragment boundaries.

ISO/IEC 14496-12 movie fragments: ftyp, empty moov, then moof/mdat pairs. `scan_fragments` demuxes
(no decoding) and tells, for every place the file can be cut, how many video frames and audio samples
it holds there; the writer uses it to resume a render.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from .errors import InputError

HEADER_BOXES = (b"ftyp", b"moov")


def split_boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """Top-level ISO-BMFF boxes of a complete in-memory MP4 as (type, bytes); 32-bit sizes only (fragments)."""
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        assert size >= 8, f"unexpected box size {size} at {offset}"  # 64-bit sizes never occur per fragment
        boxes.append((kind, data[offset : offset + size]))
        offset += size
    assert offset == len(data), f"trailing {len(data) - offset} bytes after the last box"
    return boxes


@dataclass(frozen=True)
class FragmentLayout:
    """Where a VideoWriter file can be cut: after header + fragment j (index j-1), j = 0..n."""

    codec: str
    size: tuple[int, int]  # (H, W)
    has_audio: bool
    sample_rate: int | None
    ends: list[int]  # byte offset after the headers (index 0) and after each fragment
    frames_at: list[int]  # video frames held up to each of those offsets
    audio_end: list[int]  # end time of the audio held there, in samples


def _top_level_boxes(path: Path) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of each whole top-level box; a torn last box is left out."""
    boxes, offset, total = [], 0, path.stat().st_size
    with open(path, "rb") as f:
        while offset + 8 <= total:
            f.seek(offset)
            size, kind = struct.unpack(">I4s", f.read(8))
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0]
            if size < 8 or offset + size > total:
                break
            boxes.append((kind, offset, size))
            offset += size
    return boxes


def scan_fragments(path: Path) -> FragmentLayout:
    """Demux (no decoding) a fragmented MP4 and count the frames and audio held before each fragment end."""
    boxes = _top_level_boxes(path)
    if [b[0] for b in boxes[:2]] != list(HEADER_BOXES) or any(b[0] not in (b"moof", b"mdat") for b in boxes[2:]):
        raise InputError(f"{str(path)!r} is not a fragmented MP4 written by VideoWriter (top-level boxes "
                         f"{[b[0].decode('latin-1') for b in boxes[:6]]}); it cannot be resumed")
    ends = [boxes[1][1] + boxes[1][2]] + [off + size for kind, off, size in boxes[2:] if kind == b"mdat"]
    video_at, audio_at = [0] * len(ends), [0] * len(ends)
    try:
        with av.open(str(path), "r") as container:
            vstream = container.streams.video[0]
            astream = container.streams.audio[0] if container.streams.audio else None
            size = (vstream.codec_context.height, vstream.codec_context.width)
            codec, rate = vstream.codec_context.name, (astream.codec_context.sample_rate if astream else None)
            for packet in container.demux():
                if packet.size == 0 or packet.pos is None or packet.pos < 0:
                    continue
                j = bisect.bisect_right(ends, packet.pos)  # the fragment whose mdat holds the sample
                if j >= len(ends):
                    continue  # in a torn tail that is cut off anyway
                if packet.stream is vstream:
                    video_at[j] += 1
                elif packet.stream is astream:
                    end = Fraction(packet.pts + packet.duration) * packet.time_base * rate  # in samples
                    audio_at[j] = max(audio_at[j], round(end))
    except (av.error.FFmpegError, IndexError) as exc:
        raise InputError(f"{str(path)!r} cannot be read back ({exc}); it cannot be resumed") from exc
    frames_at, audio_end, total, last = [], [], 0, 0
    for v, a in zip(video_at, audio_at):
        total, last = total + v, max(last, a)
        frames_at.append(total)
        audio_end.append(last)
    return FragmentLayout(codec, size, astream is not None, rate, ends, frames_at, audio_end)
