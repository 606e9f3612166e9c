"""The demo model: a small Knot Forcing portrait animator that ships with the package, and `render_demo`.

A 4-layer KnotDiT (the engine's own blocks, caches, knot and running-ahead loop) conditioned as the paper
(FIELD_NOTES §1): Wan I2V channels (cond_layout "noise_mask_latent": [noisy 16 | mask 4 | known latent 16]) that
hold only the knot at a chunk's first k positions (the reference only in the anchor frame's own pass: no
reference start frame), identity only through the anchor K/V at the running-ahead index, and the driving only
through frame-aligned cross-attention adapters (knot_core.adapters.cross_attention) fed a
per-frame parameter vector (knot_core.motion.MotionSignal, "motion": head yaw/pitch/roll/translation,
mouth, blink, brows). Latents come from the small learned codec in knot_core.demo_codec (16 channels,
stride (4, 8, 8), the Wan2.1 VAE's contract). Trained on procedural portraits (knot_core.faces) by
train/train_demo.py; weights in knot_core/models/ (demo.safetensors in our model format, demo_codec.safetensors).
Not weight-compatible with any released model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from .adapters.cross_attention import CrossAttentionAdapter, CrossAttentionConfig
from .config import FRAMES_PER_LATENT, DiTConfig, StreamConfig, latent_frames_for, video_frames_for
from .demo_codec import CodecConfig, DemoCodec
from .dit import KnotDiT
from .errors import CheckpointError, InputError
from .faces import NUM_PARAMS, DrivingFrame, Portrait, render
from .model_file import ADAPTER_REGISTRY, AdapterSpec, SamplerDefaults, register_adapter
from .motion import FPS, MotionSequence, MotionSignal, loudness_envelope
from .render_path import check_seed, torch_threads

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEMO_MODEL = MODELS_DIR / "demo.safetensors"
DEMO_CODEC = MODELS_DIR / "demo_codec.safetensors"
DEMO_SPEECH = MODELS_DIR / "demo_speech.wav"
DEMO_SIZE = 96  # pixels, the shipped model's (its file records it); latent 12x12, 36 tokens per frame (patch 2x2)
MIN_DEMO_SIZE = 64  # a face of fewer pixels loses its features; train_codec's 48-pixel crops need room
DEMO_PORTRAIT_SEED = 2026
DEMO_MOTION_AMOUNT = 0.8  # head motion amplitude of the demo's renders (the training range is 0..1)
PORTRAIT_SEED_MAX = 2**31 - 1  # numpy seeds the procedural portrait
ADAPTER_TYPE = "motion_cross_attention"

DEMO_DIT = DiTConfig(dim=128, ffn_dim=384, num_heads=4, num_layers=4, freq_dim=64, text_dim=16, text_len=1,
                     cond_layout="noise_mask_latent")
DEMO_ADAPTER = CrossAttentionConfig(signal="motion", feature_dim=NUM_PARAMS, dim=DEMO_DIT.dim,
                                    num_heads=DEMO_DIT.num_heads, blocks=(0, 1, 2, 3), neighbourhood=0)
# no reference start frame: the known latent holds only the knot, the reference reaches the stream only as the anchor
DEMO_STREAM = StreamConfig(chunk_len=3, knot_len=1, window_len=6, steps=(1000, 750, 500, 250), shift=5.0,
                           ahead_init=8, ahead_step=4, start_from_reference=False)
DEMO_SAMPLER = SamplerDefaults(DEMO_STREAM, fps=FPS, resolution=(DEMO_SIZE, DEMO_SIZE))


class MotionAdapter(CrossAttentionAdapter):
    """The frame cross-attention adapter, saved under a registered type so our model file rebuilds it.

    With `row_positions`, each of a latent frame's 4 driving rows (its 4 video frames) gets a learned embedding
    added to its token: attention alone is blind to the rows' order, and a latent holds its 4 frames in order (a
    blink is over in 5 frames, so which of them are closed matters). Files written before it load without."""

    adapter_type = ADAPTER_TYPE

    def __init__(self, cfg: CrossAttentionConfig, row_positions: bool = True):
        super().__init__(cfg)
        self.row_pos = nn.Parameter(torch.zeros(FRAMES_PER_LATENT, cfg.dim)) if row_positions else None

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        tokens = super().encode(features)  # (B, F, rows, dim)
        if self.row_pos is None:
            return tokens
        return tokens + self.row_pos[:tokens.shape[2]].to(tokens.dtype)


def _adapter_config(data, dit: DiTConfig) -> CrossAttentionConfig:
    return CrossAttentionConfig(**{**{k: v for k, v in data.items() if k != "row_positions"},
                                   "blocks": tuple(data["blocks"])})


def _config_from_shapes(shapes, dit: DiTConfig) -> dict:
    raise CheckpointError("a motion cross-attention adapter is only read from our model file (with its config)")


def _config_of(module: MotionAdapter) -> dict:
    cfg = module.cfg
    return {"signal": cfg.signal, "feature_dim": cfg.feature_dim, "dim": cfg.dim, "num_heads": cfg.num_heads,
            "blocks": list(cfg.blocks), "neighbourhood": cfg.neighbourhood, "eps": cfg.eps,
            "row_positions": module.row_pos is not None}


if ADAPTER_TYPE not in ADAPTER_REGISTRY:
    register_adapter(AdapterSpec(ADAPTER_TYPE, lambda data, dit: MotionAdapter(
        _adapter_config(data, dit), row_positions=bool(data.get("row_positions", False))),
                                 _config_from_shapes, _config_of))


DEMO_HEAD_DIM = DEMO_DIT.dim // DEMO_DIT.num_heads  # 32; a wider demo DiT keeps it and adds heads


def demo_width_problem(width: int, layers: int) -> str | None:
    """Why a demo DiT of this width and depth cannot be built (one line), or None."""
    if width < DEMO_HEAD_DIM or width % DEMO_HEAD_DIM:
        return f"--width {width}: must be a positive multiple of {DEMO_HEAD_DIM} (the heads' size); e.g. 128 or 256"
    if layers < 1:
        return f"--layers {layers}: must be at least 1; e.g. 4"
    return None


def build_demo_model(seed: int = 0, width: int = DEMO_DIT.dim, layers: int = DEMO_DIT.num_layers) -> KnotDiT:
    """A freshly initialised demo DiT with its motion cross-attention adapter (what train/train_demo.py trains).

    `width` and `layers` scale it (the shipped model: 128 and 4) with the shipped proportions: heads of 32
    channels, feed-forward 3x the width, a driving adapter after every block. The model file records them,
    so a wider model loads and streams like the shipped one."""
    if (problem := demo_width_problem(width, layers)) is not None:
        raise ValueError(problem)
    dit = replace(DEMO_DIT, dim=width, ffn_dim=3 * width, num_heads=width // DEMO_HEAD_DIM, num_layers=layers)
    adapter = replace(DEMO_ADAPTER, dim=width, num_heads=dit.num_heads, blocks=tuple(range(layers)))
    torch.manual_seed(seed)
    model = KnotDiT(dit)
    model.add_adapter("motion", MotionAdapter(adapter))
    return model


def load_codec(path: str | Path = DEMO_CODEC) -> DemoCodec:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"demo codec weights {path} are missing; reinstall the package or run "
                              "train/train_demo.py to make them")
    state = load_file(str(path))
    codec = DemoCodec(CodecConfig.of_state(state))
    codec.load_state_dict(state, strict=True)
    return codec.eval().requires_grad_(False)


def demo_files(models: Path = MODELS_DIR) -> tuple[Path, Path]:
    """(model file, codec file) of a demo models folder (the bundled one, or a train/recipe.sh run's), checked to
    exist: a folder missing either is one line naming it."""
    files = (models / DEMO_MODEL.name, models / DEMO_CODEC.name)
    for path in files:
        if not path.is_file():
            raise InputError(f"models folder {str(models)!r} has no {path.name}; give a folder holding "
                             f"{DEMO_MODEL.name} and {DEMO_CODEC.name} (as train/recipe.sh writes them), or leave "
                             "--models out for the bundled ones")
    return files


def load_demo(models: str | Path = MODELS_DIR):
    """(model, info, codec) of a demo models folder (default: the shipped one), in float32 on the CPU."""
    from .checkpoints import load_dit

    model_path, codec_path = demo_files(Path(models))
    model, info = load_dit(model_path, dtype=torch.float32)
    return model, info, load_codec(codec_path)


def demo_size_problem(size: int) -> str | None:
    """The one-line complaint about a demo frame side `size` (pixels), or None. Square frames, sides on
    multiples of 16 (the codec's 8x stride, then the DiT's 2x2 patches)."""
    if size >= MIN_DEMO_SIZE and size % 16 == 0:
        return None
    return f"--size {size}: give a multiple of 16 of at least {MIN_DEMO_SIZE} pixels (the shipped model: {DEMO_SIZE})"


def demo_size(info) -> int:
    """The frame side a demo model was trained at, as its file records it (resolution (size, size))."""
    h, w = info.sampler.resolution
    if h != w or demo_size_problem(h) is not None:
        raise CheckpointError(f"{info.path}: resolution {h}x{w} is not a demo model's (square, sides on multiples of "
                              f"16, at least {MIN_DEMO_SIZE}); make it with train/train_demo.py --size")
    return h


def demo_reference(codec: DemoCodec, seed: int = DEMO_PORTRAIT_SEED,
                   size: int = DEMO_SIZE) -> tuple[Portrait, torch.Tensor]:
    """The portrait and its normalised latent (1, 16, 1, size/8, size/8) at the neutral pose."""
    portrait = Portrait.random(seed)
    image = torch.from_numpy(render(portrait, DrivingFrame(), size)).float() / 127.5 - 1  # (H, W, 3)
    with torch.no_grad():
        latent = codec.encode(image.permute(2, 0, 1)[None, :, None])  # (1, 16, 1, h, w)
    return portrait, latent


def demo_latent_frames(seconds: float, fps: int = FPS) -> int:
    """Latent frames T for a clip of at least `seconds`: the pipeline's rule for ceil(fps*seconds) frames."""
    if not seconds > 0:
        raise InputError(f"seconds={seconds}; give a positive duration")
    return latent_frames_for(math.ceil(fps * seconds))


def demo_motion(seed: int, audio: str | Path) -> MotionSequence:
    """The rows a demo render is driven by (seeded head motion, blinks, brows; the mouth from the audio's
    loudness, closed after it), to measure the render against: the sequence of its `MotionSignal.speaking`."""
    return MotionSignal.speaking(seed, loudness_envelope(audio, FPS), DEMO_MOTION_AMOUNT).sequence


def check_portrait_seed(seed: object) -> int:
    """The procedural identity's seed (every front end of the demo: render, frames, live)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= PORTRAIT_SEED_MAX:
        raise InputError(f"portrait_seed={seed!r}; give a whole number in [0, {PORTRAIT_SEED_MAX}]")
    return seed


@dataclass(frozen=True)
class DemoJob:
    """A render with the built-in model: the procedural portrait `portrait_seed`, driven by seeded head motion
    (`seed`, which also seeds the sampler noise) and a mouth that follows `audio`'s loudness (default: the
    bundled speech clip, muxed into the MP4). Settings, resume, overwrite, crf and save_every are RenderJob's.

    Length: `frames`, else the demo's rule for `seconds`: T = demo_latent_frames(seconds) latents, 1 + 4(T-1)
    video frames (whole latent frames, so the clip ends on a decoded latent's last frame).
    """

    out: Path
    seconds: float = 6.0
    frames: int | None = None
    audio: Path | None = None
    seed: int = 0
    portrait_seed: int = DEMO_PORTRAIT_SEED
    settings: Mapping[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    resume: bool = False
    crf: int = 18
    save_every: int | None = None
    models: Path = MODELS_DIR
    threads: int | None = 1

    def __post_init__(self) -> None:
        for key in ("out", "audio", "models"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, key, Path(str(value)).expanduser())
        if self.frames is None and not (isinstance(self.seconds, (int, float)) and math.isfinite(self.seconds)
                                        and self.seconds > 0):
            raise InputError(f"seconds={self.seconds}; give a positive, finite duration (e.g. 6)")
        if self.frames is not None and self.frames < 1:
            raise InputError(f"frames={self.frames}; must be >= 1")
        check_seed(self.seed)
        check_portrait_seed(self.portrait_seed)
        if self.resume and self.overwrite:
            raise InputError("resume and overwrite both set; resume continues the file, overwrite replaces it")
        if self.save_every is not None and self.save_every < 1:
            raise InputError(f"save_every={self.save_every}; must be >= 1 chunk")
        if not 0 <= self.crf <= 51:
            raise InputError(f"crf={self.crf}; must be in [0, 51] (0 lossless, 18 visually lossless)")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads={self.threads}; give a positive number of CPU threads")

    @property
    def audio_file(self) -> Path:
        return self.audio if self.audio is not None else DEMO_SPEECH

    @property
    def num_frames(self) -> int:
        return self.frames if self.frames is not None else video_frames_for(demo_latent_frames(self.seconds))


@dataclass(frozen=True)
class DemoReport:
    path: Path
    frames: int
    latent_frames: int
    wall_s: float
    interrupted: bool = False

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s

    @property
    def realtime_factor(self) -> float:
        return self.fps / FPS


def load_demo_job(job: DemoJob, *, progress: bool = False):
    """The demo's half of the render path: built-in model, portrait and motion -> (RenderPlan, FileOutput)."""
    from .audio import audio_for_mux, load_audio
    from .engine.stream import StreamInputs
    from .file_sink import FileOutput, check_output
    from .render_path import prepare
    from .render_plan import Length

    check_output(job.out, [job.audio_file, *demo_files(job.models)], overwrite=job.overwrite, resume=job.resume)
    if not job.audio_file.is_file():
        raise InputError(f"audio file {str(job.audio_file)!r} does not exist; give a speech file or leave --audio "
                         "out to use the bundled clip")
    audio = audio_for_mux(*load_audio(job.audio_file))
    model, info, codec = load_demo(job.models)
    cfg = info.stream_config().with_settings(job.settings)
    _, reference = demo_reference(codec, job.portrait_seed, demo_size(info))  # (1, 16, 1, h, w)
    # unbounded: as far as any loop asks (a rolling window reaches past the last frame), the mouth closed after
    # the speech; the ComfyUI Motion Signal node builds the same signal
    motion = MotionSignal.speaking(job.seed, loudness_envelope(job.audio_file, FPS), DEMO_MOTION_AMOUNT)
    inputs = StreamInputs(latent_size=tuple(reference.shape[3:]), reference=reference, signals=(motion,))
    plan = prepare(model, codec, cfg, inputs, fps=FPS, length=Length(job.num_frames, "frames"), seed=job.seed,
                   audio=audio)
    identity = {"demo": [DEMO_MODEL.name, (job.models / DEMO_MODEL.name).stat().st_size], "seed": job.seed,
                "portrait_seed": job.portrait_seed, "audio": [job.audio_file.name, job.audio_file.stat().st_size],
                "frames": job.num_frames, "stream_config": asdict(cfg), "crf": job.crf}
    output = FileOutput(job.out, overwrite=job.overwrite, resume=job.resume, crf=job.crf, save_every=job.save_every,
                        fingerprint=identity, name=job.out.name, progress=progress)
    return plan, output


def render_demo(out: str | Path, seconds: float = 6.0, audio: str | Path | None = None, *,
                should_stop: Callable[[], bool] | None = None, progress: bool = False,
                **options: Any) -> DemoReport:
    """Render the animated demo portrait to an MP4 through the render path every front end uses (chunk by
    chunk, encoded in the background, resumable: `resume=True`); options are DemoJob's fields."""
    from .file_sink import write_file

    job = DemoJob(Path(out), seconds, audio=None if audio is None else Path(audio), **options)
    with torch_threads(job.threads):
        plan, output = load_demo_job(job, progress=progress)
        result = write_file(plan, output, should_stop=should_stop)
    return DemoReport(result.path, result.frames, latent_frames_for(result.frames), result.seconds,
                      result.interrupted)


def demo_frames(motion: MotionSequence, seconds: float, *, seed: int = 0, portrait_seed: int = DEMO_PORTRAIT_SEED,
                models: str | Path = MODELS_DIR, threads: int | None = 1) -> np.ndarray:
    """The demo's video (T, H, W, 3) uint8 for any driving `motion` (no file written): for measurements."""
    from .engine.stream import StreamInputs
    from .render_path import frames, prepare
    from .render_plan import Length

    models = Path(models)
    with torch_threads(threads):
        model, info, codec = load_demo(models)
        _, reference = demo_reference(codec, portrait_seed, demo_size(info))
        inputs = StreamInputs(latent_size=tuple(reference.shape[3:]), reference=reference,
                              signals=(MotionSignal(motion),))
        length = Length(video_frames_for(demo_latent_frames(seconds)), "frames")
        plan = prepare(model, codec, info.stream_config(), inputs, fps=FPS, length=length, seed=seed)
        return np.concatenate([piece.frames.numpy() for piece in frames(plan)])
