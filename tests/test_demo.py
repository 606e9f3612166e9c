"""The shipped demo model: file and metadata, codec streaming, the `demo` command, and that it follows the driving."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
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
    demo_latent_frames,
    demo_motion,
    load_codec,
    render_demo,
)
from knot_core.demo_codec import StreamingDecoder
from knot_core.demo_quality import RenderQuality, mouth_change, render_quality
from knot_core.errors import InputError
from knot_core.faces import Portrait, render_video
from knot_core.motion import MotionSequence
from knot_core.quality_metrics import PSNR_CAP, psnr

ROOT = Path(__file__).resolve().parents[1]
# Thresholds on the shipped weights, from the decoded MP4 of a 20 s render (measured on the 2-core CPU;
# ground truth in brackets; "before": the phase-11 weights, which fail the identity, sharpness and background bars;
# the phase-8 and phase-7 weights fail the mouth-change bar too; the phase-6 weights with the untuned decoder fail
# the blink, identity, PSNR, background and mouth-change bars).
MIN_MOUTH_R = 0.85  # measured 0.946 [0.99]; before: 0.953; before phases 5-6: 0.74
MAX_BLINK_R = -0.55  # eye-box darkness vs blink (closed eyes hide the dark pupils): -0.65 [-0.93]; before: -0.69
MIN_HEAD_R = 0.85  # head x: measured 0.92 [0.81; the skin centroid is a rough measure]; before: 0.94
MAX_IDENTITY = 0.72  # colour-histogram distance to the reference in the 20th second: 0.68 [0.10; another face 1.76];
# before: 0.76
# mean |Laplacian| of the last 100 frames over the ground truth's: 0.644 [codec round trip 0.76]; before: 0.607 (phase
# 6 with the untuned decoder 0.61, but part of that was the blobs it drew: edges too, hence the PSNR bars beside it)
MIN_SHARPNESS = 0.62
MIN_PSNR = 23.3  # last 100 frames vs the ground truth: 23.91 dB; before: 23.81 (phase 6, untuned decoder: 22.26)
MIN_BACKGROUND_PSNR = 38.0  # its PSNR in the same frames: 39.47 dB; before: 36.45 (phase 6, untuned decoder: 32.96;
# it moves with the training seed: phase 8 gave 37.40 with seed 9, 35.52 with seed 10; phase 12s's clips without idle
# motion, like this render's, are what lifted it: the same steps on clips all with idle motion gave 35.26)
MIN_MOUTH_CHANGE = 40.0  # held open vs closed, mouth-box darkening: 44.5 grey levels [33.8]; before: 47.3
# the bar; the shipped codec measures 30.46 dB here (30.3 on the held-out clips of train_codec.py seed 2,
# 29.68 dB averaged over 64 other held-out clips: README); the decoder before stage 3 (train/tune_decoder.py): 30.82
MIN_CODEC_PSNR = 30.0


def read_video(path: Path) -> tuple[np.ndarray, bool]:
    with av.open(str(path)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        has_audio = bool(c.streams.audio)
    return frames, has_audio


def test_shipped_model_loads_with_expected_metadata():
    assert DEMO_MODEL.stat().st_size + DEMO_CODEC.stat().st_size < 25 * 2**20
    model, info = load_dit(DEMO_MODEL, dtype="fp32")
    assert info.format == "knot" and info.config == DEMO_DIT and info.config.cond_layout == "noise_mask_latent"
    assert info.config.in_dim == 36  # Wan I2V: noise 16 | mask 4 | known latent 16
    assert [(a.name, a.type, a.attached) for a in info.adapters] == [("motion", ADAPTER_TYPE, True)]
    s = info.sampler
    assert (s.stream.chunk_len, s.stream.knot_len, s.stream.window_len) == (3, 1, 6)
    assert s.stream.steps == (1000, 750, 500, 250) and s.stream.shift == 5.0 and s.stream.running_ahead
    assert not s.stream.start_from_reference  # the reference reaches the stream only as the anchor
    assert s.fps == 25 and s.resolution == (DEMO_SIZE, DEMO_SIZE)
    # trained, not fresh: the zero-initialised adapter outputs have moved
    assert float(model.driving["motion"].layers[0].o.weight.abs().max()) > 1e-3


def test_codec_streaming_equals_one_shot_and_counts_frames():
    codec = load_codec()
    h = DEMO_SIZE // 8
    latent = torch.randn(1, 16, 7, h, h, generator=torch.Generator().manual_seed(0))
    one_shot = codec.decode(latent)
    assert one_shot.shape == (1, 3, 1 + 4 * 6, DEMO_SIZE, DEMO_SIZE)
    stream = StreamingDecoder(codec)
    parts = [stream.decode(latent[:, :, a:b]) for a, b in ((0, 3), (3, 4), (4, 7))]
    assert [p.shape[2] for p in parts] == [9, 4, 12]
    # same math; only the conv batch size differs, so equal up to float32 rounding
    assert torch.allclose(torch.cat(parts, 2), one_shot, atol=1e-5, rtol=0)


def test_codec_round_trip_is_sharp():
    """Round trip of the demo portrait under the benchmark's driving (idle motion, blinks), uint8, in dB."""
    codec = load_codec()
    rows = MotionSequence(5, 49, amount=0.8, idle=1.0).frames(0, 49)
    truth = render_video(Portrait.random(DEMO_PORTRAIT_SEED), rows, DEMO_SIZE)
    x = torch.from_numpy(truth).float().div(127.5).sub(1).permute(3, 0, 1, 2)[None]  # (1, 3, 49, H, W)
    with torch.no_grad():
        out = codec.decode(codec.encode(x))[0].permute(1, 2, 3, 0).add(1).mul(127.5).round().clamp(0, 255)
    assert float(psnr(out.numpy().astype(np.uint8), truth).mean()) >= MIN_CODEC_PSNR


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


