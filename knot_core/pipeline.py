"""The render path's earlier names, kept for callers of the 0.x API: everything here is render_path's.

Data flows one way and nothing holds the whole video: committed latent chunks from the
stream are decoded by the streaming VAE decoder (its causal cache carried across chunks)
and handed to a sink (the MP4 writer, a preview, a custom consumer) as they are made.
The codec is anything that meets `LatentCodec`: the Wan2.1 VAE (knot_core.vae), the TAEHV tiny
decoders taew2_1 / lighttaew2_1 (knot_core.tiny_codec) or the demo model's codec (knot_core.demo_codec),
which share the latent layout and the frame count 1 + 4(T - 1).

`frame_stream` is `render_path.decode(stream(...))` for a stream you started yourself, `write_stream` is
`render_path.drain`, and `render_to_file` is `render_path.prepare` + `file_sink.write_file` with the
length given in frames. New code: `knot_core.render_path` (see its docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

from torch import Tensor

from .config import StreamConfig, latent_frames_for, video_frames_for
from .dit import KnotDiT
from .engine.state import StreamState
from .engine.stream import StreamInputs
from .render_path import (
    FrameChunk,
    FrameDecoder,
    LatentCodec,
    RenderPlan,
    RenderResult,
    StreamPosition,
    decode,
    prepare,
    stream,
)
from .render_path import drain as write_stream
from .render_plan import Length

__all__ = ["FrameChunk", "FrameDecoder", "LatentCodec", "RenderResult", "frame_stream", "latent_frames_for",
           "render_to_file", "video_frames_for", "write_stream"]


def frame_stream(model: KnotDiT, cfg: StreamConfig, inputs: StreamInputs, state: StreamState,
                 decoder: FrameDecoder, *, num_frames: int | None = None) -> Iterator[FrameChunk]:
    """Decoded frames of a stream you started, chunk by chunk; stops after num_frames video frames (None: never)."""
    plan = RenderPlan(model, None, cfg, inputs, Fraction(1), num_frames if num_frames is not None else 2**62)
    position = StreamPosition(state, decoder)
    return decode(plan, position, stream(plan, position))


def render_to_file(model: KnotDiT, cfg: StreamConfig, inputs: StreamInputs, vae: LatentCodec, out_path: str | Path, *,
                   fps: float, num_frames: int, seed: int = 0, audio: Tensor | None = None,
                   sample_rate: int | None = None, overwrite: bool = False,
                   should_stop: Callable[[], bool] | None = None,
                   on_chunk: Callable[[FrameChunk], None] | None = None) -> RenderResult:
    """Render num_frames video frames to an MP4 as they are made (audio muxed if given); stopping keeps a
    playable file holding every chunk already written."""
    from .file_sink import FileOutput, write_file

    plan = prepare(model, vae, cfg, inputs, fps=fps, length=Length(num_frames, "frames"), seed=seed,
                   audio=None if audio is None else (audio, sample_rate))
    return write_file(plan, FileOutput(Path(out_path), overwrite=overwrite), should_stop=should_stop,
                      on_chunk=on_chunk)
