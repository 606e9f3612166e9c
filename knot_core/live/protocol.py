"""The programmatic API of a live stream: WebSocket messages at ws://HOST:PORT/knotforcing/live/<stream>/ws.

Client -> server
- binary: audio, PCM s16le (signed 16-bit little-endian), mono, 16000 Hz; a whole number of samples, at most
  `MAX_PUSH_S` per message. Push it at the pace it plays (a microphone does; a TTS engine should pace or
  watch `dropped`): the stream keeps at most `max_ahead_s` (2 s) ahead of real time and refuses the rest.
- text {"type": "format", "format": "s16le", "sample_rate": 16000, "channels": 1}: optional declaration;
  a format the stream cannot use is refused with an error and that client's audio is ignored until it
  declares a usable one.
- text {"type": "stats"}: the stream's counters come back as {"type": "stats", ...}.
One client drives a stream at a time (the first to send audio, until it leaves); every client views.

Server -> client
- text {"type": "hello", "stream", "fps", "width", "height", "audio", "delay_s"} first;
- binary: one JSON header line, b"\\n", the payload:
    {"type": "frame", "index", "clock", "pts", "input_sample", "mouth"} + a JPEG, sent when the frame is due;
    {"type": "audio", "clock", "pts", "samples"} + PCM s16le mono 16 kHz: the audio of the chunk that starts at
    that clock slot, sent with its first frame. pts = clock / fps seconds on the stream clock; input_sample
    is the index of the driver's sample that frame shows (-1: silence), for latency measurements;
- text {"type": "dropped", "samples"}: part of a push was over the input bound;
- text {"type": "error", "message"}: what was wrong with this client's message and the fix;
- text {"type": "end", "reason"} before the server closes the socket.
"""

from __future__ import annotations

import json

import cv2
import numpy as np

from ..errors import InputError

AUDIO_FORMAT = {"format": "s16le", "sample_rate": 16000, "channels": 1}
MAX_PUSH_S = 1.0
JPEG_QUALITY = 90


def encode_binary(header: dict, payload: bytes) -> bytes:
    """A header line (compact JSON has no raw newline) and the payload."""
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + payload


def decode_binary(data: bytes) -> tuple[dict, bytes]:
    head, sep, payload = data.partition(b"\n")
    if not sep:
        raise InputError("binary message has no header line")
    return json.loads(head), payload


def pcm_from_bytes(data: bytes, rate: int = AUDIO_FORMAT["sample_rate"]) -> np.ndarray:
    """s16le bytes -> float32 samples in [-1, 1]; a clear error for anything that is not whole samples."""
    if len(data) % 2:
        raise InputError(f"audio message of {len(data)} bytes is not whole 16-bit samples; send s16le mono PCM "
                         f"({AUDIO_FORMAT['sample_rate']} Hz), 2 bytes per sample")
    if len(data) > 2 * int(MAX_PUSH_S * rate):
        raise InputError(f"audio message of {len(data) // 2} samples is longer than {MAX_PUSH_S:g} s; split it "
                         "into shorter messages pushed at the pace they play")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def pcm_to_bytes(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def check_format(message: dict) -> None:
    """A client's {"type": "format", ...}: raise naming what is wrong unless it is exactly AUDIO_FORMAT."""
    got = {key: message.get(key) for key in AUDIO_FORMAT}
    if got != AUDIO_FORMAT:
        raise InputError(f"audio format {got} is not usable; send {AUDIO_FORMAT} (resample and downmix first, "
                         "e.g. ffmpeg -ar 16000 -ac 1 -f s16le)")


def parse_text(text: str) -> dict:
    """A client's text message -> a dict with a known "type", or a clear error."""
    try:
        message = json.loads(text)
    except ValueError:
        raise InputError(f"text message is not JSON ({text[:40]!r}...); send JSON objects such as "
                         '{"type": "stats"}, or audio as binary s16le PCM') from None
    if not isinstance(message, dict) or message.get("type") not in ("format", "stats"):
        kind = message.get("type") if isinstance(message, dict) else type(message).__name__
        raise InputError(f"unknown message type {kind!r}; the API takes 'format' and 'stats' text messages "
                         "and binary audio")
    return message


def jpeg(frame: np.ndarray) -> bytes:
    """(H, W, 3) RGB uint8 -> JPEG bytes."""
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(frame[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()
