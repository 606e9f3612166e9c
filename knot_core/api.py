"""The documented Python API: one job to an MP4, or the decoded frames of a job for a custom sink.

    from knot_core.api import RenderJob, render, iter_frames

    render(RenderJob(reference="me.png", model="knot.safetensors", vae="wan_2.1_vae.safetensors",
                     out="me.mp4", audio="speech.wav", settings={"chunk_len": 3}))

    for chunk in iter_frames(job):      # chunk.frames: (T, H, W, 3) uint8, chunk.first_frame, chunk.status
        virtual_camera.send(chunk.frames.numpy())

For full control (your own model/VAE objects, inputs built in memory) use the pipeline directly:
`stream.start_stream` + `pipeline.frame_stream` (the same iterator) or `pipeline.render_to_file`.
Importing this module loads no weights; models, VAE and inputs load when a job runs.
"""

from __future__ import annotations

from collections.abc import Iterator

from .pipeline import FrameChunk, RenderResult, frame_stream, render_to_file
from .render import RenderJob, check_job, render, state_path

__all__ = ["FrameChunk", "RenderJob", "RenderResult", "check_job", "frame_stream", "iter_frames", "render",
           "render_to_file", "state_path"]


def iter_frames(job: RenderJob) -> Iterator[FrameChunk]:
    """Decoded frames of `job`, chunk by chunk, as they are made; nothing is written (job.out is not used).

    Memory is flat however long it runs; stop early by breaking out of the loop. The length follows the
    job (frames / seconds / driving input), as for `render`.
    """
    from .engine.stream import start_stream
    from .render_session import open_session

    session = open_session(job)
    state = start_stream(session.model, session.cfg, session.inputs, seed=job.seed)
    yield from frame_stream(session.model, session.cfg, session.inputs, state, session.vae.streaming_decoder(),
                            num_frames=session.num_frames)
