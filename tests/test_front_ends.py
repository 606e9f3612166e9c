"""One render path: the same job through the ComfyUI node, the CLI, the Python API and batch gives the same
frame count, the same errors and bit-identical frames (and bit-identical MP4 pictures)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from test_render import one_thread  # noqa: F401 - autouse fixture: one torch thread per test

from knot_core.api import RenderJob, iter_frames
from knot_core.batch import load_jobs, run_jobs
from knot_core.checkpoints import save_knot_model
from knot_core.cli import main
from knot_core.config import PRESETS, StreamConfig
from knot_core.dit import KnotDiT
from knot_core.errors import KnotError
from knot_core.model_file import SamplerDefaults
from knot_core.render_session import read_image
from knot_core.vae import VAEConfig, WanVAE
from knot_core.video_reader import read_frames
from nodes import NODE_CLASS_MAPPINGS as N
from nodes.host import StandaloneHost, use_host

FRAMES, SEED = 21, 3


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A models folder as the nodes see it (knot_forcing/, vae/) and a 80x64 photo: one set of real files."""
    root = tmp_path_factory.mktemp("front_ends")
    for folder in ("knot_forcing", "vae"):
        (root / folder).mkdir()
    torch.manual_seed(0)
    sampler = SamplerDefaults(StreamConfig(steps=(1000, 500)), fps=16, resolution=(32, 32))
    save_knot_model(KnotDiT(PRESETS["tiny-noise-ref-mask"]).eval(), root / "knot_forcing" / "tiny.safetensors",
                    sampler=sampler)
    save_file(WanVAE(VAEConfig.tiny()).state_dict(), str(root / "vae" / "tiny_vae.safetensors"))
    photo = (np.random.default_rng(1).random((64, 80, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(root / "face.png"), photo)
    return {"root": root, "reference": root / "face.png", "model": root / "knot_forcing" / "tiny.safetensors",
            "vae": root / "vae" / "tiny_vae.safetensors"}




def through_node(files, output: Path, monkeypatch, **render) -> tuple[Path, torch.Tensor]:
    monkeypatch.setenv("KNOTFORCING_MODELS_DIR", str(files["root"]))
    monkeypatch.setenv("KNOTFORCING_OUTPUT_DIR", str(output))
    with use_host(StandaloneHost()):
        model = N["KnotForcingModelLoader"]().load("tiny.safetensors", "fp32")["result"][0]
        vae = N["KnotForcingVAELoader"]().load("tiny_vae.safetensors", "fp32")[0]
        image = read_image(files["reference"])  # what ComfyUI's Load Image gives: uint8 / 255 as float32
        ref = N["KnotForcingEncodeReference"]().encode(model, vae, image, framing="crop", width=0, height=0,
                                                       center_x=0.5, center_y=0.5)[0]
        args = {"seed": SEED, "length": FRAMES, "length_unit": "frames", "filename_prefix": "fe/node",
                "max_image_frames": 64, **render}
        path, _, images = N["KnotForcingStreamingSampler"]().render(model, vae, ref, unique_id="1", **args)["result"]
    return Path(path), images


def cli_args(files, out: Path, *extra: str) -> list[str]:
    return ["render", "--reference", str(files["reference"]), "--model", str(files["model"]), "--vae",
            str(files["vae"]), "--out", str(out), "--seed", str(SEED), "-q", *extra]


def job(files, out: Path, **changes) -> RenderJob:
    return RenderJob(reference=files["reference"], model=files["model"], vae=files["vae"], out=out,
                     **{"frames": FRAMES, "seed": SEED, **changes})


def batch(files, tmp_path: Path, row: dict):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"reference": str(files["reference"]), "model": str(files["model"]),
                                "vae": str(files["vae"]), "seed": SEED} | row) + "\n")
    return run_jobs(load_jobs(jobs), progress=False)[0]


def decoded(path: Path) -> np.ndarray:
    return np.stack(list(read_frames(path)))


def test_node_cli_api_and_batch_make_the_same_frames(files, tmp_path, monkeypatch):
    node_path, node_images = through_node(files, tmp_path / "node", monkeypatch)
    assert main(cli_args(files, tmp_path / "cli.mp4", "--frames", str(FRAMES))) == 0
    api = torch.cat([piece.frames for piece in iter_frames(job(files, tmp_path / "unused.mp4"))])  # (T, H, W, 3)
    result = batch(files, tmp_path, {"out": str(tmp_path / "batch.mp4"), "frames": FRAMES})
    assert result.status == "done" and result.frames == FRAMES

    assert tuple(api.shape) == (FRAMES, 16, 32, 3) and api.float().std() > 1.0  # 80x64 photo in a 32x32 area
    assert torch.equal(node_images, api.float() / 255.0)  # the node's IMAGE output holds the API's frames exactly
    pictures = {name: decoded(path) for name, path in
                (("node", node_path), ("cli", tmp_path / "cli.mp4"), ("batch", tmp_path / "batch.mp4"))}
    assert {name: len(p) for name, p in pictures.items()} == {"node": FRAMES, "cli": FRAMES, "batch": FRAMES}
    assert all(np.array_equal(pictures["node"], p) for p in pictures.values())  # same frames in, same MP4 out


def error_of(call) -> str:
    with pytest.raises(KnotError) as err:
        call()
    return str(err.value)


@pytest.mark.parametrize("case", ["no length", "negative seed"])
def test_node_cli_api_and_batch_give_the_same_errors(files, tmp_path, monkeypatch, capsys, case):
    node_kw, cli_extra, job_kw = {
        "no length": ({"length_unit": "signal"}, [], {"frames": None}),
        "negative seed": ({"seed": -1}, ["--frames", "9", "--seed", "-1"], {"frames": 9, "seed": -1}),
    }[case]
    node = error_of(lambda: through_node(files, tmp_path / "node", monkeypatch, **node_kw))
    api = error_of(lambda: list(iter_frames(job(files, tmp_path / "a.mp4", **job_kw))))
    assert main(cli_args(files, tmp_path / "c.mp4", *cli_extra)) == 2
    cli = capsys.readouterr().err.strip().removeprefix("error: ")
    row = {"out": str(tmp_path / "b.mp4"), **{k: v for k, v in job_kw.items() if v is not None}}
    result = batch(files, tmp_path, row)
    assert node == api == cli == result.message and result.status == "failed"
    assert not list(tmp_path.rglob("*.mp4"))  # nothing written by any of them
