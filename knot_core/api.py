"""The documented Python API: one job to an MP4, or the decoded frames of a job for a custom sink.

    from knot_core.api import RenderJob, render, iter_frames

    render(RenderJob(reference="me.png", model="knot.safetensors", vae="wan_2.1_vae.safetensors",
                     out="me.mp4", audio="speech.wav", settings={"chunk_len": 3}))

    for chunk in iter_frames(job):      # chunk.frames: (T, H, W, 3) uint8, chunk.first_frame, chunk.status
        virtual_camera.send(chunk.frames.numpy())

For full control (your own model/VAE objects, inputs built in memory) use the render path directly:
`render_path.prepare(...)` then `render_path.frames(plan)` (the same iterator) or `file_sink.write_file`.
Importing this module loads no weights; models, VAE and inputs load when a job runs.
"""

from __future__ import annotations

from collections.abc import Iterator

from .file_sink import FileOutput, write_file
from .render import RenderJob, check_job, render, state_path
from .render_path import FrameChunk, RenderPlan, RenderResult, drain, frames, prepare, start
from .render_plan import Length

__all__ = ["FileOutput", "FrameChunk", "Length", "RenderJob", "RenderPlan", "RenderResult", "check_job", "drain",
           "frames", "iter_frames", "prepare", "render", "start", "state_path", "write_file"]


def iter_frames(job: RenderJob) -> Iterator[FrameChunk]:
    """Decoded frames of `job`, chunk by chunk, as they are made; nothing is written (job.out is not used).

    Memory is flat however long it runs; stop early by breaking out of the loop. The length and every
    check are `render`'s (the same render path).
    """
    from .render_session import load_job

    plan, _ = load_job(job)
    yield from frames(plan)
