"""The one render path: prepare -> stream -> decode -> sink, called by every front end.

The ComfyUI sampler node, `render` and `demo` on the command line, the Python API, batch, and a live sink
all go through these functions; only how each front end loads its inputs differs (files, ComfyUI sockets,
the built-in demo model). So a length rule or a pre-flight check exists once:

    plan = prepare(model, codec, cfg, inputs, fps=25, length=Length(10, "seconds"), seed=0, audio=audio)
    position = start(plan)                          # engine state + decoder state (or restored: file_sink)
    for piece in frames(plan, position):            # stream (engine latents) -> decode (streaming decoder)
        sink.write(piece.frames)                    # (T, H, W, 3) uint8, piece.first_frame, piece.status

1. `prepare` checks everything a user can get wrong (codec/model latent space, input shapes, the length
   against the driving signals, the signals' features through the model's adapters, the seed) and plans
   the video length with `render_plan.plan_length` -> a `RenderPlan`. Nothing is written before it returns.
2. `start` opens the stream: the engine's `StreamState` and the codec's streaming decoder.
3. `stream` yields the engine's committed latent chunks; `decode` turns them into video frames, stopping
   after `plan.num_frames`; `frames` is the two together.
4. `drain` hands the frames to any sink with `write(frames)` and polls a stop request after each chunk;
   `file_sink.write_file` is the MP4 sink (background encoding, resume state) the file front ends use.

A live sink (no end) asks for a length no one reaches, e.g. `Length(10**9, "frames")`, and stops by breaking out
of `frames` (or through drain's should_stop); every check still runs first.

The codec is anything that meets `LatentCodec`: the Wan2.1 VAE (knot_core.vae) or the demo model's codec
(knot_core.demo_codec), which share the latent layout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from .config import StreamConfig
from .dit import KnotDiT
from .engine.state import StreamState
from .engine.stream import Chunk, ChunkStatus, StreamInputs, generate, start_stream, validate_inputs
from .errors import InputError
from .render_plan import Length, check_vae_pair, chunks_for, plan_length, preflight_signals
from .video_writer import frames_from_decoder

log = logging.getLogger(__name__)

SEED_RANGE = (0, 2**63 - 1)  # torch.Generator.manual_seed's range; ComfyUI's seed widget uses the same


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


class FrameSink(Protocol):
    """Where decoded frames go (the MP4 writer, a preview, a socket): `write` one chunk at a time."""

    def write(self, frames: Tensor) -> None: ...


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


@dataclass(frozen=True)
class RenderPlan:
    """A checked render: what streams, at which rate, for how long, and the audio to mux (if any)."""

    model: KnotDiT
    codec: LatentCodec
    cfg: StreamConfig
    inputs: StreamInputs
    fps: Fraction
    num_frames: int  # video frames the render makes
    seed: int = 0
    audio: tuple[Tensor, int] | None = None  # (waveform [C <= 2, N] float32, AAC sample rate) to mux

    @property
    def chunks(self) -> int:
        return chunks_for(self.cfg, self.num_frames)


@dataclass
class StreamPosition:
    """Where a stream is: the engine's state and the decoder's causal cache (saved together to resume)."""

    state: StreamState
    decoder: FrameDecoder


@contextmanager
def torch_threads(n: int | None):
    """Run with n intra-op threads, then restore (None: leave torch's setting). The demo model's matrices are
    tiny (128 wide): one thread avoids the OpenMP hand-offs that cost 10x more than the math when the cores
    are shared (measured 2.3 vs 32 ms per 512x128x384 linear on the 2-core CI machine under load)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_seed(seed: object) -> int:
    lo, hi = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, int) or not lo <= seed <= hi:
        raise InputError(f"seed={seed!r}; give a whole number in [{lo}, 2**63 - 1] (e.g. 0)")
    return seed


def prepare(model: KnotDiT, codec: LatentCodec, cfg: StreamConfig, inputs: StreamInputs, *, fps: float | Fraction,
            length: Length, seed: int = 0, audio: tuple[Tensor, int] | None = None) -> RenderPlan:
    """Every pre-flight check and the length plan of one render (raises a KnotError before any work)."""
    check_vae_pair(model.cfg.out_dim, codec.z_dim)
    validate_inputs(model, cfg, inputs)
    check_seed(seed)
    rate = Fraction(fps).limit_denominator(1001) if isinstance(fps, float) else Fraction(fps)
    audio_frames = None if audio is None else int(audio[0].shape[1] * rate // audio[1])
    num_frames = plan_length(cfg, float(fps), length, inputs.signals, audio_frames)
    preflight_signals(model, inputs.signals, model.patch_embedding.weight.device)
    return RenderPlan(model, codec, cfg, inputs, rate, num_frames, seed, audio)


def start(plan: RenderPlan) -> StreamPosition:
    """A fresh stream of the plan: seeded engine state and an empty decoder."""
    state = start_stream(plan.model, plan.cfg, plan.inputs, seed=plan.seed)
    return StreamPosition(state, plan.codec.streaming_decoder())


def stream(plan: RenderPlan, position: StreamPosition) -> Iterator[Chunk]:
    """The engine's committed latent chunks from `position` on (endless; `decode` stops at the plan's length)."""
    return generate(plan.model, plan.cfg, plan.inputs, position.state)


def decode(plan: RenderPlan, position: StreamPosition, chunks: Iterable[Chunk]) -> Iterator[FrameChunk]:
    """Latent chunks -> video frames through the position's decoder; stops after plan.num_frames frames."""
    done = position.decoder.frames_decoded
    for chunk in chunks:
        frames = frames_from_decoder(position.decoder.decode(chunk.latents)).cpu()  # (T, H, W, 3) uint8
        frames = frames[: max(0, plan.num_frames - done)]
        yield FrameChunk(frames, done, chunk.status)
        done += frames.shape[0]
        if done >= plan.num_frames:
            return


def frames(plan: RenderPlan, position: StreamPosition | None = None) -> Iterator[FrameChunk]:
    """Decoded frames of the plan, chunk by chunk, from `position` (default: a fresh start)."""
    position = position or start(plan)
    return decode(plan, position, stream(plan, position))


def drain(pieces: Iterable[FrameChunk], sink: FrameSink, *, num_frames: int,
          should_stop: Callable[[], bool] | None = None,
          on_chunk: Callable[[FrameChunk], None] | None = None) -> tuple[int, bool]:
    """Hand chunks to a sink, on_chunk after each; returns (chunks, interrupted).

    should_stop is polled after each chunk's on_chunk; stopping before the last frame ends the loop
    (the caller closes the sink, so a file keeps every chunk written).
    """
    chunks, written = 0, 0
    for piece in pieces:
        sink.write(piece.frames)
        chunks, written = chunks + 1, piece.first_frame + piece.frames.shape[0]
        if on_chunk is not None:
            on_chunk(piece)
        if should_stop is not None and should_stop() and written < num_frames:
            log.info("render stopped after %d chunks (%d frames); the file holds them", chunks, written)
            return chunks, True
    return chunks, False
