"""The shipped demo model: file and metadata, codec streaming, the `demo` command, and that it follows the driving."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from knot_core.checkpoints import load_dit
from knot_core.demo import (
    ADAPTER_TYPE,
    DEMO_CODEC,
    DEMO_DIT,
    DEMO_MODEL,
    DEMO_PORTRAIT_SEED,
    DEMO_SIZE,
    DEMO_SPEECH,
    INJECT_TYPE,
    InjectionConfig,
    MotionInjection,
    demo_frames,
    demo_latent_frames,
    demo_motion,
    load_codec,
    render_demo,
)
from knot_core.demo_codec import StreamingDecoder
from knot_core.errors import InputError
from knot_core.faces import DrivingFrame, Portrait, regions, render, render_video
from knot_core.motion import MotionSequence, SpeechMouth
from knot_core.pipeline import video_frames_for

ROOT = Path(__file__).resolve().parents[1]
# ground truth reaches r = 0.98, a codec round trip of it 0.74; the shipped model measured 0.55 (stages 1-2: -0.10)
MIN_MOUTH_CORRELATION = 0.45
# mouth held open vs closed: ground truth darkens the mouth box by 33.8 grey levels, the model 15.2 (stages 1-2: 1.2)
MIN_MOUTH_CHANGE = 10.0


def read_video(path: Path) -> tuple[np.ndarray, bool]:
    with av.open(str(path)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        has_audio = bool(c.streams.audio)
    return frames, has_audio


def test_shipped_model_loads_with_expected_metadata():
    assert DEMO_MODEL.stat().st_size + DEMO_CODEC.stat().st_size < 25 * 2**20
    model, info = load_dit(DEMO_MODEL, dtype="fp32")
    assert info.format == "knot" and info.config == DEMO_DIT and info.config.cond_layout == "noise_ref_mask"
    assert info.config.in_dim == 33
    assert [(a.name, a.type, a.attached) for a in info.adapters] == [("motion", ADAPTER_TYPE, True),
                                                                     ("inject", INJECT_TYPE, True)]
    assert model.driving["motion"].signal == "motion" and model.driving["inject"].signal == "motion"
    assert model.driving["inject"].cfg == InjectionConfig(tokens=16)
    s = info.sampler
    assert (s.stream.chunk_len, s.stream.knot_len, s.stream.window_len) == (3, 1, 6)
    assert s.stream.steps == (1000, 750, 500, 250) and s.stream.shift == 5.0 and s.stream.running_ahead
    assert s.fps == 25 and s.resolution == (DEMO_SIZE, DEMO_SIZE)
    # trained, not fresh: the zero-initialised adapter outputs have moved
    assert float(model.driving["motion"].layers[0].o.weight.abs().max()) > 1e-3


def test_injection_adds_a_per_token_vector_only_to_active_frames():
    torch.manual_seed(0)
    adapter = MotionInjection(InjectionConfig(dim=8, num_blocks=2, tokens=4))
    tokens = adapter.encode(torch.randn(1, 3, 4, 9))  # (1, 3 frames, 8)
    assert tokens.shape == (1, 3, 8)
    x = torch.zeros(1, 3 * 4, 8)
    out = adapter.before_block(1, x, tokens, torch.tensor([False, True, True])).view(1, 3, 4, 8)
    expected = adapter.projs[1](tokens).view(1, 3, 4, 8)
    assert torch.equal(out[:, 0], torch.zeros(1, 4, 8))  # the reference frame carries no driving
    assert torch.allclose(out[:, 1:], expected[:, 1:])
    assert not torch.allclose(out[0, 1, 0], out[0, 1, 1])  # position-aware: tokens of a frame get different vectors
    assert torch.equal(adapter.before_block(2, x, tokens, None), x)  # past num_blocks: untouched
    with pytest.raises(InputError, match="trained for 4 per frame"):
        adapter.before_block(0, torch.zeros(1, 3 * 16, 8), tokens, None)
    with pytest.raises(InputError, match="MotionSignal rows"):
        adapter.encode(torch.randn(1, 3, 9))


def test_codec_streaming_equals_one_shot_and_counts_frames():
    codec = load_codec()
    latent = torch.randn(1, 16, 7, 8, 8, generator=torch.Generator().manual_seed(0))
    one_shot = codec.decode(latent)
    assert one_shot.shape == (1, 3, 1 + 4 * 6, DEMO_SIZE, DEMO_SIZE)
    stream = StreamingDecoder(codec)
    parts = [stream.decode(latent[:, :, a:b]) for a, b in ((0, 3), (3, 4), (4, 7))]
    assert [p.shape[2] for p in parts] == [9, 4, 12]
    # same math; only the conv batch size differs, so equal up to float32 rounding
    assert torch.allclose(torch.cat(parts, 2), one_shot, atol=1e-5, rtol=0)


def test_length_rule():
    assert [demo_latent_frames(s) for s in (0.04, 1, 2, 6)] == [1, 7, 14, 39]
    with pytest.raises(InputError, match="positive"):
        demo_latent_frames(0)


def test_demo_command_writes_mp4_with_expected_frames_and_audio(tmp_path):
    out = tmp_path / "tmp.mp4"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "knot_core", "demo", "--seconds", "2", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    frames, has_audio = read_video(out)
    assert frames.shape == (1 + 4 * (14 - 1), DEMO_SIZE, DEMO_SIZE, 3)  # T = 14 latents for 2 s
    assert has_audio
    assert "53 frames" in run.stdout


def test_missing_audio_is_reported(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        render_demo(tmp_path / "x.mp4", 1, tmp_path / "missing.wav")


@pytest.mark.slow  # a long property run; CI runs it (.ci/run), `pytest -q` leaves it out
def test_long_render_keeps_the_identity_without_drift(tmp_path):
    report = render_demo(tmp_path / "long.mp4", 20.0, seed=0)
    video, _ = read_video(report.path)
    video = video.astype(np.float32)
    params = demo_motion(0, len(video), DEMO_SPEECH).frames(0, len(video))
    truth = render_video(Portrait.random(DEMO_PORTRAIT_SEED), params[-25:], DEMO_SIZE).astype(np.float32)
    other = render(Portrait.random(1), DrivingFrame(), DEMO_SIZE).astype(np.float32)
    last = video[-25:]  # the 20th second, 125 latent frames in: far past the 6-frame window
    assert float(np.abs(last - truth).mean()) < 20.0  # measured 14.3 (13.8 before stage 3; the codec alone loses ~8)
    assert float(np.abs(last - other).mean()) > 40.0  # measured 66.9: it is this portrait, not any face


def mouth_darkness(video: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Per frame 255 - mean of the mouth box (where faces.regions puts it for that frame's driving)."""
    portrait = Portrait.random(DEMO_PORTRAIT_SEED)
    out = []
    for img, row in zip(video, params, strict=True):
        x0, y0, x1, y1 = regions(portrait, DrivingFrame.from_vector(row), DEMO_SIZE).mouth
        out.append(255.0 - img[y0:y1, x0:x1].astype(np.float32).mean())  # an open mouth shows its dark inside
    return np.array(out)