@pytest.fixture(scope="module")
def long_render(tmp_path_factory) -> RenderQuality:
    """20 s of the demo (500 frames, 125 latents: far past the 6-latent window), read back from its MP4."""
    report = render_demo(tmp_path_factory.mktemp("demo") / "long.mp4", 20.0, seed=0)
    video, _ = read_video(report.path)
    assert len(video) == 501
    return render_quality(video, demo_motion(0, DEMO_SPEECH).frames(0, len(video)))


def test_long_render_keeps_the_identity(long_render):
    ours, theirs = long_render.identity, long_render.other_identity  # in the 20th second
    assert ours < MAX_IDENTITY, f"colour-histogram distance to the reference {ours:.3f}"
    assert theirs > 1.5 * ours  # nearer this portrait than another face (measured 1.76 vs 0.68)


def test_video_follows_the_driving(long_render):
    r = long_render.following
    assert r.mouth_r > MIN_MOUTH_R, f"mouth r = {r.mouth_r:.3f}"
    assert r.head_r > MIN_HEAD_R, f"head x r = {r.head_r:.3f}"
    assert r.blink_r < MAX_BLINK_R, f"eye-box darkness vs blink r = {r.blink_r:.3f}"


def test_frames_are_sharp_and_clean(long_render):
    q = long_render
    assert q.sharpness > MIN_SHARPNESS, f"sharpness {q.sharpness:.3f} of the ground truth's"
    # sharpness alone rewards artefacts: the DiT's latent errors drawn as blobs count as edges. This render's
    # driving has no idle motion, so every frame is fixed by the anchor and the driving: compare pixels
    assert q.psnr > MIN_PSNR, f"PSNR {q.psnr:.2f} dB against the ground truth"
    assert q.background_psnr > MIN_BACKGROUND_PSNR, f"static background above the head: {q.background_psnr:.2f} dB"


def test_open_mouth_driving_opens_the_mouth():
    change = mouth_change()  # a still head, the mouth held open / closed
    assert change > MIN_MOUTH_CHANGE, f"mouth box darkens by {change:.1f} grey levels"


def test_the_ground_truth_passes_every_bar_the_model_is_held_to():
    """The measures themselves: the drawing of the same rows clears each bar by far (a measure that cannot tell
    the ground truth from a blur would hold the model to nothing)."""
    rows = demo_motion(0, DEMO_SPEECH).frames(0, 501)
    truth = render_video(Portrait.random(DEMO_PORTRAIT_SEED), rows, DEMO_SIZE)
    q = render_quality(truth, rows)
    assert q.following.mouth_r > 0.98 and q.following.blink_r < -0.9 and q.following.head_r > 0.75
    assert q.identity < 0.2 and q.other_identity > 1.5 and q.sharpness == pytest.approx(1.0)
    assert q.psnr == q.background_psnr == PSNR_CAP
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in truth])
    soft = render_quality(blurred, rows)
    assert soft.sharpness < MIN_SHARPNESS and soft.psnr < 30


@pytest.mark.parametrize("strategy", ["self_forcing", "longlive", "rolling_forcing", "avatar_forcing"])
def test_the_demo_runs_every_strategy_its_command_offers(tmp_path, strategy):
    """The driving is made as long as the chosen loop asks (a rolling window reaches past the last frame)."""
    report = render_demo(tmp_path / f"{strategy}.mp4", 1.0, settings={"strategy": strategy})
    frames, _ = read_video(report.path)
    assert report.frames == len(frames) == 1 + 4 * (demo_latent_frames(1.0) - 1)
