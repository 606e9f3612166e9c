"""One render job, files in and an MP4 out: the Python API behind `knot-forcing render` and `batch`.

`render(job)` checks the job (render_job.check_job: every input named, the output never an input nor
replaced unless asked), loads it (render_session.load_job -> render_path.prepare: the checks and length
rule every front end shares) and streams it into the MP4 (file_sink.write_file: background encoding,
resume state). Constant memory: nothing holds the whole video. See file_sink for resume.
"""

from __future__ import annotations

from collections.abc import Callable

from .file_sink import RESUME_FORMAT, SAVE_INTERVAL_S, STATE_SUFFIX, state_path
from .render_job import PATH_FIELDS, RenderJob, check_job, fingerprint
from .render_path import FrameChunk, RenderResult

__all__ = ["PATH_FIELDS", "RESUME_FORMAT", "SAVE_INTERVAL_S", "STATE_SUFFIX", "RenderJob", "check_job",
           "fingerprint", "render", "state_path"]


def render(job: RenderJob, *, progress: bool = False, should_stop: Callable[[], bool] | None = None,
           on_chunk: Callable[[FrameChunk], None] | None = None) -> RenderResult:
    """Render one job to job.out. Stopping via should_stop saves the resume state and keeps a playable file."""
    from dataclasses import replace

    from .file_sink import write_file
    from .output_lock import claim_output
    from .render_session import load_job

    check_job(replace(job, overwrite=True, resume=False))  # the output's name and place, before a lock is made there
    with claim_output(job.out):  # claimed before the checks: a second render of a running one names the first
        check_job(job)
        plan, output = load_job(job, progress=progress)
        output = replace(output, save_interval_s=SAVE_INTERVAL_S)  # read at call time: tests may tune it
        return write_file(plan, output, should_stop=should_stop, on_chunk=on_chunk)
