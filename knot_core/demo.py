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
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from .adapters.cross_attention import CrossAttentionAdapter, CrossAttentionConfig
from .config import DiTConfig, StreamConfig
from .demo_codec import CodecConfig, DemoCodec, StreamingDecoder
from .dit import KnotDiT
from .errors import CheckpointError, InputError
from .faces import NUM_PARAMS, DrivingFrame, Portrait, render
from .model_file import ADAPTER_REGISTRY, AdapterSpec, SamplerDefaults, register_adapter
from .motion import FPS, MotionSequence, MotionSignal, SpeechMouth, decode_audio
from .pipeline import latent_frames_for, video_frames_for
from .video_writer import VideoWriter, frames_from_decoder

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEMO_MODEL = MODELS_DIR / "demo.safetensors"
DEMO_CODEC = MODELS_DIR / "demo_codec.safetensors"
DEMO_SPEECH = MODELS_DIR / "demo_speech.wav"
DEMO_SIZE = 96  # pixels; latent 12x12, 36 tokens per latent frame (patch 2x2)
DEMO_PORTRAIT_SEED = 2026
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
    """The frame cross-attention adapter, saved under a registered type so our model file rebuilds it."""

    adapter_type = ADAPTER_TYPE


def _adapter_config(data, dit: DiTConfig) -> CrossAttentionConfig:
    return CrossAttentionConfig(**{**data, "blocks": tuple(data["blocks"])})


def _config_from_shapes(shapes, dit: DiTConfig) -> dict:
    raise CheckpointError("a motion cross-attention adapter is only read from our model file (with its config)")


def _config_of(module: MotionAdapter) -> dict:
    cfg = module.cfg
    return {"signal": cfg.signal, "feature_dim": cfg.feature_dim, "dim": cfg.dim, "num_heads": cfg.num_heads,
            "blocks": list(cfg.blocks), "neighbourhood": cfg.neighbourhood, "eps": cfg.eps}


if ADAPTER_TYPE not in ADAPTER_REGISTRY:
    register_adapter(AdapterSpec(ADAPTER_TYPE, lambda data, dit: MotionAdapter(_adapter_config(data, dit)),
                                 _config_from_shapes, _config_of))


def build_demo_model(seed: int = 0) -> KnotDiT:
    """A freshly initialised demo DiT with its motion cross-attention adapter (what train/train_demo.py trains)."""
    torch.manual_seed(seed)
    model = KnotDiT(DEMO_DIT)
    model.add_adapter("motion", MotionAdapter(DEMO_ADAPTER))
    return model


def load_codec(path: str | Path = DEMO_CODEC) -> DemoCodec:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"demo codec weights {path} are missing; reinstall the package or run "
                              "train/train_demo.py to make them")
    state = load_file(str(path))
    codec = DemoCodec(CodecConfig(width=int(state["decoder.0.weight"].shape[0])))
    codec.load_state_dict(state, strict=True)
    return codec.eval().requires_grad_(False)


def load_demo(model_path: str | Path = DEMO_MODEL, codec_path: str | Path = DEMO_CODEC):
    """(model, info, codec) of the shipped demo, in float32 on the CPU."""
    from .checkpoints import load_dit

    model, info = load_dit(model_path, dtype=torch.float32)
    return model, info, load_codec(codec_path)


def demo_reference(codec: DemoCodec, seed: int = DEMO_PORTRAIT_SEED) -> tuple[Portrait, torch.Tensor]:
    """The portrait and its normalised latent (1, 16, 1, h, w) at the neutral pose."""
    portrait = Portrait.random(seed)
    image = torch.from_numpy(render(portrait, DrivingFrame(), DEMO_SIZE)).float() / 127.5 - 1  # (H, W, 3)
    with torch.no_grad():
        latent = codec.encode(image.permute(2, 0, 1)[None, :, None])  # (1, 16, 1, h, w)
    return portrait, latent


def demo_latent_frames(seconds: float, fps: int = FPS) -> int:
    """Latent frames T for a clip of at least `seconds`: the pipeline's rule for ceil(fps*seconds) frames."""
    if not seconds > 0:
        raise InputError(f"seconds={seconds}; give a positive duration")
    return latent_frames_for(math.ceil(fps * seconds))


def demo_motion(seed: int, frames: int, audio: str | Path) -> MotionSequence:
    """The demo's driving: seeded head motion (80% amplitude), blinks, brows; mouth from the audio's loudness."""
    return MotionSequence(seed, frames + 16, amount=0.8, mouth=SpeechMouth.from_file(audio))


