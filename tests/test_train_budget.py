"""train/train_demo.py for a bounded device window: --render-workers draws the same clips side by side,
--max-seconds sizes the run to a wall time and logs it as --steps (which repeats it exactly), and options that
cannot mean anything are one line before any work."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from knot_core.demo import DEMO_CODEC

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "train"
sys.path.insert(0, str(TRAIN))
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

from train_demo import BUDGET_MARGIN, RENDER_BLOCK, rendered_clips  # noqa: E402


def test_render_workers_draw_the_same_clips_as_one_process():
    n = 2 * RENDER_BLOCK + 3  # two whole blocks and a partial one
    one = rendered_clips(n, 7, 2, None, size=64)
    two = rendered_clips(n, 7, 2, None, size=64, workers=2)
    assert one.keys() == two.keys() and len(one["videos"]) == n
    assert all(np.array_equal(one[k], two[k]) for k in one)
    assert not np.array_equal(one["videos"][:RENDER_BLOCK], one["videos"][RENDER_BLOCK:2 * RENDER_BLOCK])


def _train(out: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TRAIN / "train_demo.py"), "--codec", str(DEMO_CODEC), "--out", str(out),
                           "--size", "64", "--width", "64", "--layers", "2", "--clips", "2", "--batch", "1",
                           "--save-every", "1000", "--cache", str(cache), *extra],
                          capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)


def test_max_seconds_sizes_the_run_and_its_logged_steps_repeat_it_exactly(tmp_path):
    budget = 12.0
    run = _train(tmp_path / "timed", tmp_path / "c.npz", "--max-seconds", str(budget), "--teacher-share", "0.5")
    assert run.returncode == 0, run.stderr
    log = json.loads((tmp_path / "timed" / "train_log.json").read_text())
    per_step = log["sized_by"]["seconds_per_step"]
    assert log["sized_by"]["max_seconds"] == budget and per_step > 0
    argv = shlex.split(log["command"])
    steps, teacher = int(argv[argv.index("--steps") + 1]), int(argv[argv.index("--teacher-steps") + 1])
    # sized from the timed steps, with the margin (no wall-clock assertion: the machine's load varies)
    assert 10 <= steps and steps * per_step <= BUDGET_MARGIN * budget and teacher == round(0.5 * steps)
    assert "--max-seconds" not in argv and "--teacher-share" not in argv
    assert len(log["loss_curve"]) == -(-steps // 50)
    again = tmp_path / "again"
    argv[argv.index("--out") + 1] = str(again)
    rerun = subprocess.run([sys.executable, *argv[argv.index("train/train_demo.py"):]], capture_output=True,
                           text=True, timeout=300, env=ENV, cwd=ROOT)
    assert rerun.returncode == 0, rerun.stderr
    a, b = load_file(tmp_path / "timed" / "demo.safetensors"), load_file(again / "demo.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("option", "value", "line"), [
    ("--max-seconds", "0", "--max-seconds 0: give the wall time in seconds the run may take (more than 0)"),
    ("--teacher-share", "1.5", "--teacher-share 1.5: give a share of the steps from 0 to 1"),
    ("--render-workers", "0", "--render-workers 0: give 1 or more processes"),
])
def test_a_meaningless_budget_option_is_one_line_before_any_work(tmp_path, option, value, line):
    run = _train(tmp_path / "run", tmp_path / "c.npz", option, value)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == f"train_demo.py: error: {line}"
    assert not (tmp_path / "run").exists() and not (tmp_path / "c.npz").exists()


def test_a_budget_too_small_for_ten_steps_is_one_line(tmp_path):
    run = _train(tmp_path / "run", tmp_path / "c.npz", "--max-seconds", "0.5")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("train_demo.py: error: --max-seconds 0.5: ") and "fewer than 10 steps fit" in last, last
    assert not (tmp_path / "run" / "demo.safetensors").exists()