def test_video_follows_the_driving_mouth(tmp_path):
    report = render_demo(tmp_path / "demo.mp4", 6.0, seed=0)
    video, _ = read_video(report.path)
    params = demo_motion(0, len(video), DEMO_SPEECH).frames(0, len(video))
    darkness = mouth_darkness(video, params)
    corr = float(np.corrcoef(darkness[1:], params[1:, 5])[0, 1])  # frame 0 is the reference itself
    assert corr > MIN_MOUTH_CORRELATION, f"mouth-region darkness vs driving mouth opening: r = {corr:.3f}"


def test_open_mouth_driving_opens_the_mouth():
    frames = video_frames_for(demo_latent_frames(2.0))
    darkness = {}
    for name, value in (("open", 1.0), ("closed", 0.0)):  # a still head, the mouth held open / closed
        motion = MotionSequence(0, frames + 16, amount=0.0, mouth=SpeechMouth(np.full(frames + 16, value)))
        video = demo_frames(motion, 2.0)
        darkness[name] = mouth_darkness(video, motion.frames(0, frames))[13:].mean()  # after the first 0.5 s
    change = darkness["open"] - darkness["closed"]
    assert change > MIN_MOUTH_CHANGE, f"mouth box darkens by {change:.1f} grey levels (ground truth 33.8)"
