"""`python -m knot_core render`: SIGINT mid-render leaves a playable MP4 with exactly the finished chunks and
a state that --resume completes to the frames of an uninterrupted render; user errors give one line, exit 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_render import FRAMES, decoded, frames_in_state, job, one_thread, write_tiny_files  # noqa: F401

from knot_core.cli import main
from knot_core.render import render, state_path
from knot_core.video_reader import count_frames

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_tiny_files(tmp_path_factory.mktemp("tiny_cli"))


def flags(files, out: Path, *extra: str) -> list[str]:
    return ["render", "--reference", str(files["reference"]), "--model", str(files["model"]), "--vae",
            str(files["vae"]), "--out", str(out), "--crf", "0", "-q", *extra]


def test_sigint_finishes_the_chunk_and_resume_completes(files, tmp_path):
    out = tmp_path / "int.mp4"
    child = subprocess.Popen([sys.executable, "-m", "knot_core", *flags(files, out, "--frames", str(FRAMES),
                                                                        "--save-every", "1")],
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not state_path(out).is_file() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the state appears once the first chunk is in the file
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    held = frames_in_state(state_path(out))
    assert "interrupted" in err and f"holds {held} frames" in err and "--resume" in err
    assert held in (9, 21, 33, 45) and count_frames(out) == held  # whole chunks only, playable

    done = subprocess.run([sys.executable, "-m", "knot_core", *flags(files, out, "--frames", str(FRAMES),
                                                                         "--resume")],
                          env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}: {FRAMES} frames" in done.stdout and not state_path(out).exists()
    render(job(files, tmp_path / "ref.mp4"))
    a, b = decoded(tmp_path / "ref.mp4"), decoded(out)
    assert len(b) == FRAMES and all(np.array_equal(x, y) for x, y in zip(a, b))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_user_errors_give_one_line_and_status_2(files, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    assert main(flags({**files, "reference": tmp_path / "none.png"}, out, "--frames", "9")) == 2
    assert "reference image" in one_error_line(capsys) and not out.exists()

    out.write_bytes(b"old")
    assert main(flags(files, out, "--frames", "9")) == 2
    assert "already exists" in one_error_line(capsys) and out.read_bytes() == b"old"

    assert main(flags(files, tmp_path / "x.mp4", "--frames", "9", "--knot-len", "5")) == 2
    assert "knot_len=5" in one_error_line(capsys)
    assert main(flags(files, tmp_path / "x.mp4")) == 2
    assert "no length given" in one_error_line(capsys)
    assert main(flags(files, tmp_path / "x.txt", "--frames", "9")) == 2
    assert "must end in one of" in one_error_line(capsys)


def test_unknown_setting_is_an_argparse_error(files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(flags(files, tmp_path / "o.mp4", "--chunk-size", "3"))
    assert exc.value.code == 2 and "unrecognized arguments: --chunk-size" in capsys.readouterr().err


def test_disk_full_reports_what_the_file_holds(files, tmp_path):
    import resource

    def limit():  # writes past 20 kB fail with EFBIG, as a full disk fails with ENOSPC
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    out = tmp_path / "full.mp4"
    run = subprocess.run([sys.executable, "-m", "knot_core", *flags(files, out, "--frames", "200")], env=ENV,
                         capture_output=True, text=True, timeout=120, preexec_fn=limit)
    assert run.returncode == 2, run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "playable" in line and "Free disk space" in line
    assert count_frames(out) in (9, 21, 33, 45, 57, 69)


def test_a_plain_expression_csv_renders_with_expression_fps(files, tmp_path, capsys):
    from knot_core.adapters.cross_attention import CrossAttentionAdapter, CrossAttentionConfig
    from knot_core.checkpoints import load_dit
    from knot_core.model_file import save_knot_model

    model, info = load_dit(files["model"])
    model.add_adapter("expression", CrossAttentionAdapter(
        CrossAttentionConfig(signal="expression", feature_dim=6, dim=64, num_heads=2, blocks=(0,))))
    save_knot_model(model, tmp_path / "driven.safetensors", sampler=info.sampler)
    rows = np.random.default_rng(0).random((32, 6))
    (tmp_path / "coef.csv").write_text("\n".join(",".join(f"{v:.4f}" for v in row) for row in rows) + "\n")
    base = flags({**files, "model": tmp_path / "driven.safetensors"}, tmp_path / "e.mp4", "--expression",
                 str(tmp_path / "coef.csv"))
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "carries no frame rate" in err and "--expression-fps" in err  # the flag the message names exists
    assert main([*base, "--expression-fps", "16"]) == 0  # 32 rows at 16 rows/s = 2 s = 32 frames at 16 fps
    assert count_frames(tmp_path / "e.mp4") == 32
