"""train/demo_data.py and train_demo's loss weights: the blink options change only what they say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

TRAIN = Path(__file__).resolve().parents[1] / "train"
sys.path.insert(0, str(TRAIN))

from demo_data import make_clips  # noqa: E402
from train_demo import BLINK, blink_interval_problem, blinking, share_and_weight_problem  # noqa: E402


def test_blink_interval_adds_blinks_and_keeps_everything_else():
    plain, rich = make_clips(3, 5, 121, size=32), make_clips(3, 5, 121, size=32, blink_interval=(0.6, 1.0))
    assert np.array_equal(plain.references, rich.references)  # same identities and poses, drawn alike
    assert np.array_equal(np.delete(plain.signal, BLINK, 2), np.delete(rich.signal, BLINK, 2))
    assert np.array_equal(make_clips(3, 5, 121, size=32).videos, plain.videos)  # the default stays seeded
    closed = [(c.signal[:, :, BLINK] > 0.5).mean() for c in (plain, rich)]
    assert closed[1] > 2.5 * closed[0]  # 0.6-1 s slots instead of 3 s


def test_still_share_draws_clips_without_idle_motion_and_keeps_everything_else():
    plain, mixed = make_clips(8, 5, 49, size=32), make_clips(8, 5, 49, size=32, still_share=0.5)
    assert np.array_equal(make_clips(8, 5, 49, size=32).videos, plain.videos)  # the default stays seeded
    assert np.array_equal(plain.signal, mixed.signal)  # same identities and driving
    still = [bool(np.array_equal(d, s)) for d, s in zip(mixed.drawn, mixed.signal)]
    assert not any(np.array_equal(d, s) for d, s in zip(plain.drawn, plain.signal))  # idle motion in every clip
    assert 2 <= sum(still) <= 6  # about half drawn as the driving says, nothing added
    moved = [i for i in range(8) if not still[i]]
    for name in ("videos", "drawn", "references"):  # the others are the default clips
        assert np.array_equal(getattr(plain, name)[moved], getattr(mixed, name)[moved])


def test_a_bad_still_share_or_adversarial_weight_is_refused_before_any_rendering(tmp_path):
    assert share_and_weight_problem(0.0, 0.0) is None and share_and_weight_problem(1.0, 0.1) is None
    assert share_and_weight_problem(-0.5, 0.0) == ("--still-share -0.5: give a share of the clips from 0 to 1 "
                                                   "(phase 12s: 0.5)")
    assert share_and_weight_problem(0.5, -0.1) == "--adversarial -0.1: give a weight of 0 (no critic) or more"
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TRAIN), str(TRAIN.parent)])}
    run = subprocess.run([sys.executable, str(TRAIN / "train_demo.py"), "--render-only", "--out", str(out),
                          "--still-share", "1.5", "--cache", str(tmp_path / "clips.npz")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == ("train_demo.py: error: --still-share 1.5: give a share of the "
                                                   "clips from 0 to 1 (phase 12s: 0.5)")
    assert not out.exists() and not (tmp_path / "clips.npz").exists()


def test_blinking_marks_latents_whose_rows_close_an_eye():
    features = np.zeros((2, 5, 4, 9), np.float32)
    features[0, 2, 3, BLINK] = 0.3
    features[1, 4, 0, BLINK] = 0.05  # below the threshold: an eye that is all but open
    marks = blinking(features)
    assert marks.shape == (2, 1, 5, 1, 1)
    assert torch.equal(marks[:, 0, :, 0, 0], torch.tensor([[0, 0, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.float32))


def test_blink_interval_is_checked_before_any_rendering():
    assert blink_interval_problem(None) is None and blink_interval_problem([0.6, 2.4]) is None
    for bad in ([2.0, 1.0], [0.3, 1.0]):  # LO above HI; a slot too short for one blink (5 frames, 0.4 s)
        problem = blink_interval_problem(bad)
        assert problem.startswith(f"--blink-interval {bad[0]} {bad[1]}:") and "\n" not in problem


def test_a_start_model_of_another_width_is_refused_before_any_rendering(tmp_path):
    # train_demo --init-from a width-128 file with --width 256: one line naming the option, nothing made
    models = TRAIN.parent / "knot_core" / "models"
    demo, codec, out = models / "demo.safetensors", models / "demo_codec.safetensors", tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TRAIN), str(TRAIN.parent)])}
    run = subprocess.run([sys.executable, str(TRAIN / "train_demo.py"), "--codec", str(codec), "--out", str(out),
                          "--init-from", str(demo), "--width", "256", "--cache", str(tmp_path / "clips.npz")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (f"train_demo.py: error: --init-from {demo}: a model of width 128 "
                                                   "and 4 layers; pass --width 128 --layers 4 to continue it")
    assert not out.exists() and not (tmp_path / "clips.npz").exists()
