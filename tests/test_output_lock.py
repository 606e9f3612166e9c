"""One writer per output: a live claim refuses a second writer (also with overwrite), names the holder,
goes away on every exit, and a lock left by a killed process is detected as stale and taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from knot_core.errors import InputError
from knot_core.output_lock import claim_output, lock_path
from knot_core.video_reader import count_frames
from knot_core.video_writer import VideoWriter

HOLD = """
import sys, time
from knot_core.output_lock import claim_output
with claim_output(sys.argv[1]):
    print("claimed", flush=True)
    time.sleep(60)
"""


def frames(n: int = 4) -> np.ndarray:
    return np.full((n, 16, 16, 3), 128, np.uint8)


@pytest.fixture
def holder(tmp_path):
    """Another process that holds tmp_path/out.mp4 until killed."""
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.stdout.readline().strip() == "claimed"
    yield out, proc
    proc.kill()
    proc.wait()


def test_a_second_writer_is_refused_naming_the_first_even_with_overwrite(holder):
    out, proc = holder
    for overwrite in (False, True):
        with pytest.raises(InputError, match=rf"being written by process {proc.pid} on {socket.gethostname()}"):
            VideoWriter(out, 16, overwrite=overwrite)
    assert not out.exists()  # nothing was created by the refused writers


def test_a_lock_left_by_a_killed_process_is_stale_and_taken_over(holder):
    out, proc = holder
    proc.kill()
    proc.wait()
    assert lock_path(out).is_file()  # SIGKILL cannot clean up
    with VideoWriter(out, 16) as writer:
        writer.write(frames())
        assert json.loads(lock_path(out).read_text())["pid"] == os.getpid()
    assert count_frames(out) == 4
    assert not lock_path(out).exists()


def test_the_lock_goes_on_every_exit(tmp_path):
    out = tmp_path / "a.mp4"
    with VideoWriter(out, 16) as writer:
        writer.write(frames())
    assert not lock_path(out).exists()
    with pytest.raises(RuntimeError), VideoWriter(tmp_path / "b.mp4", 16) as writer:  # an error mid-render
        writer.write(frames())
        raise RuntimeError("boom")
    assert not lock_path(tmp_path / "b.mp4").exists()
    with pytest.raises(InputError, match="already exists"):  # refused after the claim: the claim is returned
        VideoWriter(out, 16)
    assert not lock_path(out).exists()
    VideoWriter(tmp_path / "c.mp4", 16).close()  # closed with no frames
    assert not lock_path(tmp_path / "c.mp4").exists()


def test_claims_nest_within_one_process(tmp_path):
    out = tmp_path / "a.mp4"
    with claim_output(out):
        with VideoWriter(out, 16) as writer:  # render() claims the job, its writer the same file again
            writer.write(frames())
        assert lock_path(out).is_file()  # still held by the outer claim
    assert not lock_path(out).exists()


def test_a_lock_from_another_host_is_not_stolen(tmp_path):
    out = tmp_path / "a.mp4"
    lock_path(out).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": time.time(), "command": "x"}))
    with pytest.raises(InputError, match=r"process 1 on elsewhere .* delete"):
        VideoWriter(out, 16)
