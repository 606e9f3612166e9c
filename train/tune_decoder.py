"""Stage 3 of the demo model: tune the codec's decoder on the latents the DiT itself makes, seeded, on the CPU.

    PYTHONPATH=. python train/tune_decoder.py --codec RUNS/codec_w128/demo_codec.safetensors \
        --models RUNS/knot_p7/demo.safetensors RUNS/k0_p7/demo.safetensors RUNS/fixed_anchor_p7/demo.safetensors \
        --modes knot k0 fixed_anchor --cache RUNS/clips_blink_p7.npz --clips 2400 --data-seed 4 \
        --blink-interval 0.6 2.4 --out RUNS/decoder_p7 --seed 0 --steps 1500

Why: the DiT's x0 regression leaves its latents a little off the encoder's (a conditional mean of what the
driving leaves open, and model error), and a decoder that has only seen the encoder's latents turns that offset
into smudge. Each model in --models rolls out its own share of the clips (train/rollout.py: the engine's loop,
its own frames in the window, no teacher) and the decoder learns (DiT latent, its predecessor) -> the true 4
frames, on 48x48 crops as train/train_codec.py. Half of every batch is still the encoder's own latents
(train_codec.step_loss), so the round trip — the benchmark's ceiling row — stays what it was. The encoder and the
latent statistics are frozen: the DiT's latent space does not move. Every mode the benchmark reports gets the
same share of pairs, so the strategies keep one decoder and the comparison stays fair.
Writes demo_codec.safetensors (a checkpoint every 200 steps) and codec_train_log.json in --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from demo_data import make_clips, to_video
from rollout import rollout_loss
from torch import nn
from train_codec import CROP, crops, pixel_loss, round_trip_psnr, save, step_loss
from train_demo import (
    CHUNKS,
    CLIP_LATENTS,
    MODES,
    blink_interval_problem,
    encode_clips,
    first_clip_latent,
    mode_config,
    rendered_clips,
    sample,
)

from knot_core.checkpoints import load_dit
from knot_core.config import FRAMES_PER_LATENT
from knot_core.demo import demo_size, load_codec
from knot_core.demo_codec import DemoCodec
from knot_core.errors import run_script

log = logging.getLogger("tune_decoder")
WINDOW_LATENTS = 3  # latents decoded per crop, as train_codec's 9-frame windows
CRITIC_WARMUP = 100  # steps of reconstruction alone before the critic joins (it judges something sensible first)


@torch.no_grad()
def dit_latents(model, mode: str, data: dict, clips: np.ndarray, seed: int, batch: int = 8) -> torch.Tensor:
    """(n, 16, CHUNKS * c, h, w): what `model` streams for each of `clips` in `mode` (its own frames, no teacher)."""
    cfg, gen, out = mode_config(mode), torch.Generator().manual_seed(seed), []
    for i in range(0, len(clips), batch):
        pick = torch.from_numpy(clips[i:i + batch])
        out.append(rollout_loss(model, cfg, sample(data, cfg, mode, len(pick), gen, False, pick), CHUNKS,
                                gen).committed)
    return torch.cat(out)


def pair_crops(latents: torch.Tensor, videos: np.ndarray, first: int, batch: int, rng: np.random.Generator,
               codec: DemoCodec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random crops of WINDOW_LATENTS consecutive streamed latents (un-normalised, (B*W, 16, 6, 6)), each one's
    streamed predecessor, and the true frames they stand for ((B*W, 4, 3, 48, 48) in [-1, 1]). Streamed latent q
    is clip latent q + first, video frames 4j-3 .. 4j of clip latent j."""
    n, q_count, cells = latents.shape[0], latents.shape[2], CROP // 8
    size = videos.shape[2]
    z, target = [], []
    for _ in range(batch):
        i, q = rng.integers(n), rng.integers(1, q_count - WINDOW_LATENTS + 1)  # q >= 1: a streamed predecessor
        y, x = 8 * rng.integers(0, (size - CROP) // 8 + 1, 2)
        z.append(latents[i, :, q - 1:q + WINDOW_LATENTS, y // 8:y // 8 + cells, x // 8:x // 8 + cells])
        j = q + first
        frames = videos[i, 4 * j - 3:4 * (j + WINDOW_LATENTS - 1) + 1, y:y + CROP, x:x + CROP]
        target.append(to_video(frames[None])[0].transpose(0, 1).unflatten(0, (WINDOW_LATENTS, FRAMES_PER_LATENT)))
    mean, std = codec.latent_mean.view(1, -1, 1, 1, 1), codec.latent_std.view(1, -1, 1, 1, 1)
    zs = (torch.stack(z) * std + mean).transpose(1, 2)  # (B, 1 + W, 16, 6, 6) un-normalised
    return zs[:, 1:].flatten(0, 1), zs[:, :-1].flatten(0, 1), torch.cat(target)


class PatchCritic(nn.Module):
    """Judges 48x48 crops of 4 stacked frames (12 channels, what one latent decodes to) patch by patch: the
    adversarial half of --adversarial (spectral norm keeps it 1-Lipschitz enough to train without tuning)."""

    def __init__(self, width: int = 32):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(3 * FRAMES_PER_LATENT, width, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width, 2 * width, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(2 * width, 4 * width, 3, 1, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(4 * width, 1, 3, 1, 1)))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # (N, 4, 3, H, W) -> (N, 1, H/4, W/4)
        return self.net(frames.flatten(1, 2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--codec", type=Path, required=True, help="the codec whose decoder is tuned (encoder frozen)")
    p.add_argument("--models", type=Path, nargs="+", required=True, help="the DiT of each mode in --modes")
    p.add_argument("--modes", nargs="+", choices=MODES, required=True)
    p.add_argument("--cache", type=Path, required=True, help="the rendered clips (train_demo.py --render-only)")
    p.add_argument("--clips", type=int, required=True)
    p.add_argument("--data-seed", type=int, required=True)
    p.add_argument("--blink-interval", type=float, nargs=2, metavar=("LO", "HI"))
    p.add_argument("--per-mode", type=int, default=600, help="clips each model rolls out (disjoint sets)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=16, help="crops per step: half DiT pairs, half encoder latents")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--latent-noise", type=float, default=0.01, help="as train_codec.py, on the encoder half")
    p.add_argument("--adversarial", type=float, default=0.0,
                   help="weight of a patch critic's hinge loss on the DiT pairs' decodes (0, the recipe's: "
                        "reconstruction only; 0.1 and 0.03 drew features where the latents are wrong: README)")
    p.add_argument("--gt-weight", type=float, default=1.0, help="weight of the encoder-latent half's loss")
    p.add_argument("--heldout-seed", type=int, default=1002, help="data seed of the 8 round-trip clips")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if len(args.models) != len(args.modes):
        p.error(f"--models gives {len(args.models)} files for {len(args.modes)} --modes: give one per mode")
    if (problem := blink_interval_problem(args.blink_interval)) is not None:
        p.error(problem)
    for path in (args.codec, *args.models):
        if not path.is_file():
            p.error(f"{path}: no such file (--codec: train_codec.py's demo_codec.safetensors; --models: "
                    "train_demo.py's demo.safetensors, one per mode)")
    if len(args.modes) * args.per_mode > args.clips:
        p.error(f"--per-mode {args.per_mode} x {len(args.modes)} modes needs {len(args.modes) * args.per_mode} "
                f"clips; --clips is {args.clips}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    loaded = [load_dit(path, dtype=torch.float32) for path in args.models]
    sizes = {demo_size(info) for _, info in loaded}
    if len(sizes) != 1:
        p.error(f"--models were trained at different sizes {sorted(sizes)}; give models of one --size")
    size = sizes.pop()
    codec = load_codec(args.codec)  # frozen: only the decoder is given back its gradients below
    data = rendered_clips(args.clips, args.data_seed, CLIP_LATENTS, args.cache,
                          None if args.blink_interval is None else tuple(args.blink_interval), size)
    videos = data["videos"]
    encoded = encode_clips(codec, data, 0.0)
    order = np.random.default_rng(args.seed).permutation(args.clips)
    pairs = []  # (streamed latents, their clips' videos, first clip latent) per mode
    for k, (mode, (model, _)) in enumerate(zip(args.modes, loaded)):
        clips = np.sort(order[k * args.per_mode:(k + 1) * args.per_mode])
        model.eval()
        pairs.append((dit_latents(model, mode, encoded, clips, args.seed + k), videos[clips],
                      first_clip_latent(mode)))
        log.info("%s: rolled out %d clips (%.0f s)", mode, len(clips), time.perf_counter() - started)
    held_out = make_clips(8, args.heldout_seed, 25, size).videos  # train_codec.py's held-out clips of its seed 2
    del data, encoded, loaded
    trained = [q.requires_grad_(True) for q in (*codec.decoder.parameters(), *codec.decoder_skip.parameters())]
    opt = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    rng, half = np.random.default_rng(args.seed + 1), args.batch // 2
    critic = PatchCritic() if args.adversarial > 0 else None
    critic_opt = None if critic is None else torch.optim.AdamW(critic.parameters(), lr=2e-4, betas=(0.5, 0.9))
    losses, psnrs = [], [(0, round(round_trip_psnr(codec, held_out), 2))]
    for step in range(args.steps):
        latents, vids, first = pairs[step % len(pairs)]  # modes in turn: equal shares
        z, prev, target = pair_crops(latents, vids, first, half, rng, codec)
        decoded = codec.decode_pairs(z, prev)
        dit = pixel_loss(decoded, target)
        loss = dit + args.gt_weight * step_loss(codec, crops(videos, args.batch - half, rng), args.latent_noise)
        if critic is not None and step >= CRITIC_WARMUP:
            critic_loss = F.relu(1 - critic(target)).mean() + F.relu(1 + critic(decoded.detach())).mean()
            critic_opt.zero_grad()
            critic_loss.backward()
            critic_opt.step()
            loss = loss - args.adversarial * critic(decoded).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        sched.step()
        losses.append((loss.item(), dit.item()))
        if (step + 1) % 200 == 0 or step + 1 == args.steps:
            psnrs.append((step + 1, round(round_trip_psnr(codec, held_out), 2)))
            save(codec, args.out / "demo_codec.safetensors")
            log.info("decoder step %d/%d loss %.4f (DiT pairs %.4f) round trip %.2f dB (%.0f s)", step + 1,
                     args.steps, *np.mean(losses[-200:], 0), psnrs[-1][1], time.perf_counter() - started)
    record = {"command": "PYTHONPATH=. python train/tune_decoder.py " + " ".join(
                  f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                  for k, v in vars(args).items() if v is not None),
              "wall_s": round(time.perf_counter() - started, 1), "held_out_round_trip_psnr_db": psnrs,
              "loss_curve": [round(float(np.mean([x[0] for x in losses[i:i + 100]])), 5)
                             for i in range(0, len(losses), 100)],
              "dit_pair_loss_curve": [round(float(np.mean([x[1] for x in losses[i:i + 100]])), 5)
                                      for i in range(0, len(losses), 100)]}
    (args.out / "codec_train_log.json").write_text(json.dumps(record, indent=1))
    log.info("done in %.0f s", time.perf_counter() - started)


if __name__ == "__main__":
    run_script(main)
