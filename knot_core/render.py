"""One render job, files in and an MP4 out: the Python API behind `knot-forcing render` and `batch`.

`RenderJob` names every input file and setting (StreamConfig names, as the CLI flags and node widgets);
`render(job)` validates everything before any work, loads the model, VAE, reference and driving signals,
and streams decoded chunks into the MP4 through `pipeline.frame_stream` (constant memory: nothing holds
the whole video). Resume: every `save_every` chunks, and when stopped, the stream state (K/V caches,
knot, noise generator), the VAE decoder's causal cache and the frames written go to
`OUT.state.safetensors` beside the output; `resume=True` cuts the MP4 back to those frames and goes on,
giving the same frames as an uninterrupted render. The state file is removed when the job completes.
By default the state is saved every SAVE_INTERVAL_S seconds of rendering rather than every chunk: at
full size it holds gigabytes of caches (1.3B at 480x832 in bf16: about 3.8 GB), which written per chunk
would cost more time than the chunk itself.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .background_writer import BackgroundWriter
from .compilation import COMPILE_MODES
from .config import StreamConfig
from .errors import ConfigError, InputError
from .image import FIT_MODES
from .output_lock import claim_output
from .pipeline import FrameChunk, RenderResult, frame_stream, write_stream

log = logging.getLogger(__name__)

STATE_SUFFIX = ".state.safetensors"
RESUME_FORMAT = "knot_forcing.render_resume.v3"  # v2: StreamKV layout; v3: the writer's encoder segment
DTYPE_NAMES = ("bf16", "fp16", "fp32")
STREAM_FIELDS = tuple(f.name for f in dataclasses.fields(StreamConfig))
PATH_FIELDS = ("reference", "model", "vae", "out", "audio", "pose", "expression", "text", "wav2vec")


SAVE_INTERVAL_S = 60.0  # default resume-state interval: bounds both the lost work and the saving cost


def state_path(out: str | Path) -> Path:
    """Where the resume state of an output lives: OUT.mp4 -> OUT.mp4.state.safetensors."""
    out = Path(out)
    return out.with_name(out.name + STATE_SUFFIX)


def _setting(name: str, value: Any) -> Any:
    """A StreamConfig value from a CLI/JSON/TOML form: steps as "1000,750" or a list -> tuple of ints."""
    if name == "steps" and isinstance(value, str):
        try:
            return tuple(int(s) for s in value.split(",") if s.strip())
        except ValueError as err:
            raise ConfigError(f"steps={value!r}; give comma-separated integers, e.g. 1000,750,500,250") from err
    return tuple(value) if name == "steps" else value


@dataclass(frozen=True)
class RenderJob:
    """Everything one render needs. Paths may be str; `settings` overrides the model's StreamConfig defaults.

    Length: `frames`, else `seconds`, else until the shortest driving input (audio, pose, expression) ends.
    dtype/device default to bf16 on CUDA, else fp32 on the CPU. compile: a torch.compile mode
    for the DiT blocks (COMPILE_MODES; "none" by default). fps, width and height default to the
    model's recommendation (the size keeps the reference's aspect within the model's pixel area).
    """

    reference: Path
    model: Path
    vae: Path
    out: Path
    audio: Path | None = None
    pose: Path | None = None
    expression: Path | None = None
    text: Path | None = None
    wav2vec: Path | None = None
    seconds: float | None = None
    frames: int | None = None
    seed: int = 0
    settings: Mapping[str, Any] = field(default_factory=dict)
    fps: int | None = None
    width: int | None = None
    height: int | None = None
    fit: str = "crop"
    dtype: str | None = None
    device: str | None = None
    crf: int = 18
    compile: str = "none"
    save_every: int | None = None
    resume: bool = False
    overwrite: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        for key in PATH_FIELDS:
            value = getattr(self, key)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, key, Path(str(value)).expanduser())
        unknown = sorted(set(self.settings) - set(STREAM_FIELDS))
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown}; the settings are: {', '.join(STREAM_FIELDS)}")
        object.__setattr__(self, "settings", {k: _setting(k, v) for k, v in self.settings.items()})
        if self.frames is not None and self.seconds is not None:
            raise ConfigError(f"both frames={self.frames} and seconds={self.seconds} given; give one of them")
        if self.frames is not None and self.frames < 1:
            raise ConfigError(f"frames={self.frames}; must be >= 1")
        if self.seconds is not None and not self.seconds > 0:
            raise ConfigError(f"seconds={self.seconds}; must be > 0")
        if self.save_every is not None and self.save_every < 1:
            raise ConfigError(f"save_every={self.save_every}; must be >= 1 chunk (or unset: every "
                              f"{SAVE_INTERVAL_S:.0f} s)")
        if self.fit not in FIT_MODES:
            raise ConfigError(f"fit={self.fit!r}; allowed: {', '.join(FIT_MODES)}")
        if self.dtype is not None and self.dtype not in DTYPE_NAMES:
            raise ConfigError(f"dtype={self.dtype!r}; allowed: {', '.join(DTYPE_NAMES)}")
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f"compile={self.compile!r}; allowed: {', '.join(COMPILE_MODES)}")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"crf={self.crf}; must be in [0, 51] (0 lossless, 18 visually lossless)")
        if self.resume and self.overwrite:
            raise ConfigError("resume and overwrite both set; resume continues the file, overwrite replaces it")
        if (self.width is None) != (self.height is None):
            raise ConfigError(f"width={self.width}, height={self.height}; give both or neither")
        if not self.name:
            object.__setattr__(self, "name", self.out.name)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: str | Path | None = None) -> RenderJob:
        """A job from a JSON/TOML table: keys as the CLI flags (dashes or underscores); StreamConfig
        settings at the top level or under "settings"; relative paths resolved against base_dir."""
        own = {f.name for f in dataclasses.fields(cls)} - {"settings"}
        args: dict[str, Any] = {}
        settings = dict((data.get("settings") or {}).items())
        for key, value in data.items():
            name = key.replace("-", "_")
            if name == "settings":
                continue
            if name in own:
                args[name] = value
            elif name in STREAM_FIELDS:
                settings[name] = value
            else:
                raise ConfigError(f"unknown job key {key!r}; job keys: {', '.join(sorted(own))}; settings: "
                                  f"{', '.join(STREAM_FIELDS)}")
        for name in ("reference", "model", "vae", "out"):
            if args.get(name) in (None, ""):
                raise ConfigError(f"job {data.get('name') or data.get('out') or ''!r} has no {name!r}; "
                                  "every job needs reference, model, vae and out")
        if base_dir is not None:
            for name in PATH_FIELDS:
                if args.get(name) is not None:
                    args[name] = Path(base_dir) / Path(str(args[name])).expanduser()
        return cls(settings=settings, **args)

    def replace(self, **changes: Any) -> RenderJob:
        return dataclasses.replace(self, **changes)


def check_job(job: RenderJob) -> None:
    """Every missing input and unwritable output, named before anything is loaded."""
    needed = [("reference image", job.reference), ("model", job.model), ("VAE", job.vae), ("audio", job.audio),
              ("expression file", job.expression), ("text embedding", job.text)]
    for what, path in needed:
        if path is not None and not path.is_file():
            raise InputError(f"{what} {str(path)!r} does not exist (or is not a file); check the path")
        if path is not None:
            try:
                with open(path, "rb") as f:
                    f.read(1)
            except OSError as err:
                raise InputError(f"{what} {str(path)!r} cannot be read ({err.strerror}); check its permissions") \
                    from err
    for what, path in (("pose folder", job.pose), ("wav2vec2 model", job.wav2vec)):
        if path is not None and not path.exists():
            raise InputError(f"{what} {str(path)!r} does not exist; check the path")
    state = state_path(job.out)
    if job.resume:
        if not job.out.is_file() or not state.is_file():
            from .render_marker import describe_output

            raise InputError(f"nothing to resume: {describe_output(job.out, state).describe()}")
    elif job.out.exists() and not job.overwrite:
        hint = " or --resume to continue it" if state.is_file() else ""
        raise InputError(f"output {str(job.out)!r} already exists; choose another name, pass --overwrite to "
                         f"replace it{hint}")
    from .video_writer import _check_path  # the writer's own output checks (suffix, directory, writable)

    _check_path(job.out, overwrite=True)


def render(job: RenderJob, *, progress: bool = False, should_stop: Callable[[], bool] | None = None,
           on_chunk: Callable[[FrameChunk], None] | None = None) -> RenderResult:
    """Render one job to job.out (see the module docstring). Stopping via should_stop saves the resume state.
    The output is claimed for the whole job (output_lock): a second render of the same name is refused."""
    from .video_writer import _check_path  # suffix, directory, writable: before a lock file is made there

    _check_path(job.out, overwrite=True)
    with claim_output(job.out):
        return _render(job, progress=progress, should_stop=should_stop, on_chunk=on_chunk)


def _render(job: RenderJob, *, progress: bool, should_stop: Callable[[], bool] | None,
            on_chunk: Callable[[FrameChunk], None] | None) -> RenderResult:
    from .render_session import open_session

    check_job(job)
    started = time.perf_counter()
    session = open_session(job)
    state_file = state_path(job.out)
    if not job.resume:
        state_file.unlink(missing_ok=True)  # a state from an earlier render of this name no longer applies
    video, state, decoder = session.begin(state_file)
    done_before = video.frames_written
    bar = _progress_bar(progress, session.num_frames, done_before, job.name)
    saved_at, saved_time = [video.frames_written], [time.perf_counter()]

    def save() -> None:
        writer.flush()  # the state must describe exactly the frames in the file
        session.save(state_file, state, decoder, video.frames_written, video.segment_frames())
        saved_at[0], saved_time[0] = video.frames_written, time.perf_counter()

    def after_chunk(piece: FrameChunk) -> None:
        bar.update(piece.frames.shape[0])
        chunks_done = state.chunk_index - session.start_chunk
        due = (chunks_done % job.save_every == 0 if job.save_every
               else time.perf_counter() - saved_time[0] >= SAVE_INTERVAL_S)
        if due and writer.frames_submitted < session.num_frames:
            save()
        if on_chunk is not None:
            on_chunk(piece)

    try:
        with BackgroundWriter(video) as writer:
            pieces = frame_stream(session.model, session.cfg, session.inputs, state, decoder,
                                  num_frames=session.num_frames)
            chunks, interrupted = write_stream(pieces, writer, num_frames=session.num_frames,
                                               should_stop=should_stop, on_chunk=after_chunk)
            if interrupted and saved_at[0] != writer.frames_submitted:
                save()
        frames = video.frames_written
    finally:
        bar.close()
    if not interrupted:
        from .render_marker import mark_finished

        mark_finished(job.out, frames)  # before the state goes: a file is never both unmarked and stateless
        state_file.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    log.info("%s: %d frames (%d new) in %.1f s%s", job.out, frames, frames - done_before, seconds,
             " — interrupted, resume with --resume" if interrupted else "")
    return RenderResult(job.out, frames, chunks, seconds, interrupted)


def _progress_bar(enabled: bool, total: int, initial: int, name: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="frame", desc=name, disable=not enabled, dynamic_ncols=True,
                smoothing=0.1)


def fingerprint(job: RenderJob, cfg: StreamConfig, fps: int, size: tuple[int, int], dtype: str) -> dict[str, Any]:
    """What must not change between a render and its resume (file identities by name and size)."""
    def ident(path: Path | None) -> list | None:
        return None if path is None else [path.name, path.stat().st_size if path.is_file() else -1]

    return {"inputs": {k: ident(getattr(job, k)) for k in PATH_FIELDS if k != "out"},
            "stream_config": json.loads(json.dumps(dataclasses.asdict(cfg))), "seed": job.seed, "fps": fps,
            "size": list(size), "fit": job.fit, "dtype": dtype, "crf": job.crf}
