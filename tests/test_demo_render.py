"""`demo` is a render with the built-in model: SIGTERM leaves a playable file and a state, --resume completes it
with the frames of an uninterrupted run; an existing file (or the audio itself) is never replaced unasked."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from knot_core.cli import main
from knot_core.demo import DEMO_SPEECH
from knot_core.file_sink import state_path
from knot_core.video_reader import count_frames, read_frames

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
SECONDS = "3"  # 77 frames (T = 20 latents), 7 chunks


def demo(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "knot_core", "demo", "--seconds", SECONDS, "--out", str(out), "--crf", "0",
            "--save-every", "2", "-q", *extra]


def test_sigterm_then_resume_gives_the_uninterrupted_frames(tmp_path):
    out = tmp_path / "a.mp4"
    run = subprocess.Popen(demo(out), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.is_file() and out.stat().st_size > 0) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)  # the first chunk is in the file: stop it mid-render, as a user would
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 128 + signal.SIGTERM, err
    assert "interrupted:" in err and "--resume" in err and "Traceback" not in err
    stopped = count_frames(out)
    assert 0 < stopped < 77 and state_path(out).is_file()  # playable, part of the video, resumable

    assert main(demo(out, "--resume")[3:]) == 0  # in process: the same command line, resumed
    assert not state_path(out).exists()
    assert main(demo(tmp_path / "b.mp4")[3:]) == 0
    a, b = np.stack(list(read_frames(out))), np.stack(list(read_frames(tmp_path / "b.mp4")))
    assert a.shape == b.shape == (77, 64, 64, 3) and np.array_equal(a, b)


def test_demo_never_replaces_a_file_unasked(tmp_path, capsys):
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"precious")
    assert main(["demo", "--seconds", "1", "--out", str(out)]) == 2
    assert "already exists; choose another name, pass --overwrite" in capsys.readouterr().err
    speech = tmp_path / "speech.mp4"
    shutil.copy(DEMO_SPEECH, speech)
    before = speech.read_bytes()
    assert main(["demo", "--seconds", "1", "--out", str(speech), "--audio", str(speech), "--overwrite"]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert out.read_bytes() == b"precious" and speech.read_bytes() == before


@pytest.mark.parametrize("flags, message", [
    (["--knot-len", "3"], "knot_len=3; must be in [0, chunk_len-1]"),
    (["--seed", "-1"], "seed=-1; give a whole number"),
    (["--portrait-seed", "-1"], "portrait_seed=-1"),
    (["--seconds", "inf"], "seconds=inf; give a positive, finite duration"),
    (["--threads", "0"], "--threads 0; give a positive number"),
])
def test_demo_setting_errors_are_one_line(tmp_path, capsys, flags, message):
    assert main(["demo", "--out", str(tmp_path / "x.mp4"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "x.mp4").exists()
