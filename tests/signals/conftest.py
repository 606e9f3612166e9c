"""Shared fixtures: real files written with PyAV, a tiny random wav2vec2, the shared media folder."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[2].parent / "shared"  # next to the checkout


def sine(freq: float, rate: int, seconds: float, channels: int = 1, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(rate * seconds), dtype=torch.float64) / rate
    wave = amp * torch.sin(2 * math.pi * freq * t)
    return torch.stack([wave * (1 - 0.2 * c) for c in range(channels)]).float()  # [C, N]


def write_audio(path: Path, wave: torch.Tensor, rate: int, codec: str, *, video: bool = False) -> Path:
    """Encode [C, N] float samples with PyAV (optionally next to a tiny video stream)."""
    channels = wave.shape[0]
    with av.open(str(path), "w") as out:
        if video:
            vs = out.add_stream("mpeg4", rate=25)
            vs.width, vs.height, vs.pix_fmt = 64, 64, "yuv420p"
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono" if channels == 1 else "stereo"
        fmt = stream.codec_context.codec.audio_formats[0].name
        block = stream.codec_context.frame_size or 1024
        data = wave.numpy()
        pts = 0
        for start in range(0, data.shape[1], block):
            chunk = np.ascontiguousarray(data[:, start:start + block])
            if fmt in ("s16", "s16p"):
                chunk = (chunk * 32767).astype(np.int16)
            elif fmt in ("s32", "s32p"):
                chunk = (chunk * 2147483647).astype(np.int32)
            else:
                chunk = chunk.astype(np.float32)
            if not fmt.endswith("p"):
                chunk = chunk.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format=fmt, layout=stream.layout.name)
            frame.sample_rate, frame.pts, frame.time_base = rate, pts, Fraction(1, rate)
            pts += chunk.shape[-1] // (1 if fmt.endswith("p") else channels)
            for packet in stream.encode(frame):
                out.mux(packet)
            if video and start % (rate // 25 * 8) < block:
                image = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
                for packet in vs.encode(image):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if video:
            for packet in vs.encode():
                out.mux(packet)
    return path


@pytest.fixture(scope="session")
def shared_media() -> Path:
    if not (SHARED / "media").is_dir():
        pytest.skip(f"shared test media not found at {SHARED / 'media'} (run from the project checkout)")
    return SHARED / "media"


def tiny_wav2vec2_config():
    transformers = pytest.importorskip("transformers", reason="the wav2vec2 path needs the optional 'transformers'")
    # Conv front end as base (kernels/strides) with fewer channels; a small transformer.
    return transformers.Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=1,
                                       intermediate_size=128, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                                       num_conv_pos_embedding_groups=4, vocab_size=8)


@pytest.fixture(scope="session")
def tiny_wav2vec2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    return transformers.Wav2Vec2Model(tiny_wav2vec2_config()).eval()
