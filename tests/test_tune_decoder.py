"""train/tune_decoder.py pairs each streamed latent with the true frames it stands for, and its predecessor."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))

from tune_decoder import WINDOW_LATENTS, pair_crops  # noqa: E402

from knot_core.demo_codec import CodecConfig, DemoCodec  # noqa: E402


def labelled(first: int, streamed: int = 9, size: int = 64):
    """Streamed latents whose every value is their clip latent index plus 100 times the clip's, and videos whose
    every pixel is its frame index plus 60 times the clip's, so a crop tells where it came from."""
    n = 3
    clip_latent = torch.arange(streamed, dtype=torch.float32) + first
    latents = clip_latent.view(1, 1, -1, 1, 1).expand(n, 16, -1, size // 8, size // 8).clone()
    latents += 100 * torch.arange(n, dtype=torch.float32).view(-1, 1, 1, 1, 1)
    frames = 1 + 4 * (streamed + first - 1)
    videos = np.zeros((n, frames, size, size, 3), np.uint8)
    videos += np.arange(frames, dtype=np.uint8).reshape(1, -1, 1, 1, 1)
    videos += (60 * np.arange(n, dtype=np.uint8)).reshape(-1, 1, 1, 1, 1)
    return latents, videos


def test_each_crop_holds_its_own_frames_and_predecessor():
    codec = DemoCodec(CodecConfig(width=8))  # latent statistics 0 / 1: crops keep the labels
    for first in (0, 1):  # knot/k0 streams start at clip latent 0, fixed_anchor's at 1
        latents, videos = labelled(first)
        z, prev, target = pair_crops(latents, videos, first, 12, np.random.default_rng(first), codec)
        assert z.shape == (12 * WINDOW_LATENTS, 16, 6, 6) and prev.shape == z.shape
        assert target.shape == (12 * WINDOW_LATENTS, 4, 3, 48, 48)
        j = z[:, 0, 0, 0] % 100  # the clip latent each crop decodes
        clip = (z[:, 0, 0, 0] // 100).long()
        assert torch.equal(prev[:, 0, 0, 0], z[:, 0, 0, 0] - 1)  # its predecessor in the same stream
        assert bool((j >= first + 1).all())  # never the stream's first latent (it has no streamed predecessor)
        frame = ((target[:, :, 0, 0, 0] + 1) * 127.5).round() - 60 * clip[:, None]
        assert torch.equal(frame, 4 * j[:, None] - 3 + torch.arange(4.0))  # latent j is frames 4j-3 .. 4j


def test_missing_model_file_is_one_line_before_any_work(tmp_path):
    import subprocess

    train = Path(__file__).resolve().parents[1] / "train"
    missing = tmp_path / "knot_p7" / "demo.safetensors"
    run = subprocess.run([sys.executable, str(train / "tune_decoder.py"), "--codec", str(missing), "--models",
                          str(missing), "--modes", "knot", "--cache", str(tmp_path / "c.npz"), "--clips", "4",
                          "--data-seed", "0", "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith(f"tune_decoder.py: error: {missing}: no such file")
    assert "Traceback" not in run.stderr and not (tmp_path / "c.npz").exists()  # nothing rendered
