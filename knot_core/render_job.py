"""One render job as data: every input file and setting of `knot-forcing render`, a batch line, or the API.

`RenderJob` names the files and settings (StreamConfig names, as the CLI flags and node widgets);
`check_job` names every missing input and unwritable output before anything is loaded; `fingerprint`
is what must not change between a render and its resume. Loading a job is render_session's; running it
render's (through render_path and file_sink, the path every front end shares).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compilation import COMPILE_MODES
from .config import DTYPE_NAMES, STREAM_FIELDS, StreamConfig, parse_steps
from .errors import ConfigError, InputError
from .file_sink import SAVE_INTERVAL_S, check_output
from .reference_crop import FRAMING_MODES
from .signals.base import END_POLICIES

PATH_FIELDS = ("reference", "model", "vae", "out", "audio", "pose", "expression", "text", "wav2vec")
INPUT_FIELDS = tuple(k for k in PATH_FIELDS if k != "out")


@dataclass(frozen=True)
class RenderJob:
    """Everything one render needs. Paths may be str; `settings` overrides the model's StreamConfig defaults.

    Length (render_plan.plan_length): `frames`, else `seconds`, else until the shortest driving input
    (audio, pose, expression) ends.
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
    fit: str = "crop"  # reference framing: reference_crop.FRAMING_MODES, as the Encode Reference node
    end_policy: str = "continue"  # of the driving files: 'continue' runs the last knot past their end
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
        object.__setattr__(self, "settings", {k: parse_steps(v) if k == "steps" else v
                                              for k, v in self.settings.items()})
        if self.frames is not None and self.seconds is not None:
            raise ConfigError(f"both frames={self.frames} and seconds={self.seconds} given; give one of them")
        if self.frames is not None and self.frames < 1:
            raise ConfigError(f"frames={self.frames}; must be >= 1")
        if self.seconds is not None and not self.seconds > 0:
            raise ConfigError(f"seconds={self.seconds}; must be > 0")
        if self.save_every is not None and self.save_every < 1:
            raise ConfigError(f"save_every={self.save_every}; must be >= 1 chunk (or unset: every "
                              f"{SAVE_INTERVAL_S:.0f} s)")
        if self.fit not in FRAMING_MODES:
            raise ConfigError(f"fit={self.fit!r}; allowed: {', '.join(FRAMING_MODES)}")
        if self.end_policy not in END_POLICIES:
            raise ConfigError(f"end_policy={self.end_policy!r}; allowed: {', '.join(END_POLICIES)}")
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
    check_output(job.out, [getattr(job, k) for k in INPUT_FIELDS], overwrite=job.overwrite, resume=job.resume)


def fingerprint(job: RenderJob, cfg: StreamConfig, fps: int, size: tuple[int, int], dtype: str) -> dict[str, Any]:
    """What must not change between a render and its resume (file identities by name and size)."""
    def ident(path: Path | None) -> list | None:
        return None if path is None else [path.name, path.stat().st_size if path.is_file() else -1]

    return {"inputs": {k: ident(getattr(job, k)) for k in PATH_FIELDS if k != "out"},
            "stream_config": json.loads(json.dumps(dataclasses.asdict(cfg))), "seed": job.seed, "fps": fps,
            "size": list(size), "fit": job.fit, "end_policy": job.end_policy, "dtype": dtype, "crf": job.crf}
