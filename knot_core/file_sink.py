"""The MP4 sink of the render path: frames encoded in the background, a resume state beside the file.

`write_file(plan, FileOutput(...))` streams a prepared render (render_path) into an MP4 chunk by chunk;
the encoder runs in a background thread, so encoding overlaps the next chunk's generation. With a
`fingerprint` (the file front ends: render, batch, demo) it keeps a resume state: every `save_every`
chunks, and when stopped, the stream state (K/V caches, knot, noise generator), the decoder's causal
cache and the frames written go to `OUT.state.safetensors`; `resume=True` cuts the MP4 back to those
frames and goes on, giving the same frames as an uninterrupted render. The state file is removed when
the render completes. By default the state is saved every SAVE_INTERVAL_S seconds rather than every
chunk: at full size it holds gigabytes of caches (1.3B at 480x832 in bf16: about 3.8 GB), which written
per chunk would cost more time than the chunk itself.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .background_writer import BackgroundWriter
from .errors import InputError, OutputError
from .output_lock import claim_output
from .render_marker import describe_output, mark_finished
from .render_path import FrameChunk, RenderPlan, RenderResult, StreamPosition, drain, frames, start
from .video_writer import VIDEO_SUFFIXES, VideoWriter

log = logging.getLogger(__name__)

STATE_SUFFIX = ".state.safetensors"
RESUME_FORMAT = "knot_forcing.render_resume.v3"  # v2: StreamKV layout; v3: the writer's encoder segment
SEGMENT_KEY = "writer.segment"  # uint8 [t, H, W, 3]: frames since the writer's last encoder restart
SAVE_INTERVAL_S = 60.0  # default resume-state interval: bounds both the lost work and the saving cost


def state_path(out: str | Path) -> Path:
    """Where the resume state of an output lives: OUT.mp4 -> OUT.mp4.state.safetensors."""
    out = Path(out)
    return out.with_name(out.name + STATE_SUFFIX)


def check_output(out: Path, inputs: Iterable[Path | None], *, overwrite: bool, resume: bool = False,
                 suffixes: tuple[str, ...] = VIDEO_SUFFIXES) -> None:
    """The output checks of every command that writes a file, before anything is loaded: an accepted name,
    never one of the inputs, never replaced unless asked, something to resume when resuming, an existing and
    writable folder."""
    out = out.expanduser()
    target = out.resolve()
    for path in inputs:
        if path is not None and path.expanduser().resolve() == target:
            raise InputError(f"output {str(out)!r} is also an input; writing it would destroy that input: choose "
                             "another output name")
    if out.is_dir():
        example = str(out / ("out" + suffixes[0]))
        raise InputError(f"output {str(out)!r} is a folder; give a file name such as {example!r}")
    if out.suffix.lower() not in suffixes:
        raise InputError(f"output {str(out)!r} must end in one of {suffixes} (the file written); choose such a name")
    state = state_path(out)
    if resume:
        if not out.is_file() or not state.is_file():
            raise InputError(f"nothing to resume: {describe_output(out, state).describe()}")
    elif out.exists() and not overwrite:
        hint = " or --resume to continue it" if state.is_file() and suffixes == VIDEO_SUFFIXES else ""
        raise InputError(f"output {str(out)!r} already exists; choose another name, pass --overwrite to "
                         f"replace it{hint}")
    if not out.parent.is_dir():
        raise InputError(f"output directory {str(out.parent)!r} does not exist; create it first (mkdir -p)")
    try:  # a real probe: os.access is blind to read-only mounts and says yes to root everywhere
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as err:
        raise InputError(f"output directory {str(out.parent)!r} is not writable ({err.strerror}); choose a "
                         "writable folder") from err


@dataclass(frozen=True)
class FileOutput:
    """Where and how a render is written. fingerprint: what must not change between a render and its
    resume (JSON-able; None = keep no resume state, e.g. the ComfyUI node's numbered outputs)."""

    path: Path
    overwrite: bool = False
    resume: bool = False
    crf: int = 18
    save_every: int | None = None  # chunks between resume saves; None: every save_interval_s seconds
    save_interval_s: float = SAVE_INTERVAL_S
    fingerprint: Mapping[str, Any] | None = None
    name: str = ""
    progress: bool = False


def write_file(plan: RenderPlan, output: FileOutput, *, should_stop: Callable[[], bool] | None = None,
               on_chunk: Callable[[FrameChunk], None] | None = None) -> RenderResult:
    """Render the plan into output.path (see the module docstring); stopping keeps a playable file. The output
    is claimed for the whole render (output_lock): a second writer of the same file is refused."""
    with claim_output(output.path):
        return _write_file(plan, output, should_stop=should_stop, on_chunk=on_chunk)


def _write_file(plan: RenderPlan, output: FileOutput, *, should_stop: Callable[[], bool] | None,
                on_chunk: Callable[[FrameChunk], None] | None) -> RenderResult:
    started = time.perf_counter()
    resumable = output.fingerprint is not None
    state_file = state_path(output.path)
    audio, rate = plan.audio or (None, None)
    options = {"audio": audio, "sample_rate": rate, "crf": output.crf}
    position = start(plan)
    if output.resume:
        done, segment = _load(state_file, plan, position, output)
        log.info("resuming %s at chunk %d, frame %d", output.path, position.state.chunk_index, done)
        video = VideoWriter.reopen(output.path, plan.fps, frames=done, segment=segment, **options)
    else:
        video = VideoWriter(output.path, plan.fps, overwrite=output.overwrite, **options)
        if resumable:
            state_file.unlink(missing_ok=True)  # a state from an earlier render of this name no longer applies
    first_chunk, done_before = position.state.chunk_index, video.frames_written
    bar = _progress_bar(output.progress, plan.num_frames, done_before, output.name or output.path.name)
    saved = {"frames": done_before, "time": time.perf_counter()}

    def save() -> None:
        writer.flush()  # the state must describe exactly the frames in the file
        _save(state_file, plan, position, video.frames_written, output, video.segment_frames())
        saved.update(frames=video.frames_written, time=time.perf_counter())

    def after_chunk(piece: FrameChunk) -> None:
        bar.update(piece.frames.shape[0])
        chunks_done = position.state.chunk_index - first_chunk
        due = (chunks_done % output.save_every == 0 if output.save_every
               else time.perf_counter() - saved["time"] >= output.save_interval_s)
        if resumable and due and writer.frames_submitted < plan.num_frames:
            save()
        if on_chunk is not None:
            on_chunk(piece)

    try:
        with BackgroundWriter(video) as writer:
            chunks, interrupted = drain(frames(plan, position), writer, num_frames=plan.num_frames,
                                        should_stop=should_stop, on_chunk=after_chunk)
            if resumable and interrupted and saved["frames"] != writer.frames_submitted:
                save()
        written = video.frames_written
    finally:
        bar.close()
    if not interrupted:
        mark_finished(output.path, written)  # before the state goes: a file is never both unmarked and stateless
        if resumable:
            state_file.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    log.info("%s: %d frames (%d new) in %.1f s%s", output.path, written, written - done_before, seconds,
             " — interrupted, resume with --resume" if interrupted else "")
    return RenderResult(output.path, written, chunks, seconds, interrupted)


def _save(state_file: Path, plan: RenderPlan, position: StreamPosition, frames_written: int,
          output: FileOutput, segment: np.ndarray | None) -> None:
    """Stream + decoder state after `frames_written` frames, and the writer's current encoder segment
    (VideoWriter.segment_frames: what a resume encodes again to match the uninterrupted file), replaced
    atomically."""
    from safetensors import SafetensorError

    decoder = {f"decoder.{k}": v.detach().cpu().contiguous() for k, v in position.decoder.state_tensors().items()}
    if segment is not None:
        decoder[SEGMENT_KEY] = torch.from_numpy(np.ascontiguousarray(segment))
    render = {"format": RESUME_FORMAT, "frames_written": frames_written, "job": output.fingerprint}
    try:
        position.state.save(state_file, plan.cfg, extra_tensors=decoder,
                            extra_metadata={"render": json.dumps(render)})
    except (OSError, SafetensorError) as err:
        raise OutputError(f"cannot save the resume state {str(state_file)!r} ({err}); {output.path} holds "
                          f"{frames_written} frames and is playable. Free disk space or choose another "
                          "location") from err
    log.debug("saved resume state at frame %d to %s", frames_written, state_file)


def _load(state_file: Path, plan: RenderPlan, position: StreamPosition,
          output: FileOutput) -> tuple[int, np.ndarray | None]:
    """Restore the position saved in state_file; returns the frames the file holds at that point and the
    writer's encoder segment to encode again."""
    from safetensors import safe_open

    try:
        with safe_open(str(state_file), "pt") as f:
            render = json.loads((f.metadata() or {}).get("render", "null"))
            decoder_tensors = {k[8:]: f.get_tensor(k) for k in f.keys() if k.startswith("decoder.")}
            segment = f.get_tensor(SEGMENT_KEY).numpy() if SEGMENT_KEY in f.keys() else None
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same message
        raise InputError(f"cannot read resume state {str(state_file)!r} ({type(err).__name__}); it is damaged: "
                         "render again with --overwrite") from err
    if not isinstance(render, dict) or render.get("format") != RESUME_FORMAT:
        raise InputError(f"{str(state_file)!r} is not a resume state of this version; render again with "
                         "--overwrite")
    saved, now = render["job"], json.loads(json.dumps(output.fingerprint))
    if saved != now:
        diff = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
        raise InputError(f"cannot resume {str(output.path)!r}: the job differs from the interrupted one "
                         f"(saved, now): {diff}; resume with the same inputs and settings")
    position.state.load(state_file, plan.cfg)
    position.decoder.load_state_tensors(decoder_tensors)
    done = int(render["frames_written"])
    assert position.decoder.frames_decoded == done, (position.decoder.frames_decoded, done)
    return done, segment


def _progress_bar(enabled: bool, total: int, initial: int, name: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="frame", desc=name, disable=not enabled, dynamic_ncols=True,
                smoothing=0.1)
