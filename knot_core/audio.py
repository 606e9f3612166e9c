"""Audio input: decode files with PyAV, accept ComfyUI AUDIO dicts, downmix, and resample in torch.

The resampler is a band-limited polyphase windowed-sinc filter (Kaiser window), the
method of Smith's "Digital Audio Resampling" (ccrma.stanford.edu/~jos/resample): for a
rational ratio L/M every output sample is a dot product of one of L precomputed filter
phases with the input around its position. Work is done in blocks of output samples so
memory stays bounded for hour-long tracks. No torchaudio (not available here).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import InputError

log = logging.getLogger(__name__)

TARGET_SAMPLE_RATE = 16_000  # wav2vec2 input rate
ZERO_CROSSINGS = 24  # sinc lobes on each side of the filter centre, at the output's band edge
ROLLOFF = 0.945  # pass band as a fraction of the lower Nyquist frequency
KAISER_BETA = 12.0  # ~ -100 dB side lobes for the window itself
OUTPUT_BLOCK = 1 << 14  # output samples computed per gather (bounds the [block, taps] index tensor)
DECODE_BLOCK = 1 << 16  # input samples gathered from the decoder before each resampler push


def _check_waveform(waveform: Tensor, what: str) -> Tensor:
    """[C, N] float32 with N > 0 and only finite values."""
    if waveform.ndim != 2 or waveform.shape[1] == 0 or waveform.shape[0] == 0:
        raise InputError(f"{what}: got audio of shape {tuple(waveform.shape)}; need [channels, samples] with "
                         "at least one sample. Check that the file or input really contains sound.")
    waveform = waveform.to(torch.float32)
    if not torch.isfinite(waveform).all():
        bad = int((~torch.isfinite(waveform)).sum())
        raise InputError(f"{what}: {bad} audio samples are NaN or infinite; the audio must be finite. "
                         "Re-export the audio (the decoder or an upstream node produced invalid samples).")
    return waveform


def _check_wav_complete(path: Path) -> None:
    """Refuse a WAV whose data chunk is shorter than its header says (a cut-off copy or download): FFmpeg
    decodes the bytes present without complaint, and the video would silently end where the file was cut."""
    import struct

    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        rate, block = None, None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return
            kind, size = struct.unpack("<4sI", chunk)
            if kind == b"fmt " and size >= 16:
                fmt = f.read(size + size % 2)
                rate, block = struct.unpack("<I", fmt[4:8])[0], struct.unpack("<H", fmt[12:14])[0]
                continue
            if kind == b"data":
                break
            f.seek(size + size % 2, 1)
        present = path.stat().st_size - f.tell()
    if size in (0, 0xFFFFFFFF) or present >= size or not rate or not block:  # streamed WAVs leave size unset
        return
    raise InputError(f"audio {str(path)!r} is truncated: its header declares {size / (rate * block):.2f} s of "
                     f"samples but the file holds {present / (rate * block):.3f} s; the file was cut short "
                     "(an interrupted copy or download): copy or export it again")


def _decoded(path: Path) -> Iterator[tuple[int, np.ndarray]]:
    """(sample_rate, float32 block [C, n]) for each decoded frame of the file's first audio stream."""
    import av  # a hard dependency, imported here so `knot_core` imports without touching codecs

    if not path.is_file():
        raise InputError(f"audio file {str(path)!r} does not exist; give the path of an audio or video file")
    _check_wav_complete(path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(f"cannot read {str(path)!r} as audio ({exc}); supported: wav, mp3, m4a/aac, flac, ogg "
                         "and the audio track of video files") from exc
    with container:
        if not container.streams.audio:
            kinds = ", ".join(s.type for s in container.streams) or "none"
            raise InputError(f"{str(path)!r} has no audio stream (streams found: {kinds}); "
                             "give a file with a sound track")
        stream = container.streams.audio[0]
        try:
            for frame in container.decode(stream):
                block = _frame_to_array(frame)  # [C, n]
                if not np.isfinite(block).all():
                    raise InputError(f"{str(path)!r} decodes to NaN or infinite samples; the audio must be finite")
                yield int(frame.sample_rate), block
        except av.error.FFmpegError as exc:
            raise InputError(f"decoding the audio of {str(path)!r} failed ({exc}); the file may be damaged") from exc


def _empty(path: Path) -> InputError:
    return InputError(f"{str(path)!r} contains no decodable audio samples; the audio track is empty")


def load_audio(path: str | Path) -> tuple[Tensor, int]:
    """Decode the first audio stream of any file PyAV opens (wav, mp3, m4a/aac, flac, ogg, video files).

    Returns (waveform [C, N] float32 in [-1, 1], sample_rate).
    """
    path = Path(path)
    rates, blocks = set(), []
    for rate, block in _decoded(path):
        rates.add(rate)
        blocks.append(block)
    if not blocks:
        raise _empty(path)
    if len(rates) > 1:
        raise InputError(f"{str(path)!r} changes sample rate mid-stream {sorted(rates)}; re-encode it at one rate")
    waveform = torch.from_numpy(np.concatenate(blocks, axis=1))  # [C, N]
    return _check_waveform(waveform, str(path)), rates.pop()


def load_mono_16k(path: str | Path) -> Tensor:
    """Decode, downmix and resample to 16 kHz block by block: mono [N'] equal to to_mono_16k(*load_audio(path)).

    Memory is the 16 kHz output plus one decoded block, whatever the file's rate and channels.
    """
    path = Path(path)
    stream, rate, pieces, pending = None, 0, [], []
    for block_rate, block in _decoded(path):
        if stream is None:
            rate, stream = block_rate, StreamingResampler(block_rate, TARGET_SAMPLE_RATE)
        elif block_rate != rate:
            raise InputError(f"{str(path)!r} changes sample rate mid-stream ({rate} -> {block_rate} Hz); "
                             "re-encode it at one rate")
        pending.append(block.mean(axis=0))  # [n] mono
        if sum(p.size for p in pending) >= DECODE_BLOCK:  # codec frames are ~1k samples: push in larger blocks
            pieces.append(stream.push(torch.from_numpy(np.concatenate(pending)))[0])  # [n']
            pending = []
    if stream is None:
        raise _empty(path)
    if pending:
        pieces.append(stream.push(torch.from_numpy(np.concatenate(pending)))[0])
    if stream.received == 0:
        raise _empty(path)
    pieces.append(stream.flush()[0])
    return torch.cat(pieces)  # [N']


def _frame_to_array(frame) -> np.ndarray:
    """One PyAV AudioFrame -> float32 [C, n] in [-1, 1] whatever the sample format."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:  # packed: [1, n*C] interleaved
        data = data.reshape(-1, channels).T
    if data.dtype.kind == "i":
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    elif data.dtype.kind == "u":  # u8 is offset binary
        data = (data.astype(np.float32) - 128.0) / 128.0
    return np.ascontiguousarray(data, dtype=np.float32)


def audio_from_comfy(audio: dict) -> tuple[Tensor, int]:
    """ComfyUI AUDIO {"waveform": [B, C, N], "sample_rate": int} -> (waveform [C, N], sample_rate). Uses batch 0."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        got = sorted(audio) if isinstance(audio, dict) else type(audio).__name__
        raise InputError(f"AUDIO input: got {got}; need a dict with 'waveform' [B, C, N] and 'sample_rate'")
    waveform, sample_rate = audio["waveform"], audio["sample_rate"]
    if not isinstance(waveform, Tensor) or waveform.ndim != 3:
        shape = tuple(waveform.shape) if isinstance(waveform, Tensor) else type(waveform).__name__
        raise InputError(f"AUDIO input: waveform is {shape}; need a tensor [batch, channels, samples]")
    if waveform.shape[0] > 1:
        log.warning("AUDIO input holds a batch of %d clips; using the first", waveform.shape[0])
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise InputError(f"AUDIO input: sample_rate={sample_rate!r}; need a positive integer (Hz)")
    return _check_waveform(waveform[0], "AUDIO input"), sample_rate


MUX_SAMPLE_RATE = 48_000  # audio at a rate AAC cannot store is resampled to this for muxing


def audio_for_mux(waveform: Tensor, sample_rate: int) -> tuple[Tensor, int]:
    """Audio as every front end muxes it into the MP4: [C <= 2, N] float32 in [-1, 1] at a rate AAC stores
    (more than two channels are averaged to mono; other rates resampled to MUX_SAMPLE_RATE)."""
    from .video_writer import AAC_SAMPLE_RATES

    wave = _check_waveform(waveform, "audio to mux")
    if wave.shape[0] > 2:
        wave = wave.mean(dim=0, keepdim=True)
    if int(sample_rate) not in AAC_SAMPLE_RATES:
        wave, sample_rate = resample(wave, int(sample_rate), MUX_SAMPLE_RATE), MUX_SAMPLE_RATE
    return wave.clamp(-1.0, 1.0), int(sample_rate)


def _kaiser(x: Tensor, beta: float) -> Tensor:
    """Kaiser window at x in [-1, 1] (0 outside)."""
    inside = x.abs() <= 1
    arg = beta * torch.sqrt(torch.clamp(1 - x * x, min=0.0))
    return torch.where(inside, torch.special.i0(arg) / torch.special.i0(torch.tensor(beta, dtype=x.dtype)), 0.0)


def _filter_bank(up: int, down: int) -> tuple[Tensor, int]:
    """Polyphase bank [up, 2*half] (float64) and half, for output/input ratio up/down (reduced).

    Phase p serves outputs whose position n*down/up has fractional part p/up.
    """
    cutoff = min(1.0, up / down) * ROLLOFF  # in cycles per input sample, relative to the input Nyquist
    half = math.ceil(ZERO_CROSSINGS / cutoff)  # taps on each side of the centre
    offsets = torch.arange(-half + 1, half + 1, dtype=torch.float64)  # [2*half]: taps floor(t)-half+1 .. floor(t)+half
    frac = torch.arange(up, dtype=torch.float64)[:, None] / up  # [up, 1]
    dist = offsets[None, :] - frac  # [up, 2*half] input-sample distance from the output position
    bank = cutoff * torch.special.sinc(cutoff * dist) * _kaiser(dist / (half + 1), KAISER_BETA)
    bank = bank / bank.sum(dim=1, keepdim=True)  # unit DC gain in every phase
    return bank, half


class StreamingResampler:
    """Resamples a stream pushed in pieces; the concatenated output equals `resample` of the whole.

    Holds only the input samples the next outputs still need (2·half taps), so hour-long
    audio can be decoded and resampled block by block.
    """

    def __init__(self, sr_from: int, sr_to: int, rows: int = 1) -> None:
        if sr_from <= 0 or sr_to <= 0:
            raise InputError(f"resample: sample rates {sr_from} -> {sr_to} Hz; both must be positive")
        g = math.gcd(sr_from, sr_to)
        self.up, self.down = sr_to // g, sr_from // g
        self.passthrough = sr_from == sr_to  # equal rates: samples go through untouched
        bank, self.half = _filter_bank(self.up, self.down)
        self.bank = bank.to(torch.float32)  # [up, 2*half]
        self.taps = torch.arange(2 * self.half)
        self.buffer = torch.zeros(rows, self.half)  # [R, n]: left zero padding = silence before the start
        self.buffer_start = -self.half  # input index of buffer[:, 0]
        self.received = 0  # input samples pushed so far
        self.emitted = 0  # output samples produced so far

    def _outputs(self, stop: int) -> Tensor:
        """Outputs emitted .. stop-1 from the buffer, [R, stop - emitted]."""
        out = torch.empty(self.buffer.shape[0], max(0, stop - self.emitted))
        for start in range(self.emitted, stop, OUTPUT_BLOCK):
            n = torch.arange(start, min(start + OUTPUT_BLOCK, stop), dtype=torch.int64)  # [b]
            first = (n * self.down) // self.up - self.half + 1  # input index of each output's first tap
            idx = first[:, None] - self.buffer_start + self.taps[None, :]  # [b, 2h] into the buffer
            # index_select on a flat index: much faster than 2-D advanced indexing for small blocks
            windows = self.buffer.index_select(1, idx.reshape(-1)).view(-1, n.numel(), 2 * self.half)
            out[:, start - self.emitted:start - self.emitted + n.numel()] = \
                (windows * self.bank[(n * self.down) % self.up][None]).sum(-1)  # [R, b]
        self.emitted = max(self.emitted, stop)
        keep_from = (self.emitted * self.down) // self.up - self.half + 1  # first tap of the next output
        drop = max(0, keep_from - self.buffer_start)
        self.buffer, self.buffer_start = self.buffer[:, drop:], self.buffer_start + drop
        return out

    def push(self, samples: Tensor) -> Tensor:
        """Append input [R, n] (or [n]); returns the outputs whose taps are now all known."""
        samples = samples.reshape(self.buffer.shape[0], -1).to(torch.float32)
        if self.passthrough:
            self.received += samples.shape[1]
            return samples
        self.buffer = torch.cat([self.buffer, samples], dim=1)
        self.received += samples.shape[1]
        # output n is complete when its last tap floor(n·down/up) + half < received
        ready = -(-(self.received - self.half) * self.up // self.down) if self.received > self.half else 0
        return self._outputs(max(self.emitted, ready))

    def flush(self) -> Tensor:
        """The remaining outputs, reading silence past the end; total ceil(N·sr_to/sr_from)."""
        if self.passthrough:
            return torch.zeros(self.buffer.shape[0], 0)
        self.buffer = torch.cat([self.buffer, torch.zeros(self.buffer.shape[0], self.half + 1)], dim=1)
        return self._outputs(-(-self.received * self.up // self.down))


def resample(waveform: Tensor, sr_from: int, sr_to: int) -> Tensor:
    """Band-limited resampling along the last axis; [..., N] -> [..., ceil(N * sr_to / sr_from)].

    Samples outside the signal are taken as silence (zero).
    """
    lead = waveform.shape[:-1]
    flat = waveform.reshape(-1, waveform.shape[-1])  # [R, N]
    stream = StreamingResampler(sr_from, sr_to, rows=flat.shape[0])
    out = torch.cat([stream.push(flat), stream.flush()], dim=1)  # [R, N']
    return out.reshape(*lead, out.shape[1])


def to_mono_16k(waveform: Tensor, sr: int) -> Tensor:
    """[C, N] at sr -> mono [N'] at 16 kHz: average the channels, then resample."""
    waveform = _check_waveform(waveform, "audio")
    return resample(waveform.mean(dim=0), sr, TARGET_SAMPLE_RATE)  # [N']
