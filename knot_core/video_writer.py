"""Streaming, crash-safe MP4 sink for chunk-by-chunk video generation (PyAV: H.264 + AAC, fragmented MP4).

Frames arrive chunk by chunk and each `write()` appends exactly one self-contained MP4 fragment (moof+mdat)
to the output file with a single `os.write`. The file is a valid fragmented MP4 (ISO/IEC 14496-12 movie
fragments: ftyp, empty moov, then moof/mdat pairs) after every write, so a render that stops in any way,
SIGKILL included, leaves a playable file holding every frame of every `write()` that returned.

Why one short-lived muxer per chunk: FFmpeg's MP4 muxer only emits a fragment when a later packet arrives or
when it is told to flush with `av_write_frame(ctx, NULL)`, which PyAV does not expose. So the encoders live
for the whole render (one H.264 stream, one AAC stream, no restarts), and each chunk's packets go through a
fresh in-memory MP4 muxer started with `frag_discont` (fragment times are the packets' absolute times) and
`fragment_index` (sequence numbers continue). Its header boxes (ftyp, moov) are kept from the first chunk only;
later chunks contribute their moof+mdat. libx264 runs with tune=zerolatency (no B-frames, no lookahead) so
every frame given to `write()` comes out of the encoder inside that same call.

Audio (AAC) is muxed progressively: each chunk carries the audio up to the video time reached so far, and
`close()` trims or zero-pads it to exactly the video duration.

Encoder segments and resume: every SEGMENT_S seconds (at the next chunk boundary) the writer starts fresh
encoders (an IDR frame; the new AAC encoder starts one frame early so its priming packet is dropped and the
audio runs on without a gap) and keeps the frames given since (`segment_frames()`).
`VideoWriter.reopen(path, fps, frames=N, segment=S)` cuts a file this writer made back to the start of that
segment (a fragment boundary; later chunks and the closing audio tail go), restarts the encoders there as
the first writer did and encodes S again in the same chunks, so what follows is byte for byte what an
uninterrupted writer appends, at any crf: timestamps and fragment sequence numbers continue.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from .errors import InputError, KnotError, OutputError
from .mp4_fragments import scan_fragments
from .output_lock import acquire, release
from .video_encoders import AAC_PRIMING, CODEC_NAMES, Encoders, segment_frames

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov")
AAC_SAMPLE_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
CONVERT_SLICE = 16  # frames converted to uint8 at a time, so a long float input never gets a full copy




def frames_from_decoder(x: Any) -> Any:
    """VAE decoder output [1, 3, T, H, W] in [-1, 1] (torch) -> [T, H, W, 3] uint8 on the same device."""
    if getattr(x, "ndim", None) != 5 or x.shape[0] != 1 or x.shape[1] != 3:
        raise InputError(
            f"frames_from_decoder expects a decoder output [1, 3, T, H, W]; got {tuple(getattr(x, 'shape', ()))}. "
            "Decode one batch item at a time (x[i:i+1])."
        )
    pixels = ((x[0].clamp(-1.0, 1.0) + 1.0) * 127.5).round()  # (3, T, H, W) in [0, 255]
    return pixels.permute(1, 2, 3, 0).to(dtype=_torch().uint8).contiguous()  # (T, H, W, 3)


def _torch() -> Any:
    import torch  # torch is the host's; only reached when a torch tensor was passed in

    return torch


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _check_frames(frames: Any) -> tuple[int, int, int]:
    """Validate layout/dtype/finiteness of a chunk; return (T, H, W). Raises InputError, touches nothing."""
    if not (_is_tensor(frames) or isinstance(frames, np.ndarray)):
        raise InputError(f"frames must be a torch tensor or numpy array [T, H, W, 3]; got {type(frames).__name__}")
    shape = tuple(frames.shape)
    if len(shape) != 4 or shape[3] != 3:
        raise InputError(
            f"frames must be [T, H, W, 3] (ComfyUI IMAGE layout, RGB); got shape {shape}. "
            "For a VAE decoder output [1, 3, T, H, W] use frames_from_decoder(x) first."
        )
    if _is_tensor(frames):
        is_float, is_u8 = frames.is_floating_point(), frames.dtype == _torch().uint8
    else:
        is_float, is_u8 = np.issubdtype(frames.dtype, np.floating), frames.dtype == np.uint8
    if not (is_float or is_u8):
        raise InputError(f"frames must be float in [0, 1] or uint8; got dtype {frames.dtype}")
    if is_float and shape[0] > 0:
        finite = bool(frames.isfinite().all()) if _is_tensor(frames) else bool(np.isfinite(frames).all())
        if not finite:
            raise InputError("frames contain NaN or Inf; the generator diverged (check dtype/precision settings)")
    return shape[0], shape[1], shape[2]


def _to_uint8(frames: Any) -> np.ndarray:
    """[t, H, W, 3] float 0..1 or uint8 (torch or numpy) -> contiguous numpy uint8 on the CPU."""
    if _is_tensor(frames):
        if frames.is_floating_point():  # convert on the device: 4x less data to copy to the host
            frames = (frames.clamp(0.0, 1.0) * 255.0).round().to(_torch().uint8)
        return np.ascontiguousarray(frames.detach().cpu().numpy())
    if frames.dtype != np.uint8:
        frames = np.rint(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(frames)


def _check_audio(audio: Any, sample_rate: int | None) -> np.ndarray | None:
    if audio is None:
        if sample_rate is not None:
            raise InputError("sample_rate was given without audio; pass audio=[C, N] float too, or drop sample_rate")
        return None
    if sample_rate is None or int(sample_rate) not in AAC_SAMPLE_RATES:
        raise InputError(
            f"audio needs sample_rate in {AAC_SAMPLE_RATES} (AAC); got {sample_rate}. Resample the audio first "
            "(16000, 44100 or 48000 are typical)."
        )
    array = audio.detach().float().cpu().numpy() if _is_tensor(audio) else np.asarray(audio)
    if array.ndim != 2 or array.shape[0] not in (1, 2):
        raise InputError(
            f"audio must be [C, N] with C = 1 or 2 channels; got shape {array.shape}. "
            "Use waveform[0] for a ComfyUI AUDIO [B, C, N]; downmix to stereo if it has more channels."
        )
    if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
        raise InputError(f"audio must be finite float samples in [-1, 1]; got dtype {array.dtype} or NaN/Inf values")
    return np.ascontiguousarray(array, dtype=np.float32)


def _check_fps(fps: int | Fraction) -> Fraction:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)):
        raise InputError(f"fps must be an int or Fraction, e.g. 16 or Fraction(30000, 1001); got {fps!r}")
    if isinstance(fps, float) and not fps.is_integer():  # also refuses NaN and Inf
        raise InputError(f"fps {fps} is not exact; pass a Fraction, e.g. Fraction(30000, 1001) for 29.97")
    rate = Fraction(fps)
    if not 0 < rate <= 240:
        raise InputError(f"fps must be in (0, 240]; got {fps}")
    return rate


def _check_path(path: str | Path, overwrite: bool) -> Path:
    path = Path(path).expanduser()
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"output {str(path)!r} must end in one of {VIDEO_SUFFIXES} (an MP4 is written)")
    if path.is_dir():
        raise InputError(f"output {str(path)!r} is a directory; give a file name such as {str(path / 'out.mp4')!r}")
    if path.exists() and not overwrite:
        raise InputError(f"output {str(path)!r} already exists; choose another name or pass overwrite=True")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"output directory {str(parent)!r} does not exist; create it first (mkdir -p)")
    try:  # a real probe: os.access is blind to read-only mounts and says yes to root everywhere
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise InputError(
            f"output directory {str(parent)!r} is not writable ({exc.strerror}); choose a writable directory"
        ) from exc
    return path


class VideoWriter:
    """Append-only MP4 sink: `write([T, H, W, 3])` per chunk, `close()` at the end (also from `finally`).

    After every `write()` returns, the file at `path` is a playable MP4 holding exactly `frames_written`
    frames, and audio up to within ~3 AAC frames of the video end. `close()` adds the audio tail, trimmed
    or zero-padded to the video duration. The file is created on the first `write()`, after that chunk has
    been validated, so a bad first chunk never replaces an existing file (even with overwrite=True).
    """

    def __init__(self, path: str | Path, fps: int | Fraction, *, audio: Any = None, sample_rate: int | None = None,
                 crf: int = 18, preset: str = "medium", overwrite: bool = False, codec: str | None = None) -> None:
        self._fps = _check_fps(fps)
        if not 0 <= int(crf) <= 51:
            raise InputError(f"crf must be in [0, 51] (lower = better, 18 is visually lossless); got {crf}")
        self._audio = _check_audio(audio, sample_rate)
        self._sample_rate = int(sample_rate) if self._audio is not None else None
        _check_path(path, overwrite=True)  # the place is fit for a file (suffix, directory, writable) ...
        self._lock = acquire(path)  # ... claimed before the overwrite check: a file being written is never replaced
        try:
            self._path = _check_path(path, overwrite)
        except BaseException:
            release(self._lock)
            raise
        self._codec = codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
        if self._codec not in ("libx264", "mpeg4"):
            raise InputError(f"codec must be 'libx264' or 'mpeg4'; got {codec!r}")
        if self._codec == "mpeg4" and codec is None:
            logger.warning("libx264 is not in this PyAV build; writing MPEG-4 Part 2 video instead (larger files)")
        self._crf, self._preset = int(crf), preset
        self._size: tuple[int, int] | None = None  # (H, W), fixed by the first chunk
        self._encoders: Encoders | None = None
        self._fd: int | None = None
        self._bytes = 0  # file size at the last complete fragment
        self._fragments = 0
        self._frames = 0  # frames durable in the file
        self._frames_encoded = 0
        self._audio_fed = 0  # input samples given to the AAC encoder, counted from AAC_PRIMING
        self._audio_start = 0  # audio packets before this time are dropped (a resumed file holds them)
        self._audio_muxed = 0  # end (samples) of the audio packets in the file
        self._segment_start = 0  # frame at which the current encoders started
        self._segment: list[np.ndarray] = []  # uint8 frames [t, H, W, 3] given since then, one array per write
        self._audio_base = 0  # input index of self._audio[:, 0]: append_audio drops what is in the file
        self._failed: str | None = None
        self._closed = False

    @classmethod
    def reopen(cls, path: str | Path, fps: int | Fraction, *, frames: int, segment: Any = None,
               audio: Any = None, sample_rate: int | None = None, crf: int = 18, preset: str = "medium",
               codec: str | None = None) -> VideoWriter:
        """Continue a file written by VideoWriter after its first `frames` frames (see the module docstring).

        Give the same fps, audio and encoder settings as the first writer, and `segment`: what its
        `segment_frames()` returned after frame `frames` (None: no frames since a restart). The file is cut
        back to the segment's start and the segment encoded again, so the next `write()` appends frame
        number `frames` exactly as the first writer would have. Raises InputError when the file is not one
        this writer made or has no fragment boundary there, before anything in it changes.
        """
        if not Path(path).expanduser().is_file():
            raise InputError(f"cannot resume {str(path)!r}: the file does not exist; start a new render instead")
        writer = cls(path, fps, audio=audio, sample_rate=sample_rate, crf=crf, preset=preset, overwrite=True,
                     codec=codec)
        try:
            writer._resume(int(frames), segment)
        except BaseException:
            writer._closed = True
            release(writer._lock)
            raise
        return writer

    @property
    def path(self) -> Path:
        return self._path

    @property
    def fps(self) -> Fraction:
        return self._fps

    @property
    def frames_written(self) -> int:
        return self._frames

    def segment_frames(self) -> np.ndarray:
        """The uint8 frames [t, H, W, 3] written since the encoders last restarted: what a resume needs."""
        if not self._segment:
            height, width = self._size or (0, 0)
            return np.zeros((0, height, width, 3), np.uint8)
        return np.concatenate(self._segment)

    @property
    def duration_s(self) -> float:
        return float(self._frames / self._fps)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # keep the original error; the file already holds every written chunk
            self.close()
        except KnotError as close_exc:
            logger.error("closing %s after an error also failed: %s", self._path, close_exc)

    def write(self, frames: Any) -> None:
        """Encode and append one chunk [T, H, W, 3] (float 0..1 or uint8); durable on disk when this returns."""
        if self._closed:
            raise InputError(f"VideoWriter for {str(self._path)!r} is closed; open a new writer to write more")
        if self._failed is not None:
            raise OutputError(self._failed)
        count, height, width = _check_frames(frames)
        self._check_size(height, width)
        if count == 0:
            return
        self._ensure_open(height, width)
        if self._frames_encoded - self._segment_start >= segment_frames(self._fps):
            self._restart_encoders(self._audio_muxed)
        try:
            video: list[av.Packet] = []
            kept = []
            for start in range(0, count, CONVERT_SLICE):
                block = _to_uint8(frames[start : start + CONVERT_SLICE])  # (t, H, W, 3) uint8
                kept.append(block)
                for rgb in block:
                    video += self._encoders.encode_video(self._to_video_frame(rgb))
            audio = self._audio_packets(final=False)
            self._append(video, audio)
            self._segment.append(np.concatenate(kept))
        except OSError as exc:
            raise self._fail(exc) from exc
        except BaseException:
            self._failed = (f"an earlier write() was interrupted mid-chunk; {str(self._path)!r} holds the first "
                            f"{self._frames} frames and is playable. Start a new writer to continue.")
            raise

    def append_audio(self, samples: Any) -> None:
        """A live source: add audio [C, n] after what was given so far (write it before the frames it goes with).

        Only the samples not yet in the file are kept (an encoder restart feeds again from there), so memory
        stays flat over an unbounded recording."""
        if self._audio is None:
            raise InputError("append_audio needs a writer opened with audio (e.g. audio=np.zeros((1, 0))) and its "
                             "sample_rate")
        added = _check_audio(samples, self._sample_rate)
        if added.shape[0] != self._audio.shape[0]:
            raise InputError(f"append_audio got {added.shape[0]} channels; this writer has {self._audio.shape[0]}")
        drop = max(0, min(self._audio_muxed - self._audio_base, self._audio.shape[1]))
        self._audio = np.concatenate([self._audio[:, drop:], added], axis=1)
        self._audio_base += drop

    def close(self) -> None:
        """Flush the encoders, write the audio tail (exact video duration) and close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._encoders is None:
            release(self._lock)
            logger.warning("VideoWriter closed with no frames written; %s was not created", self._path)
            return
        try:
            if self._failed is None:
                video = self._encoders.encode_video(None)
                self._append(video, self._audio_packets(final=True))
        except OSError as exc:
            raise self._fail(exc) from exc
        finally:
            os.close(self._fd)
            self._encoders.close()
            if self._bytes == 0:  # stopped before the first fragment was whole: no empty, unplayable file
                self._path.unlink(missing_ok=True)
            release(self._lock)
        logger.info("wrote %s: %d frames, %.2f s", self._path, self._frames, self.duration_s)

    def _resume(self, frames: int, segment: Any) -> None:
        layout = scan_fragments(self._path)
        if layout.codec != CODEC_NAMES[self._codec] or layout.has_audio != (self._audio is not None):
            raise InputError(
                f"cannot resume {str(self._path)!r}: it holds {layout.codec} video "
                f"{'with' if layout.has_audio else 'without'} audio, but this writer makes {self._codec} video "
                f"{'with' if self._audio is not None else 'without'} audio; resume with the first run's inputs")
        if layout.sample_rate not in (None, self._sample_rate):
            raise InputError(f"cannot resume {str(self._path)!r}: its audio is {layout.sample_rate} Hz, "
                             f"the audio given is {self._sample_rate} Hz; give the first run's audio")
        height, width = layout.size
        segment = np.zeros((0, height, width, 3), np.uint8) if segment is None else _to_uint8(segment)
        start = frames - segment.shape[0]  # where the stopped writer last restarted its encoders
        if segment.shape[1:] != (height, width, 3) or start < 0 or start not in layout.frames_at \
                or frames not in layout.frames_at or (start == 0 and frames == 0):
            raise InputError(
                f"cannot resume {str(self._path)!r} after {frames} frames ({segment.shape[0]} of them to encode "
                f"again): its chunks end at frames {layout.frames_at[1:12]}"
                f"{' ...' if len(layout.frames_at) > 12 else ''}; the file and its resume state do not belong "
                "together (render again with overwrite)")
        kept = layout.frames_at.index(start)  # first boundary at `start`: later chunks and the tail go
        replay = [b - a for a, b in zip(layout.frames_at[kept:], layout.frames_at[kept + 1:]) if a < frames]
        cut = layout.ends[kept] if start > 0 else 0  # from frame 0 the file starts again, headers included
        try:
            self._fd = os.open(self._path, os.O_RDWR | getattr(os, "O_BINARY", 0))
            os.ftruncate(self._fd, cut)
            os.lseek(self._fd, cut, os.SEEK_SET)
        except OSError as exc:
            raise OutputError(f"cannot reopen {str(self._path)!r} for appending ({exc.strerror})") from exc
        self._size, self._bytes, self._fragments = (height, width), cut, (kept if start > 0 else 0)
        self._frames = self._frames_encoded = start
        if start > 0:
            self._restart_encoders(layout.audio_end[kept])
        else:  # the first segment: encoders as a new file gets them
            self._ensure_encoders(height, width)
        logger.info("resuming %s after %d frames: %d chunks kept (%d bytes), %d frames encoded again", self._path,
                    frames, kept, cut, segment.shape[0])
        done = 0
        for count in replay:  # the same chunks as the first writer wrote: fragments and restarts fall alike
            self.write(segment[done : done + count])
            done += count
        assert self._frames == frames, (self._frames, frames)

    def _restart_encoders(self, audio_end: int) -> None:
        """Fresh encoders from the next frame on; the audio continues after `audio_end` (samples in the file)."""
        if self._encoders is not None:  # zerolatency x264 holds no frames; the AAC frame it holds is encoded again
            self._encoders.close()
        self._ensure_encoders(*self._size)
        self._segment_start, self._segment = self._frames_encoded, []
        if audio_end >= AAC_PRIMING:  # feed from one frame early; the new encoder's priming packet is dropped
            self._audio_fed, self._audio_start = audio_end - AAC_PRIMING, audio_end

    def _check_size(self, height: int, width: int) -> None:
        if self._size is not None and (height, width) != self._size:
            raise InputError(
                f"chunk size {width}x{height} differs from the first chunk's {self._size[1]}x{self._size[0]}; "
                "all chunks of one video must have the same size"
            )
        if height % 2 or width % 2:
            raise InputError(
                f"frame size {width}x{height} (WxH) has an odd side; H.264 yuv420p needs even width and height. "
                f"Crop or pad to {width - width % 2}x{height - height % 2} (model sizes are multiples of 16)."
            )

    def _ensure_open(self, height: int, width: int) -> None:
        if self._encoders is not None:
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
        try:
            self._fd = os.open(self._path, flags, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot create {str(self._path)!r} ({exc.strerror}); choose a writable path") from exc
        self._ensure_encoders(height, width)
        logger.info("writing %s: %dx%d @ %s fps, %s%s", self._path, width, height, self._fps, self._codec,
                    " + AAC" if self._audio is not None else "")

    def _ensure_encoders(self, height: int, width: int) -> None:
        channels = self._audio.shape[0] if self._audio is not None else 0
        self._encoders = Encoders(self._codec, self._fps, width, height, self._crf, self._preset, channels,
                                   self._sample_rate)
        self._size = (height, width)

    def _to_video_frame(self, rgb: np.ndarray) -> av.VideoFrame:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709")  # matches the BT.709 stream tags
        frame.pts = self._frames_encoded
        self._frames_encoded += 1
        return frame

    def _audio_packets(self, final: bool) -> list[av.Packet]:
        """Encode audio up to the current video time (whole AAC frames), or to exactly its end when final."""
        if self._audio is None:
            return []
        frame_size = self._encoders.audio.codec_context.frame_size
        video_samples = int(self._frames_encoded * self._sample_rate / self._fps)  # floor, exact arithmetic
        target = video_samples - AAC_PRIMING  # the priming packet already covers the first AAC_PRIMING samples
        packets: list[av.Packet] = []
        while self._audio_fed + (1 if final else frame_size) <= target:
            count = min(frame_size, target - self._audio_fed)
            packets += self._encoders.encode_audio(self._audio_slice(self._audio_fed, count), self._audio_fed)
            self._audio_fed += count
        if final:
            packets += self._encoders.encode_audio(None, 0)
        packets = [p for p in packets if p.pts >= self._audio_start]
        for packet in packets:  # in the stream's 1/sample_rate time base
            self._audio_muxed = max(self._audio_muxed, packet.pts + packet.duration)
        return packets

    def _audio_slice(self, start: int, count: int) -> np.ndarray:
        """Input samples [start, start + count) after the priming offset, zero-padded past the end."""
        out = np.zeros((self._audio.shape[0], count), np.float32)  # (C, count)
        begin = start + AAC_PRIMING - self._audio_base
        available = self._audio[:, begin : begin + count]
        out[:, : available.shape[1]] = available
        return out

    def _append(self, video: list[av.Packet], audio: list[av.Packet]) -> None:
        data = self._encoders.fragment(self._fragments, video, audio)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except BaseException:  # OSError (disk full) or an interrupt between two partial writes
            os.ftruncate(self._fd, self._bytes)  # drop the partial fragment: the file ends on a whole one
            raise
        self._bytes += len(data)
        self._fragments += 1
        self._frames += len(video)

    def _fail(self, exc: OSError) -> OutputError:
        self._failed = (
            f"writing {str(self._path)!r} failed ({exc.strerror or exc}); the file holds the first {self._frames} "
            f"frames ({self.duration_s:.2f} s) and is playable. Free disk space or choose another location."
        )
        return OutputError(self._failed)
