"""bench/ and train/ scripts: a bad file or setting is one line naming the script (exit 2), never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize(("script", "args", "says"), [
    ("train/heldout_loss.py", ["--model", "{tmp}/nope.safetensors", "--codec", "{tmp}/nope2.safetensors",
                               "--train-cache", "{tmp}/a.npz", "--heldout-cache", "{tmp}/b.npz"],
     "DiT checkpoint not found: {tmp}/nope.safetensors"),
    ("bench/tiny_codec_speed.py", ["--tiny", "{tmp}/notes.safetensors", "--chunks", "1"],
     "is neither a safetensors file nor a PyTorch checkpoint"),
    ("bench/demo_render.py", ["--models", "{tmp}/models"], "is neither a safetensors file nor a PyTorch checkpoint"),
])
def test_a_bad_file_is_one_line_naming_the_script(tmp_path, script, args, says):
    (tmp_path / "notes.safetensors").write_text("not weights\n")
    (tmp_path / "models").mkdir()
    for name in ("demo.safetensors", "demo_codec.safetensors"):  # both present, neither weights
        (tmp_path / "models" / name).write_text("not weights\n")
    run = subprocess.run([sys.executable, str(ROOT / script), *(a.format(tmp=tmp_path) for a in args)],
                         capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{Path(script).name}: error: ") and says.format(tmp=tmp_path) in last, last
