"""knot_core.quality_metrics on exact ground-truth renderings and synthetic videos, and a bench/quality.py smoke run."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from knot_core.errors import InputError
from knot_core.faces import PARAM_NAMES, DrivingFrame, Portrait, regions, render_video
from knot_core.motion import MotionSequence
from knot_core.quality_metrics import (
    PSNR_CAP,
    Agreement,
    BoundaryMeter,
    LinearMap,
    boundary_ratio,
    frame_differences,
    mouth_darkness,
    psnr,
    skin_centroid,
    ssim,
)

ROOT = Path(__file__).resolve().parents[1]
PORTRAIT_SEED = 2026  # the demo portrait


@pytest.fixture(scope="module")
def truth():
    """300 ground-truth frames of the demo portrait under the bench's driving (0.2 s to render)."""
    portrait = Portrait.random(PORTRAIT_SEED)
    rows = MotionSequence(0, 300, amount=0.8).frames(0, 300)
    geo = [regions(portrait, DrivingFrame.from_vector(r), 64) for r in rows]
    return portrait, rows, render_video(portrait, rows, 64), geo


def smooth_video(frames: int = 48) -> np.ndarray:
    """A bright square gliding one pixel per frame over a flat background: equal change every frame."""
    out = np.full((frames, 64, 64, 3), 60, np.uint8)
    for t in range(frames):
        out[t, 20:36, 2 + t:10 + t] = 250  # stays inside the 64 px frame for 48 frames
    return out


def test_psnr_of_identical_frames_is_capped_and_of_a_known_error_is_exact():
    video = smooth_video(4)
    assert psnr(video, video).tolist() == [PSNR_CAP] * 4
    shifted = video.astype(np.int16) + 10
    expected = 10 * math.log10(255**2 / 100)  # every value off by 10 -> MSE 100: 28.13 dB
    np.testing.assert_allclose(psnr(shifted, video), expected, atol=1e-9)


def test_ssim_is_one_for_identical_frames_and_falls_with_noise():
    video = smooth_video(3)
    np.testing.assert_allclose(ssim(video, video), 1.0, atol=1e-6)
    rng = np.random.default_rng(0)
    light = np.clip(video + rng.normal(0, 5, video.shape), 0, 255)
    heavy = np.clip(video + rng.normal(0, 40, video.shape), 0, 255)
    s_light, s_heavy = ssim(light, video), ssim(heavy, video)
    assert np.all(s_light < 1.0) and np.all(s_heavy < s_light - 0.2), (s_light, s_heavy)
    np.testing.assert_allclose(ssim(video, light), s_light, atol=1e-6)  # symmetric


def test_metrics_reject_mismatched_videos():
    with pytest.raises(InputError, match=r"differ; compare videos of one size and length"):
        psnr(np.zeros((2, 8, 8, 3)), np.zeros((3, 8, 8, 3)))
    with pytest.raises(InputError, match=r"expected video frames \(T, H, W, 3\)"):
        ssim(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))


def test_boundary_ratio_is_one_for_smooth_motion_and_large_for_jumps_at_chunk_boundaries():
    video = smooth_video(48)
    assert boundary_ratio(video, 12) == pytest.approx(1.0, abs=1e-6)
    jumpy = video.astype(np.int16)
    for start in range(12, 48, 12):  # each chunk brighter than the last: a visible seam
        jumpy[start:] += 8
    ratio = boundary_ratio(np.clip(jumpy, 0, 255), 12)
    assert ratio > 3.0, ratio


