"""Stage 1 of the demo model: train its codec (knot_core.demo_codec) on procedural portraits, seeded, on the CPU.

    PYTHONPATH=. python train/train_codec.py --out /work/i14_runs/codec --seed 0 --steps 1000 --batch 24 --width 96
    PYTHONPATH=. python train/train_codec.py --out /work/i14_runs/codec_dec --seed 1 --steps 1500 --batch 24 \
        --width 96 --decoder-only /work/i14_runs/codec/demo_codec.safetensors

Clips come from train/demo_data.py (idle head motion and blinks included). Each step decodes random 48x48 crops
(aligned to the 8-pixel latent grid) of 9-frame windows: the codec is fully convolutional, so crops teach the
full frame at a quarter of the cost. Loss: L1 + MSE on pixels; latents get a little noise (1% of their std;
5% held the round trip at 23.8 dB after 600 steps: noise on the colour channels is colour error). Then
per-channel latent statistics make latents ~unit scale, and the round-trip PSNR of held-out clips (full frames,
uint8) is logged. --decoder-only continues a trained codec with its encoder and latent statistics frozen: the
latent space the DiT is trained on stays exactly as it was, so the decoder can keep improving while the DiT
trains. Writes demo_codec.safetensors and codec_train_log.json in --out (a checkpoint every 200 steps, so a run
cut short leaves usable weights).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from demo_data import make_clips, to_video
from safetensors.torch import load_file, save_file

from knot_core.demo import DEMO_SIZE, demo_size_problem
from knot_core.demo_codec import CodecConfig, DemoCodec
from knot_core.errors import run_script

log = logging.getLogger("train_codec")
CROP = 48  # pixels of a training crop (6x6 latent cells)
WINDOW = 9  # video frames per training window: latents 0 (frame 0 alone), 1, 2


def crops(videos: np.ndarray, batch: int, rng: np.random.Generator) -> torch.Tensor:
    """Random 9-frame, 48x48 windows (B, 3, 9, 48, 48), aligned to 4 frames and 8 pixels."""
    n, frames, size = videos.shape[:3]
    out = []
    for _ in range(batch):
        i, t = rng.integers(n), 4 * rng.integers(0, (frames - WINDOW) // 4 + 1)
        y, x = 8 * rng.integers(0, (size - CROP) // 8 + 1, 2)
        out.append(videos[i, t:t + WINDOW, y:y + CROP, x:x + CROP])
    return to_video(np.stack(out))


def step_loss(codec: DemoCodec, x: torch.Tensor, latent_noise: float) -> torch.Tensor:
    z = codec.encode_raw(x)  # (B, 16, 3, h, w)
    zs = (z + latent_noise * z.detach().std() * torch.randn_like(z)).transpose(1, 2)  # (B, 3, 16, h, w)
    prev = torch.cat([zs[:, :1], zs[:, :-1]], 1)  # latent 0 is its own predecessor
    b, t = zs.shape[:2]
    out = codec.decode_pairs(zs.flatten(0, 1), prev.flatten(0, 1)).view(b, t, 4, 3, *x.shape[3:])
    target = codec.groups(x).view(b, t, 4, 3, *x.shape[3:])
    return pixel_loss(out, target) + 1e-4 * z.pow(2).mean()


def pixel_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 + MSE on decoded pixels in [-1, 1]."""
    return (out - target).abs().mean() + (out - target).pow(2).mean()


@torch.no_grad()
def set_latent_stats(codec: DemoCodec, videos: np.ndarray) -> None:
    raw = torch.cat([codec.encode_raw(to_video(videos[i:i + 16]).to(codec.device))
                     for i in range(0, len(videos), 16)])
    codec.latent_mean.copy_(raw.mean(dim=(0, 2, 3, 4)))
    codec.latent_std.copy_(raw.std(dim=(0, 2, 3, 4)))