@dataclass(frozen=True)
class DemoReport:
    path: Path
    frames: int
    latent_frames: int
    wall_s: float

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s

    @property
    def realtime_factor(self) -> float:
        return self.fps / FPS


@contextmanager
def torch_threads(n: int | None):
    """Run with n intra-op threads, then restore. The demo's matrices are tiny (128 wide): one thread avoids
    the OpenMP hand-offs that cost 10x more than the math when the cores are shared (measured 2.3 vs 32 ms
    per 512x128x384 linear on the 2-core CI machine under load)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def render_demo(out: str | Path, seconds: float = 6.0, audio: str | Path | None = None, *, seed: int = 0,
                portrait_seed: int = DEMO_PORTRAIT_SEED, overwrite: bool = True,
                models: str | Path = MODELS_DIR, threads: int | None = 1) -> DemoReport:
    """Render the animated demo portrait to an MP4, chunk by chunk (each chunk is written as it is made).

    Head motion, blinks and brows from a seeded MotionSequence; the mouth from the loudness of `audio`
    (default: the bundled speech clip), which is muxed into the MP4. `models` holds demo.safetensors and
    demo_codec.safetensors. Length rule: T = demo_latent_frames(seconds) latents, 1 + 4(T-1) video frames.
    """
    with torch_threads(threads):
        return _render(Path(out), seconds, audio, seed, portrait_seed, overwrite, Path(models))


def _render(out: Path, seconds: float, audio: str | Path | None, seed: int, portrait_seed: int, overwrite: bool,
            models: Path) -> DemoReport:
    """The body of render_demo, run with the thread setting in place."""
    audio = Path(audio) if audio is not None else DEMO_SPEECH
    if not audio.is_file():
        raise InputError(f"audio file {str(audio)!r} does not exist; give a speech file or leave --audio out "
                         "to use the bundled clip")
    samples, rate = decode_audio(audio)
    demo = load_demo(models / DEMO_MODEL.name, models / DEMO_CODEC.name)
    total = demo_latent_frames(seconds)
    motion = demo_motion(seed, video_frames_for(total), audio)
    started = time.perf_counter()
    with VideoWriter(out, FPS, audio=samples[None], sample_rate=rate, overwrite=overwrite) as writer:
        for frames in _stream_frames(demo, motion, total, seed, portrait_seed):
            writer.write(frames)
    wall = time.perf_counter() - started
    return DemoReport(out, writer.frames_written, total, wall)


def _stream_frames(demo, motion: MotionSequence, total: int, seed: int, portrait_seed: int):
    """Video frames (n, H, W, 3) uint8 of each chunk, as the engine's stream makes them, for `total` latents."""
    from .engine.stream import StreamInputs, generate, start_stream

    model, info, codec = demo
    _, reference = demo_reference(codec, portrait_seed)
    inputs = StreamInputs(latent_size=tuple(reference.shape[3:]), reference=reference, signals=(MotionSignal(motion),))
    cfg = info.stream_config()
    state = start_stream(model, cfg, inputs, seed=seed)
    decoder, done = StreamingDecoder(codec), 0
    for chunk in generate(model, cfg, inputs, state):
        latents = chunk.latents[:, :, : total - done]  # (1, 16, <=c, h, w)
        yield frames_from_decoder(decoder.decode(latents)).numpy()
        done += latents.shape[2]
        if done >= total:
            return


def demo_frames(motion: MotionSequence, seconds: float, *, seed: int = 0, portrait_seed: int = DEMO_PORTRAIT_SEED,
                models: str | Path = MODELS_DIR, threads: int | None = 1) -> np.ndarray:
    """The demo's video (T, H, W, 3) uint8 for any driving `motion` (no file written): for measurements."""
    models = Path(models)
    with torch_threads(threads):
        demo = load_demo(models / DEMO_MODEL.name, models / DEMO_CODEC.name)
        return np.concatenate(list(_stream_frames(demo, motion, demo_latent_frames(seconds), seed, portrait_seed)))


def mouth_series(video: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Mean absolute difference of each frame's box from frame 0's: (T,) — a measure of mouth motion."""
    x0, y0, x1, y1 = box
    crop = video[:, y0:y1, x0:x1].astype(np.float32)
    return np.abs(crop - crop[:1]).mean(axis=(1, 2, 3))