def test_latent_ratio_ignores_smoothing_inside_a_latent():
    # a decoder that holds each latent's 4 frames still and steps between latents: every change sits on a
    # latent step (frames 1, 5, 9, ...): 12 steps of 10, 4 of them chunk boundaries (frames 9, 21, 33, 45),
    # so a seam is 10 / (80 / 44) = 5.5 times the within mean, yet exactly like every other latent step
    video = np.zeros((1 + 4 * 12, 8, 8, 3), np.uint8)
    for t in range(len(video)):
        video[t] = 10 * ((t + 3) // 4)  # latent of frame t: 0 for frame 0, (t + 3) // 4 after
    meter = BoundaryMeter(frames_per_latent=4)
    meter.update(video[:9])  # the stream's first chunk: 1 + 4(c - 1) frames, c = 3
    for start in range(9, len(video), 12):
        meter.update(video[start:start + 12])
    assert meter.boundary_n == 4 and meter.within_n == 44 and meter.latent_n == 8
    assert meter.ratio == pytest.approx(5.5)
    assert meter.latent_ratio == pytest.approx(1.0)
    assert math.isnan(BoundaryMeter().latent_ratio)


def test_boundary_ratio_of_the_ground_truth_is_near_one(truth):
    _, _, video, _ = truth
    assert 0.8 < boundary_ratio(video, 12) < 1.2  # measured 0.98: the driving is smooth


def test_boundary_meter_continues_across_stretches():
    video = smooth_video(48)
    whole = BoundaryMeter()
    first, second = BoundaryMeter(), BoundaryMeter(last=video[23])
    for start in range(0, 48, 12):
        whole.update(video[start:start + 12])
        (first if start < 24 else second).update(video[start:start + 12])
    assert whole.boundary_n == 3 and first.boundary_n == 1 and second.boundary_n == 2
    assert whole.boundary_sum == pytest.approx(first.boundary_sum + second.boundary_sum)
    assert math.isnan(BoundaryMeter().ratio)
    diffs = frame_differences(video[:3])
    assert math.isnan(diffs[0]) and diffs[1] > 0


def test_mouth_darkness_follows_the_driving_mouth_on_ground_truth(truth):
    _, rows, video, geo = truth
    dark = mouth_darkness(video, [g.mouth for g in geo])
    r = float(np.corrcoef(dark, rows[:, PARAM_NAMES.index("mouth_open")])[0, 1])
    assert r > 0.9, r  # measured 0.97
    with pytest.raises(InputError, match="one box per frame"):
        mouth_darkness(video[:2], [geo[0].mouth])


def test_skin_centroid_tracks_the_head_on_ground_truth(truth):
    portrait, _, video, geo = truth
    centre = np.array([g.face_centre for g in geo])  # (T, 2) from the driving's tx/ty/yaw/pitch
    measured = skin_centroid(video, portrait.skin)
    r_x = float(np.corrcoef(measured[:, 0], centre[:, 0])[0, 1])
    r_y = float(np.corrcoef(measured[:, 1], centre[:, 1])[0, 1])
    # measured 0.77 / 0.96: turning the head slides the features over the skin and biases x
    assert r_x > 0.7 and r_y > 0.9, (r_x, r_y)
    fit = (LinearMap.fit(measured[:, 0], centre[:, 0]), LinearMap.fit(measured[:, 1], centre[:, 1]))
    err = np.hypot(fit[0](measured[:, 0]) - centre[:, 0], fit[1](measured[:, 1]) - centre[:, 1])
    assert err.mean() < 1.0, err.mean()  # sub-pixel after the ground-truth fit (measured 0.55 px)


def test_skin_centroid_moves_with_the_image():
    frame = render_video(Portrait.random(PORTRAIT_SEED), [DrivingFrame()], 64)
    moved = np.roll(frame, 3, axis=2)  # 3 px right; the background is constant along rows, so no seam
    c0, c1 = skin_centroid(frame, Portrait.random(PORTRAIT_SEED).skin), skin_centroid(moved, Portrait.random(
        PORTRAIT_SEED).skin)
    np.testing.assert_allclose(c1 - c0, [[3.0, 0.0]], atol=1e-3)
    nothing = np.zeros((1, 8, 8, 3), np.uint8)
    assert np.isnan(skin_centroid(nothing, (250, 200, 170))).all()


def test_linear_map_recovers_a_line_and_rejects_constant_input():
    x = np.linspace(0, 10, 50)
    fit = LinearMap.fit(x, 0.5 * x - 2)
    assert fit.slope == pytest.approx(0.5) and fit.intercept == pytest.approx(-2.0)
    np.testing.assert_allclose(fit(np.array([4.0])), [0.0], atol=1e-9)
    with pytest.raises(InputError, match="constant or missing x"):
        LinearMap.fit(np.ones(5), np.arange(5))


def test_agreement_in_chunks_equals_the_one_shot_statistics():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=200), rng.normal(size=200)
    y = 0.6 * x + y
    agree = Agreement()
    for start in range(0, 200, 37):
        agree.update(x[start:start + 37], y[start:start + 37])
    agree.update(np.array([np.nan]), np.array([1.0]))  # skipped
    assert agree.n == 200
    assert agree.r == pytest.approx(float(np.corrcoef(x, y)[0, 1]), abs=1e-12)
    assert agree.mae == pytest.approx(float(np.abs(x - y).mean()), abs=1e-12)


@pytest.mark.slow  # a long property run; CI runs it (.ci/run), `pytest -q` leaves it out
def test_bench_writes_the_table_and_the_plot(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench" / "quality.py"), "--frames", "60", "--segment", "30", "--bin", "30",
           "--calibration", "60", "--runs", "knot,self_forcing", "--out-dir", str(tmp_path),
           "--json", str(tmp_path / "q.json")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    table = (tmp_path / "quality.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == [
        "ground truth (measurement ceiling)", "still_reference", "knot", "self_forcing"]
    assert "c=3, k=1, L=6, 4 steps, ahead=8+4" in table
    plot = cv2.imread(str(tmp_path / "quality.png"))
    assert plot is not None and plot.shape == (760, 1240, 3)
