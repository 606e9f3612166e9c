"""One render job as data: every input file and setting of `knot-forcing render`, a batch line, or the API.

`RenderJob` names the files and settings (StreamConfig names, as the CLI flags and node widgets);
`check_job` names every missing input and unwritable output before anything is loaded; `fingerprint`
is what must not change between a render and its resume. Loading a job is render_session's; running it
render's (through render_path and file_sink, the path every front end shares).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compilation import COMPILE_MODES
from .config import DTYPE_NAMES, STREAM_FIELDS, StreamConfig, check_settings
from .errors import ConfigError, InputError
from .file_sink import check_output
from .reference_crop import FRAMING_MODES
from .render_path import check_seed
from .signals.base import END_POLICIES

PATH_FIELDS = ("reference", "model", "vae", "out", "audio", "pose", "expression", "text", "wav2vec")
MAX_FPS = 240  # the MP4 writer's limit
MAX_FRAMES = 10**9  # a length check, not a limit anyone meets: about 1.3 years of video at 25 fps


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def whole(name: str, value: object, lo: int, hi: int | None, *, multiple: int = 1) -> None:
    """A whole-number job field (None = unset) within [lo, hi], a multiple of `multiple`."""
    if value is None:
        return
    ok = _number(value) and float(value).is_integer() and lo <= value <= (hi if hi is not None else math.inf)
    if not ok or int(value) % multiple:
        span = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        extra = f", a multiple of {multiple}" if multiple > 1 else ""
        raise ConfigError(f"{name}={value!r}; give a whole number in {span}{extra}")


def check_device(device: str | None) -> None:
    """A device torch knows and this machine has (cpu, cuda, cuda:N, mps), before anything loads."""
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"device={device!r} is not a device; give cpu, cuda or cuda:N") from err
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (parsed.index or 0) >= count:
            have = f"it has {count} CUDA device(s)" if count else "it has no CUDA GPU (or no CUDA build of torch)"
            raise ConfigError(f"device={device!r}, but {have}; use --device cpu" +
                              (f" or cuda:0..cuda:{count - 1}" if count else ""))
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={device!r}, but MPS is not available here; use --device cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={device!r}; give cpu, cuda or cuda:N")
INPUT_FIELDS = tuple(k for k in PATH_FIELDS if k != "out")


@dataclass(frozen=True)
class RenderJob:
    """Everything one render needs. Paths may be str; `settings` overrides the model's StreamConfig defaults.

    Length (render_plan.plan_length): `frames`, else `seconds`, else until the shortest driving input
    (audio, pose, expression) ends.
    dtype/device default to bf16 on CUDA, else fp32 on the CPU. compile: a torch.compile mode
    for the DiT blocks (COMPILE_MODES; "none" by default). loop: a public model's loop for files
    several models share (`model_loops.LOOPS`). fps, width and height default to the
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
    fit: str = "crop"  # reference framing: reference_crop.FRAMING_MODES, as the Encode Reference node
    end_policy: str = "continue"  # of the driving files: 'continue' runs the last knot past their end
    expression_fps: float | None = None  # rate of a plain expression CSV's rows (Live Link Face / JSON: the file's)
    dtype: str | None = None
    device: str | None = None
    crf: int = 18
    compile: str = "none"
    loop: str | None = None
    save_every: int | None = None
    resume: bool = False
    overwrite: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        for key in PATH_FIELDS:
            value = getattr(self, key)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, key, Path(str(value)).expanduser())
        if not isinstance(self.settings, Mapping):
            raise ConfigError(f"settings={self.settings!r}; give a table of StreamConfig settings")
        object.__setattr__(self, "settings", check_settings(self.settings))
        if self.frames is not None and self.seconds is not None:
            raise ConfigError(f"both frames={self.frames} and seconds={self.seconds} given; give one of them")
        whole("frames", self.frames, 1, MAX_FRAMES)
        if self.seconds is not None and not (_number(self.seconds) and math.isfinite(self.seconds)
                                             and 0 < self.seconds <= MAX_FRAMES):
            raise ConfigError(f"seconds={self.seconds!r}; give a finite number of seconds > 0")
        check_seed(self.seed)
        whole("fps", self.fps, 1, MAX_FPS)
        whole("width", self.width, 16, 8192, multiple=16)
        whole("height", self.height, 16, 8192, multiple=16)
        whole("crf", self.crf, 0, 51)
        whole("save_every", self.save_every, 1, None)
        check_device(self.device)
        if self.expression_fps is not None and not (_number(self.expression_fps)
                                                    and math.isfinite(self.expression_fps)
                                                    and 0 < self.expression_fps <= 1000):
            raise ConfigError(f"expression_fps={self.expression_fps!r}; give the rows' rate in frames per second "
                              "(e.g. 60)")
        if self.fit not in FRAMING_MODES:
            raise ConfigError(f"fit={self.fit!r}; allowed: {', '.join(FRAMING_MODES)}")
        if self.end_policy not in END_POLICIES:
            raise ConfigError(f"end_policy={self.end_policy!r}; allowed: {', '.join(END_POLICIES)}")
        if self.dtype is not None and self.dtype not in DTYPE_NAMES:
            raise ConfigError(f"dtype={self.dtype!r}; allowed: {', '.join(DTYPE_NAMES)}")
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f"compile={self.compile!r}; allowed: {', '.join(COMPILE_MODES)}")
        if self.resume and self.overwrite:
            raise ConfigError("resume and overwrite both set; resume continues the file, overwrite replaces it")
        if not isinstance(self.resume, bool) or not isinstance(self.overwrite, bool):
            raise ConfigError(f"resume={self.resume!r}, overwrite={self.overwrite!r}; give true or false")
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
        table = data.get("settings") or {}
        if not isinstance(table, Mapping):
            raise ConfigError(f"settings={table!r}; give a table of StreamConfig settings, e.g. {{\"chunk_len\": 3}}")
        settings = dict(table.items())
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
    check_output(job.out, [getattr(job, k) for k in INPUT_FIELDS], overwrite=job.overwrite, resume=job.resume)


def fingerprint(job: RenderJob, cfg: StreamConfig, fps: int, size: tuple[int, int], dtype: str) -> dict[str, Any]:
    """What must not change between a render and its resume (file identities by name and size)."""
    def ident(path: Path | None) -> list | None:
        return None if path is None else [path.name, path.stat().st_size if path.is_file() else -1]

    return {"inputs": {k: ident(getattr(job, k)) for k in PATH_FIELDS if k != "out"},
            "stream_config": json.loads(json.dumps(dataclasses.asdict(cfg))), "seed": job.seed, "fps": fps,
            "size": list(size), "fit": job.fit, "end_policy": job.end_policy, "expression_fps": job.expression_fps,
            "dtype": dtype, "crf": job.crf}
