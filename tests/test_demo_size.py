"""The demo's frame size lives in its model file (train/train_demo.py --size, recipe.sh SIZE=): the render, its
reference and the training clips follow it; a size the codec and the DiT cannot take is one line before any work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from knot_core.checkpoints import load_dit
from knot_core.cli import main
from knot_core.demo import (
    DEMO_CODEC,
    DEMO_MODEL,
    DEMO_SIZE,
    demo_latent_frames,
    demo_reference,
    demo_size,
    demo_size_problem,
    load_codec,
    render_demo,
)
from knot_core.errors import CheckpointError, InputError
from knot_core.live.demo import DemoLiveOptions, demo_live_stream
from knot_core.model_file import save_knot_model
from knot_core.pipeline import video_frames_for

TRAIN = Path(__file__).resolve().parents[1] / "train"
sys.path.insert(0, str(TRAIN))

from train_demo import rendered_clips  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TRAIN), str(TRAIN.parent)])}


def _models_at(folder: Path, size: int) -> Path:
    """A models folder: the shipped codec and DiT, the DiT's file recording `size` (an untrained size for it:
    the test is about the plumbing, not the picture)."""
    folder.mkdir()
    shutil.copy(DEMO_CODEC, folder / DEMO_CODEC.name)
    model, info = load_dit(DEMO_MODEL, dtype=torch.float32)
    save_knot_model(model, folder / DEMO_MODEL.name, sampler=replace(info.sampler, resolution=(size, size)))
    return folder


def _mp4_size(path: Path) -> tuple[int, int, int]:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return len(frames), *frames[0].shape[:2]


def test_the_demo_renders_at_the_size_its_model_file_records(tmp_path):
    folder = _models_at(tmp_path / "m64", 64)
    assert demo_size(load_dit(folder / DEMO_MODEL.name)[1]) == 64
    report = render_demo(tmp_path / "a.mp4", 1.0, models=folder)
    assert _mp4_size(report.path) == (video_frames_for(demo_latent_frames(1.0)), 64, 64)
    assert demo_size(load_dit(DEMO_MODEL)[1]) == DEMO_SIZE  # the shipped file: 96
    _, latent = demo_reference(load_codec(), size=64)
    assert latent.shape == (1, 16, 1, 8, 8)


def test_a_model_file_of_no_demo_size_is_one_line():
    _, info = load_dit(DEMO_MODEL)
    for resolution in ((96, 64), (100, 100), (32, 32)):
        with pytest.raises(CheckpointError) as e:
            demo_size(replace(info, sampler=replace(info.sampler, resolution=resolution)))
        assert f"{resolution[0]}x{resolution[1]}" in str(e.value) and "\n" not in str(e.value)
    assert [demo_size_problem(s) for s in (64, 96, 128)] == [None] * 3
    for bad in (100, 48, 0):
        assert demo_size_problem(bad).startswith(f"--size {bad}:")


def test_clips_follow_the_size_and_the_shipped_cache_key_is_unchanged(tmp_path):
    cache = tmp_path / "clips.npz"
    small = rendered_clips(2, 7, 3, cache, size=64)
    assert small["videos"].shape == (2, 9, 64, 64, 3) and small["references"].shape == (2, 64, 64, 3)
    assert small["cells"].shape == (2, 9, 8, 8) and small["cells"].any()
    assert small["key"].tolist() == [2, 7, 3, 64]
    assert all(np.array_equal(v, rendered_clips(2, 7, 3, cache, size=64)[k]) for k, v in small.items())
    shipped = rendered_clips(2, 7, 3, cache)  # the 64-pixel cache is not reused for another size
    assert shipped["videos"].shape == (2, 9, DEMO_SIZE, DEMO_SIZE, 3) and shipped["cells"].shape == (2, 9, 12, 12)
    assert shipped["key"].tolist() == [2, 7, 3]  # as before the option: existing caches stay valid


@pytest.mark.parametrize("script", ["train_demo.py", "train_codec.py"])
def test_a_bad_size_is_refused_before_any_work(tmp_path, script):
    out = tmp_path / "run"
    extra = ["--render-only", "--cache", str(tmp_path / "c.npz")] if script == "train_demo.py" else []
    run = subprocess.run([sys.executable, str(TRAIN / script), "--out", str(out), "--size", "100", *extra],
                         capture_output=True, text=True, timeout=120, env=ENV)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (f"{script}: error: --size 100: give a multiple of 16 of at least "
                                                   f"64 pixels (the shipped model: {DEMO_SIZE})")
    assert not out.exists() and not (tmp_path / "c.npz").exists()


def test_a_model_trained_at_64_pixels_records_it_and_renders_at_it(tmp_path):
    out = tmp_path / "run"
    run = subprocess.run([sys.executable, str(TRAIN / "train_demo.py"), "--codec", str(DEMO_CODEC), "--out", str(out),
                          "--size", "64", "--width", "64", "--layers", "2", "--clips", "2", "--steps", "1",
                          "--batch", "1", "--teacher-steps", "0", "--cache", str(tmp_path / "c.npz")],
                         capture_output=True, text=True, timeout=300, env=ENV)
    assert run.returncode == 0, run.stderr
    model, info = load_dit(out / "demo.safetensors")
    assert info.sampler.resolution == (64, 64) and (model.cfg.dim, model.cfg.num_layers) == (64, 2)
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(DEMO_CODEC, folder / DEMO_CODEC.name)
    shutil.copy(out / "demo.safetensors", folder / DEMO_MODEL.name)
    assert _mp4_size(render_demo(tmp_path / "b.mp4", 0.5, models=folder).path)[1:] == (64, 64)


def test_demo_models_renders_a_trained_folder_at_its_size_and_a_missing_file_is_one_line(tmp_path, capsys):
    folder = _models_at(tmp_path / "m64", 64)
    assert main(["demo", "--seconds", "0.5", "--out", str(tmp_path / "a.mp4"), "--models", str(folder), "-q"]) == 0
    assert _mp4_size(tmp_path / "a.mp4")[1:] == (64, 64)
    (folder / DEMO_CODEC.name).unlink()
    assert main(["demo", "--seconds", "0.5", "--out", str(tmp_path / "b.mp4"), "--models", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"models folder {str(folder)!r} has no {DEMO_CODEC.name}" in err and err.count("\n") == 1
    assert not (tmp_path / "b.mp4").exists()


def test_the_live_demo_streams_a_models_folder_at_its_size(tmp_path):
    stream = demo_live_stream(DemoLiveOptions(models=_models_at(tmp_path / "m64", 64))).start()
    try:
        chunk = stream.subscribe(maxlen=100).get(timeout=30)
    finally:
        stream.stop()
    assert tuple(chunk.frames.shape) == (9, 64, 64, 3)  # the first chunk: latent 0 -> 1 frame, then 4 per latent
    with pytest.raises(InputError, match=f"models folder '{tmp_path}' has no demo.safetensors"):
        demo_live_stream(DemoLiveOptions(models=tmp_path))


def test_the_quality_benchmark_refuses_a_models_folder_missing_a_file_in_one_line(tmp_path):
    bench = TRAIN.parent / "bench" / "quality.py"
    run = subprocess.run([sys.executable, str(bench), "--models", str(tmp_path), "--out-dir", str(tmp_path / "q")],
                         capture_output=True, text=True, timeout=120, env=ENV)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (f"quality.py: error: models folder '{tmp_path}' has no "
                                                   "demo.safetensors; give a folder holding demo.safetensors and "
                                                   "demo_codec.safetensors (as train/recipe.sh writes them), or "
                                                   "leave --models out for the bundled ones")
    assert not (tmp_path / "q").exists()


def test_the_demo_render_figures_measure_a_models_folder_at_its_size(tmp_path):
    folder = _models_at(tmp_path / "m64", 64)
    bench = TRAIN.parent / "bench" / "demo_render.py"
    run = subprocess.run([sys.executable, str(bench), "--models", str(folder), "--seconds", "2", "--json",
                          str(tmp_path / "f.json"), "--scan"], capture_output=True, text=True, timeout=300, env=ENV)
    assert run.returncode == 0, run.stderr
    # --scan: the ground truth's codec round trip matches the drawing of the true head pose best (the scale 1)
    head = next(line for line in run.stdout.splitlines() if line.startswith("head pose scaled:"))
    coded = [float(cell.split("[")[1].rstrip("]")) for cell in head.split("  (")[0].split(": ", 1)[1].split(", ")]
    assert len(coded) == 5 and max(coded) == coded[3]
    figures = json.loads((tmp_path / "f.json").read_text())
    assert figures["frames"] == 53 and "53 frames 64x64" in run.stdout
    # the ground truth's own driving r does not depend on the model; the model's measures are finite numbers
    assert figures["ground_truth_following"]["mouth_r"] > 0.9
    assert all(np.isfinite(figures[k]) for k in ("identity", "sharpness", "psnr", "background_psnr", "mouth_change"))
    empty = subprocess.run([sys.executable, str(bench), "--models", str(tmp_path)], capture_output=True, text=True,
                           timeout=120, env=ENV)
    assert empty.returncode == 2 and empty.stderr.strip().splitlines()[-1].startswith(
        f"demo_render.py: error: models folder '{tmp_path}' has no demo.safetensors")
