"""Messages after each kind of stop say what is on disk: no file, a file without a resume state (killed before
its first save), a file with a state (and where it was saved), a finished render (its completion mark)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_render import FRAMES, job, one_thread, write_tiny_files  # noqa: F401 - autouse fixture

from knot_core.errors import InputError
from knot_core.render import render, state_path
from knot_core.render_marker import describe_output, finished_frames
from knot_core.video_reader import count_frames

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_tiny_files(tmp_path_factory.mktemp("tiny"))


def test_each_state_on_disk_is_described(files, tmp_path):
    out = tmp_path / "a.mp4"
    assert describe_output(out, state_path(out)).describe() == \
        f"nothing was written: {str(out)!r} does not exist; start the render again"

    seen = []
    render(job(files, out, save_every=2), on_chunk=seen.append, should_stop=lambda: len(seen) == 3)
    found = describe_output(out, state_path(out))
    assert (found.frames, found.saved_at, found.finished) == (33, 33, False)
    assert found.describe().endswith("holds 33 frames (playable); its resume state is at frame 33: continue with "
                                     "the same command plus --resume")

    state_path(out).unlink()  # as after SIGKILL before the first save
    text = describe_output(out, state_path(out)).describe()
    assert "holds 33 frames (playable) but has no resume state" in text and "--overwrite" in text
    with pytest.raises(InputError, match="nothing to resume: .* holds 33 frames .* no resume state"):
        render(job(files, out, resume=True))  # not "a finished render"

    done = tmp_path / "b.mp4"
    render(job(files, done))
    assert finished_frames(done) == count_frames(done) == FRAMES
    with pytest.raises(InputError, match=f"is a finished render \\({FRAMES} frames\\); nothing to resume"):
        render(job(files, done, resume=True))
    assert finished_frames(out) is None


def test_the_file_runs_ahead_of_its_state_after_a_kill(files, tmp_path):
    out, seen = tmp_path / "k.mp4", []
    render(job(files, out, save_every=2), on_chunk=seen.append, should_stop=lambda: len(seen) == 3)
    saved = state_path(out).read_bytes()
    render(job(files, out, resume=True, save_every=10), on_chunk=seen.append, should_stop=lambda: len(seen) == 4)
    state_path(out).write_bytes(saved)
    assert describe_output(out, state_path(out)).describe().endswith(
        "its resume state is at frame 33: continue with the same command plus --resume (frames after 33 are "
        "rendered again)")


def test_ctrl_c_twice_reports_what_is_on_disk_without_a_traceback(files, tmp_path):
    out = tmp_path / "c.mp4"
    args = [sys.executable, "-m", "knot_core", "render", "-q", "--frames", "2001", "--out", str(out)]
    for key in ("reference", "model", "vae"):
        args += [f"--{key}", str(files[key])]
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not (out.parent / (out.name + ".lock")).exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # the lock is taken inside the Ctrl-C handler's scope
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)  # the second one stops at once
    _, err = proc.communicate(timeout=120)
    # 130, or death by SIGINT (which a shell also shows as 130): CPython exits through SIGINT when the
    # interrupt landed in C-level code run by PyRun_* (e.g. inside an import while loading), even if caught
    assert proc.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "stopped mid-chunk: " + describe_output(out, state_path(out)).describe()
    assert not (out.parent / (out.name + ".lock")).exists()


def test_ctrl_c_in_demo_keeps_a_playable_file_and_says_so(tmp_path):
    out = tmp_path / "demo.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "knot_core", "demo", "--out", str(out), "--seconds", "120"],
                            cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    held = count_frames(out)  # the demo is a resumable render: the message names the file, its frames, the state
    found = describe_output(out, state_path(out))
    assert held > 0 and err.strip().splitlines()[-1] == "interrupted: " + found.describe()
    assert f"holds {held} frames (playable); its resume state is at frame {held}" in err