@torch.no_grad()
def round_trip_psnr(codec: DemoCodec, videos: np.ndarray) -> float:
    """PSNR (dB) of the uint8 round trip of whole clips (N, 1+4k, H, W, 3)."""
    x = to_video(videos).to(codec.device)
    y = codec.decode(codec.encode(x))
    y8 = ((y.clamp(-1, 1) + 1) * 127.5).round()
    mse = (y8 - (x + 1) * 127.5).pow(2).mean().item()
    return 10 * np.log10(255**2 / mse)


def save(codec: DemoCodec, path: Path) -> None:
    save_file({k: v.contiguous() for k, v in codec.state_dict().items()}, str(path),
              metadata={"format": "knot_forcing.demo_codec.v2"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips", type=int, default=300)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--decoder-width", type=int, help="the decoder's width (default: --width)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--latent-noise", type=float, default=0.01, help="latent noise during training, times its std")
    p.add_argument("--decoder-only", type=Path, help="fine-tune this codec's decoder; encoder and stats frozen")
    p.add_argument("--size", type=int, default=DEMO_SIZE,
                   help=f"frame side of the clips in pixels, a multiple of 16 (shipped: {DEMO_SIZE})")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="torch device to train on (cuda: untested so far, no GPU was lent)")
    args = p.parse_args()
    if (problem := demo_size_problem(args.size)) is not None:
        p.error(problem)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    videos = make_clips(args.clips, args.seed, 25, args.size).videos
    held_out = make_clips(8, args.seed + 1000, 25, args.size).videos
    log.info("rendered %d clips in %.0f s", len(videos), time.perf_counter() - started)
    codec = DemoCodec(CodecConfig(width=args.width, decoder_width=args.decoder_width)).to(args.device)
    rng, trained = np.random.default_rng(args.seed + 1), codec.parameters()
    if args.decoder_only is not None:
        state = load_file(str(args.decoder_only))
        if CodecConfig.of_state(state).dec_width != codec.cfg.dec_width:  # a new, wider decoder: start it fresh
            state = {k: v for k, v in state.items() if not k.startswith("decoder")} | {
                k: v for k, v in codec.state_dict().items() if k.startswith("decoder")}
        codec.load_state_dict(state, strict=True)
        codec.encoder.requires_grad_(False)
        codec.encoder_skip.requires_grad_(False)
        trained = [*codec.decoder.parameters(), *codec.decoder_skip.parameters()]
    opt = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    losses, psnrs = [], []
    for step in range(args.steps):
        loss = step_loss(codec, crops(videos, args.batch, rng).to(args.device), args.latent_noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(codec.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 200 == 0 or step + 1 == args.steps:
            if args.decoder_only is None:
                set_latent_stats(codec, videos[:64])
            psnrs.append((step + 1, round(round_trip_psnr(codec, held_out), 2)))
            save(codec, args.out / "demo_codec.safetensors")
            log.info("codec step %d/%d loss %.4f held-out PSNR %.2f dB (%.0f s)", step + 1, args.steps,
                     np.mean(losses[-200:]), psnrs[-1][1], time.perf_counter() - started)
    if args.decoder_only is None:
        set_latent_stats(codec, videos)
        psnrs.append((args.steps, round(round_trip_psnr(codec, held_out), 2)))
    save(codec, args.out / "demo_codec.safetensors")
    record = {"command": f"PYTHONPATH=. python train/train_codec.py --out {args.out} --seed {args.seed} --clips "
              f"{args.clips} --steps {args.steps} --batch {args.batch} --width {args.width} --lr {args.lr} "
              + (f"--decoder-width {args.decoder_width} " if args.decoder_width else "") +
              f"--latent-noise {args.latent_noise}"
              + (f" --decoder-only {args.decoder_only}" if args.decoder_only else ""),
              "wall_s": round(time.perf_counter() - started, 1), "held_out_psnr_db": psnrs,
              "loss_curve": [round(float(np.mean(losses[i:i + 100])), 5) for i in range(0, len(losses), 100)]}
    (args.out / "codec_train_log.json").write_text(json.dumps(record, indent=1))
    log.info("done: held-out round trip %.2f dB", psnrs[-1][1])


if __name__ == "__main__":
    run_script(main)
