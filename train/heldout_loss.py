"""Does the demo DiT generalise? Its x0 loss (train/rollout.py) on clips it trained on vs clips it never saw.

    PYTHONPATH=. python train/heldout_loss.py --model RUNS/knot_p4/demo.safetensors \
        --codec RUNS/codec/demo_codec.safetensors --train-cache RUNS/clips.npz --train-clips 400 --train-seed 0 \
        --heldout-cache RUNS/clips_heldout.npz

Prints the loss per chunk (region weight 8, batch 8, 4 draws, 6 chunks, seeded) with the ground truth committed
(teacher) and with the model's own frames (self-rollout), on both sets. The held-out clips (default 100 at data
seed 3, blinks every 3 s as every render) are rendered into --heldout-cache on first use.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from rollout import rollout_loss
from train_demo import CHUNKS, CLIP_LATENTS, MODES, encode_clips, mode_config, rendered_clips, sample

from knot_core.checkpoints import load_dit
from knot_core.demo import demo_size, load_codec
from knot_core.errors import run_script


def losses(model, data: dict, mode: str, teacher: bool, draws: int = 4, batch: int = 8) -> np.ndarray:
    cfg, per_chunk = mode_config(mode), []
    for draw in range(draws):
        gen = torch.Generator().manual_seed(draw)
        with torch.no_grad():
            clips = sample(data, cfg, mode, batch, gen, teacher)
            per_chunk.append(rollout_loss(model, cfg, clips, CHUNKS, gen).chunk_losses)
    return np.mean(per_chunk, 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--codec", type=Path, required=True, help="the stage-1 demo_codec.safetensors")
    p.add_argument("--mode", default="knot", choices=MODES)
    p.add_argument("--train-cache", type=Path, required=True)
    p.add_argument("--train-clips", type=int, default=400)
    p.add_argument("--train-seed", type=int, default=0)
    p.add_argument("--heldout-cache", type=Path, required=True)
    p.add_argument("--heldout-clips", type=int, default=100)
    p.add_argument("--heldout-seed", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    model, info = load_dit(args.model, dtype=torch.float32)
    model.eval()
    codec = load_codec(args.codec)
    sets = {"training clips": (args.train_clips, args.train_seed, args.train_cache),
            "held-out clips": (args.heldout_clips, args.heldout_seed, args.heldout_cache)}
    for name, (n, seed, cache) in sets.items():
        data = encode_clips(codec, rendered_clips(n, seed, CLIP_LATENTS, cache, size=demo_size(info)), 8.0)
        for teacher in (True, False):
            per_chunk = losses(model, data, args.mode, teacher)
            print(f"{name:>15} {'teacher' if teacher else 'self-rollout':>12}: mean {per_chunk.mean():.4f} "
                  f"per chunk {np.round(per_chunk, 3).tolist()}", flush=True)


if __name__ == "__main__":
    run_script(main)
