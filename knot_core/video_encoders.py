"""The H.264 (+ AAC) encoders of one VideoWriter segment, and the fMP4 fragment each chunk becomes (PyAV).

See video_writer.py for why a fresh in-memory muxer makes each fragment and why the encoders restart every
SEGMENT_S seconds (exact resume at any crf).
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np

from .mp4_fragments import HEADER_BOXES, split_boxes

# FFmpeg's native AAC encoder delays its output by one frame of priming samples (its initial_padding; PyAV
# does not expose that field). Packets are shifted by this much and the input skips as many samples, so the
# sample at index i of the input plays at time i / sample_rate, without relying on an edit list.
AAC_PRIMING = 1024
CODEC_NAMES = {"libx264": "h264", "mpeg4": "mpeg4"}  # encoder -> the codec a reader reports
MOVFLAGS = "frag_custom+empty_moov+default_base_moof+frag_discont+skip_trailer"
# Encoder segments: x264's rate control and the AAC encoder carry state from frame to frame, so an encoder
# started at a resume point cannot produce what the stopped one would have. Instead every writer starts
# fresh encoders at fixed points (the first chunk boundary SEGMENT_S seconds after the last restart) and
# keeps the frames given since; a resume state stores them, and a resumed writer cuts the file back to the
# restart, starts its encoders there exactly as the stopped writer did and encodes them again: the file
# then has the same bytes (frames and audio packets) as an uninterrupted render, at every crf.
SEGMENT_S = 2


def segment_frames(fps: Fraction) -> int:
    """Frames per encoder segment (SEGMENT_S seconds): the encoders restart at the first chunk boundary after."""
    return max(1, round(SEGMENT_S * fps))


class Encoders:
    """One segment's H.264 (+ AAC) encoders, held by an MP4 container that is never muxed into."""

    def __init__(self, codec: str, rate: Fraction, width: int, height: int, crf: int, preset: str, channels: int,
                 sample_rate: int | None) -> None:
        self._holder = av.open(io.BytesIO(), "w", format="mp4")  # gives the streams MP4 global headers
        if codec == "libx264":
            options = {"crf": str(crf), "preset": preset, "tune": "zerolatency"}
        else:
            options = {"b": "8M"}
        self.video = self._holder.add_stream(codec, rate=rate, options=options)
        self.video.width, self.video.height, self.video.pix_fmt = width, height, "yuv420p"
        ctx = self.video.codec_context
        # the writer restarts the encoders every segment (an IDR each ~2 s); a longer GOP avoids a second
        # keyframe just before the restart
        ctx.gop_size = 4 * segment_frames(rate)
        ctx.colorspace = ctx.color_primaries = ctx.color_trc = 1  # BT.709, tagged so players decode it as such
        ctx.color_range = 1  # limited ("MPEG") range
        self.audio = None
        if sample_rate is not None:
            self.audio = self._holder.add_stream("aac", rate=sample_rate, layout="mono" if channels == 1 else "stereo")
        self._holder.start_encoding()

    def encode_video(self, frame: av.VideoFrame | None) -> list[av.Packet]:
        packets = self.video.encode(frame)
        for packet in packets:
            packet.duration = 1  # one frame in the 1/fps time base; the muxer would otherwise guess
        return packets

    def encode_audio(self, samples: np.ndarray | None, pts: int) -> list[av.Packet]:
        frame = None
        if samples is not None:
            layout = "mono" if samples.shape[0] == 1 else "stereo"
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
            frame.sample_rate, frame.pts = self.audio.codec_context.sample_rate, pts
        packets = self.audio.encode(frame)
        for packet in packets:  # see AAC_PRIMING: start the priming packet at 0 instead of -1024
            packet.pts += AAC_PRIMING
            packet.dts += AAC_PRIMING
        return packets

    def fragment(self, index: int, video: list[av.Packet], audio: list[av.Packet]) -> bytes:
        """Mux one chunk's packets into a standalone fMP4 and return its boxes (header boxes only at index 0)."""
        buffer = io.BytesIO()
        options = {"movflags": MOVFLAGS, "fragment_index": str(index + 1), "avoid_negative_ts": "disabled"}
        with av.open(buffer, "w", format="mp4", options=options) as muxer:
            targets = [(muxer.add_stream_from_template(self.video), video)]
            if self.audio is not None:
                targets.append((muxer.add_stream_from_template(self.audio), audio))
            for stream, packets in targets:
                for packet in packets:
                    packet.stream = stream
                    muxer.mux_one(packet)
        boxes = split_boxes(buffer.getvalue())
        return b"".join(data for kind, data in boxes if index == 0 or kind not in HEADER_BOXES)

    def close(self) -> None:
        self._holder.close()
