"""Inputs to decoded frames to a file: the one render path shared by the CLI, the Python API and the nodes.

Data flows one way and nothing holds the whole video: committed latent chunks from the
stream are decoded by the streaming VAE decoder (its causal cache carried across chunks)
and handed to a sink (the MP4 writer, a preview, a custom consumer) as they are made.
The codec is anything that meets `LatentCodec`: the Wan2.1 VAE (knot_core.vae), the TAEHV tiny
decoders taew2_1 / lighttaew2_1 (knot_core.tiny_codec) or the demo model's codec (knot_core.demo_codec),
which share the latent layout and the frame count 1 + 4(T - 1).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from .background_writer import BackgroundWriter
from .config import StreamConfig
from .dit import KnotDiT
from .engine.state import StreamState
from .engine.stream import ChunkStatus, StreamInputs, generate, start_stream
from .image import FitMode, prepare_reference
from .vae import encode_image
from .video_writer import VideoWriter, frames_from_decoder

log = logging.getLogger(__name__)


class FrameDecoder(Protocol):
    """The decoder state of one latent stream: chunk after chunk in, the new video frames out."""

    frames_decoded: int

    def decode(self, latent: Tensor) -> Tensor:
        """Normalised latents [B, 16, t, h, w] -> frames [B, 3, t', 8h, 8w] in [-1, 1] (1 + 4(t-1) first, 4t after)."""
        ...


class LatentCodec(Protocol):
    """What the render path needs of a video autoencoder with the Wan2.1 VAE's latent layout (stride 4, 8, 8)."""

    @property
    def z_dim(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def encode(self, video: Tensor) -> Tensor:
        """Video [B, 3, 1+4k, H, W] in [-1, 1] -> normalised latent [B, z_dim, 1+k, H/8, W/8]."""
        ...

    def streaming_decoder(self) -> FrameDecoder:
        """A decoder for one new stream."""
        ...


@dataclass(frozen=True)
class FrameChunk:
    frames: Tensor  # (T, H, W, 3) uint8: the new video frames of one chunk
    first_frame: int  # video index of frames[0]
    status: ChunkStatus


@dataclass(frozen=True)
class RenderResult:
    path: Path
    frames: int  # video frames in the file
    chunks: int
    seconds: float
    interrupted: bool

    @property
    def fps_achieved(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def encode_reference(vae: LatentCodec, image: Tensor | np.ndarray, height: int, width: int,
                     mode: FitMode = "crop") -> Tensor:
    """Reference image (H, W, 3) / (B, H, W, 3), 0..1 or uint8 -> normalised latent (B, 16, 1, h, w)."""
    pixels = prepare_reference(image, height, width, mode).to(device=vae.device, dtype=vae.dtype)
    return encode_image(vae, pixels).float()


def video_frames_for(latent_frames: int) -> int:
    """Video frames decoded from a stream of latent frames (Wan2.1 VAE: 1 + 4(T - 1))."""
    return 1 + 4 * (latent_frames - 1) if latent_frames > 0 else 0


def latent_frames_for(video_frames: int) -> int:
    """Latent frames needed to decode at least `video_frames` frames."""
    return 1 + -(-(video_frames - 1) // 4) if video_frames > 0 else 0


def frame_stream(model: KnotDiT, cfg: StreamConfig, inputs: StreamInputs, state: StreamState,
                 decoder: FrameDecoder, *, num_frames: int | None = None) -> Iterator[FrameChunk]:
    """Decoded frames chunk by chunk; stops after num_frames video frames (None: never)."""
    done = decoder.frames_decoded
    for chunk in generate(model, cfg, inputs, state):
        frames = frames_from_decoder(decoder.decode(chunk.latents)).cpu()  # (T, H, W, 3) uint8
        if num_frames is not None:
            frames = frames[: max(0, num_frames - done)]
        yield FrameChunk(frames, done, chunk.status)
        done += frames.shape[0]
        if num_frames is not None and done >= num_frames:
            return


def render_to_file(model: KnotDiT, cfg: StreamConfig, inputs: StreamInputs, vae: LatentCodec, out_path: str | Path, *,
                   fps: float, num_frames: int, seed: int = 0, audio: Tensor | None = None,
                   sample_rate: int | None = None, overwrite: bool = False,
                   should_stop: Callable[[], bool] | None = None,
                   on_chunk: Callable[[FrameChunk], None] | None = None) -> RenderResult:
    """Render num_frames video frames to an MP4 as they are made (audio muxed if given).

    should_stop is polled after each chunk; stopping (or any error) leaves a playable file
    holding every chunk already written.
    """
    state = start_stream(model, cfg, inputs, seed=seed)
    decoder = vae.streaming_decoder()
    started = time.perf_counter()
    video = VideoWriter(out_path, fps, audio=audio, sample_rate=sample_rate, overwrite=overwrite)
    with BackgroundWriter(video) as writer:
        chunks, interrupted = write_stream(frame_stream(model, cfg, inputs, state, decoder, num_frames=num_frames),
                                           writer, num_frames=num_frames, should_stop=should_stop, on_chunk=on_chunk)
    frames = video.frames_written
    return RenderResult(Path(out_path), frames, chunks, time.perf_counter() - started, interrupted)


def write_stream(pieces: Iterable[FrameChunk], writer: BackgroundWriter, *, num_frames: int,
                 should_stop: Callable[[], bool] | None = None,
                 on_chunk: Callable[[FrameChunk], None] | None = None) -> tuple[int, bool]:
    """Hand chunks to an open writer, on_chunk after each; returns (chunks, interrupted).

    Encoding overlaps the next chunk's generation: a chunk is durable once `writer.flush()` or
    `close()` returns. should_stop is polled after each on_chunk; the caller closes the writer.
    """
    chunks = 0
    for piece in pieces:
        writer.write(piece.frames)
        chunks += 1
        if on_chunk is not None:
            on_chunk(piece)
        if should_stop is not None and should_stop() and writer.frames_submitted < num_frames:
            log.info("render stopped after %d chunks (%d frames); the file holds them", chunks,
                     writer.frames_submitted)
            return chunks, True
    return chunks, False
