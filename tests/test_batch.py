"""`batch`: a broken job is reported and skipped while the others finish (one by one and in 2 spawned worker
processes), TOML defaults apply to every job, --resume skips finished jobs, Ray is optional with a hint."""

from __future__ import annotations

import json
import sys

import pytest
from test_render import one_thread, write_tiny_files  # noqa: F401 - autouse fixture

from knot_core.batch import format_summary, load_jobs, run_jobs
from knot_core.cli import main
from knot_core.errors import MissingDependencyError
from knot_core.video_reader import count_frames


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch")
    write_tiny_files(folder)
    return folder


def jsonl(folder, name: str, rows: list[dict]):
    base = {"reference": "ref.png", "model": "model.safetensors", "vae": "vae.safetensors", "frames": 9}
    path = folder / name
    path.write_text("\n".join(json.dumps({**base, **row}) for row in rows) + "\n# done\n")
    return path


def test_broken_job_is_reported_and_the_others_finish(folder, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = jsonl(folder, "jobs.jsonl", [{"out": "a.mp4"}, {"out": "b.mp4", "audio": "missing.wav"},
                                        {"out": "c.mp4", "frames": 21, "chunk-len": 2, "knot_len": 1}])
    assert main(["batch", str(path), "-q"]) == 1
    table = capsys.readouterr().out
    assert count_frames(folder / "a.mp4") == 9 and count_frames(folder / "c.mp4") == 21
    assert not (folder / "b.mp4").exists()
    row = next(line for line in table.splitlines() if line.startswith("b.mp4"))
    assert "failed" in row and "audio" in row and "missing.wav' does not exist" in row
    assert table.splitlines()[-1] == "3 jobs: 2 done, 1 failed"


def test_unreadable_lines_and_keys_become_failed_jobs(folder):
    path = folder / "bad.jsonl"
    path.write_text('{"out": "x.mp4", "reference": "r", "model": "m", "vae": "v", "chunk_size": 2}\n{oops\n[1]\n')
    entries = load_jobs(path)
    assert [e.job for e in entries] == [None, None, None]
    assert "unknown job key 'chunk_size'" in entries[0].error
    assert entries[1].name == "line 2" and "not valid JSON" in entries[1].error
    assert entries[2].error == "not a JSON object"


@pytest.mark.slow  # a long property run; CI runs it (.ci/run), `pytest -q` leaves it out
def test_two_worker_processes_and_resume_skips_finished_jobs(folder):
    path = jsonl(folder, "par.jsonl", [{"out": "p1.mp4"}, {"out": "p2.mp4", "frames": 21}, {"out": "p3.mp4",
                                                                                              "vae": "nope"}])
    results = run_jobs(load_jobs(path), workers=2, progress=False)
    assert [(r.name, r.status, r.frames) for r in results] == [("p1.mp4", "done", 9), ("p2.mp4", "done", 21),
                                                                ("p3.mp4", "failed", 0)]
    again = run_jobs(load_jobs(path), resume=True, progress=False)
    assert [r.status for r in again] == ["skipped", "skipped", "failed"]
    assert "VAE" in again[2].message and "2 skipped, 1 failed" in format_summary(again)


def test_toml_defaults_apply_to_every_job(folder):
    if sys.version_info < (3, 11):
        pytest.importorskip("tomli")
    path = folder / "jobs.toml"
    path.write_text('reference = "ref.png"\nmodel = "model.safetensors"\nvae = "vae.safetensors"\nframes = 9\n'
                    'seed = 3\n\n[[job]]\nout = "t1.mp4"\n\n[[job]]\nout = "t2.mp4"\nseed = 4\nsteps = [1000]\n')
    jobs = [e.job for e in load_jobs(path)]
    assert [(j.seed, j.frames, j.settings) for j in jobs] == [(3, 9, {}), (4, 9, {"steps": (1000,)})]
    assert jobs[0].model == folder / "model.safetensors"


def test_ray_without_ray_installed_gives_the_install_hint(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    path = jsonl(folder, "ray.jsonl", [{"out": "r.mp4"}])
    with pytest.raises(MissingDependencyError, match="pip install 'ray"):
        run_jobs(load_jobs(path), ray_address="auto")


def test_a_stopped_batch_resumes_only_finished_jobs_as_done(folder):
    from knot_core.render import state_path
    from knot_core.render_marker import finished_frames

    path = jsonl(folder, "stop.jsonl", [{"out": "s1.mp4"}, {"out": "s2.mp4", "frames": 57}, {"out": "s3.mp4"},
                                        {"out": "s4.mp4", "frames": 57, "save_every": 1}])
    s2 = folder / "s2.mp4"
    results = run_jobs(load_jobs(path), progress=False, should_stop=lambda: s2.exists())  # Ctrl-C in job 2
    assert [r.status for r in results] == ["done", "interrupted", "not started", "not started"]
    assert 0 < count_frames(s2) < 57 and state_path(s2).is_file() and finished_frames(s2) is None
    assert "resume state is at frame" in results[1].message

    again = run_jobs(load_jobs(path), resume=True, progress=False)  # the partial file is not "already rendered"
    assert [(r.status, r.frames) for r in again] == [("skipped", 9), ("done", 57), ("done", 9), ("done", 57)]
    assert count_frames(s2) == 57 and finished_frames(s2) == 57 and not state_path(s2).exists()

    # a job killed before its first save (no state, no completion mark) is reported, never skipped
    s4 = folder / "s4.mp4"
    data = s4.read_bytes()
    s4.write_bytes(data[: data.rfind(b"free") - 4])  # as if killed: the completion mark never written
    final = run_jobs(load_jobs(path), resume=True, progress=False)
    assert final[3].status == "failed" and "no resume state" in final[3].message and "--overwrite" in final[3].message


def test_ctrl_c_in_batch_saves_the_state_and_prints_no_traceback(folder):
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    from knot_core.render import state_path

    path = jsonl(folder, "sig.jsonl", [{"out": "g1.mp4", "frames": 2001}, {"out": "g2.mp4"}])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "knot_core", "batch", str(path), "-q"], env=env,
                            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not (folder / "g1.mp4").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "stopping after the current chunk" in err
    assert "interrupted" in out and "not started" in out and state_path(folder / "g1.mp4").is_file()
    assert not (folder / "g2.mp4").exists()
