"""Stage 2 of the demo model: train its DiT (knot_core.demo) as it is used, on procedural portraits, seeded.

    PYTHONPATH=. python train/train_demo.py --codec RUNS/codec/demo_codec.safetensors --out RUNS/knot \
        --mode knot --clips 400 --seed 0 --cache RUNS/clips.npz --steps 300 --batch 2 --teacher-steps 60
    (the controls, each trained in its own mode: --mode k0 | --mode fixed_anchor; the full recipe with its
    continuation phases: train/recipe.sh)

Recipe. Clips of 6 chunks (19 latents of a 20-latent, 77-frame clip at 96x96; train/demo_data.py) of one identity
with idle head motion the driving signal leaves out; the reference is the same identity at the neutral pose or at a
pose drawn after the clip's end — never a frame of the clip. Each step rolls out a batch of clips through the
engine's own loop (train/rollout.py): the anchor pass, running ahead, 4-step denoising of each chunk with the knot
of the previous chunk pinned and fused, the clean commit into the window; one random denoising step per chunk
carries gradients (x0 regression to the ground-truth latents, mouth/eye cells weighted 1 + 4). Six chunks from
stream latent 0 give the anchor at offsets 8, 5, 6, 7, 4, 5 before the chunk — every offset inference's running
ahead produces (8 once, then 4..7). Warm-up: for the first --teacher-steps steps, a share of the batches falling
linearly from 1 to 0 commits the ground truth instead of the model's output (teacher forcing), after which every
chunk's context and knot are the model's own. --init-from continues a run (phases 2-3 of the recipe).
--width/--layers scale the DiT and --size renders the clips at another frame side (default the shipped 96); the
model file records all three, and everything that renders the demo reads the size from it. --still-share F draws
that share of the clips without idle motion, as the demo's own renders (recipe phase 12s). --adversarial W adds a
latent critic's hinge term (train/latent_critic.py) at weight W beside the regression, after --critic-warmup steps
of the critic alone: tried on the CPU and not in the recipe (README, "How the demo model is trained").

Modes: knot (c = 3, k = 1, running ahead: the shipped model); k0 (the same with k = 0: no knot); fixed_anchor
(k = 1, the anchor stays at index 8; clips start at a random stream latent in [1, 2500], the distances a
10,000-frame render reaches, with an empty window at their start).
Writes demo.safetensors (checkpoints every --save-every steps) and train_log.json in --out.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from demo_data import make_clips, to_video
from latent_critic import LatentCritic, critic_loss, generator_loss
from rollout import ClipBatch, rollout_loss

from knot_core.checkpoints import load_dit
from knot_core.config import StreamConfig
from knot_core.demo import (
    DEMO_DIT,
    DEMO_SAMPLER,
    DEMO_SIZE,
    DEMO_STREAM,
    build_demo_model,
    demo_size_problem,
    demo_width_problem,
    load_codec,
)
from knot_core.errors import CheckpointError, ConfigError, run_script
from knot_core.faces import PARAM_NAMES, DrivingFrame, Portrait, regions
from knot_core.model_file import SamplerDefaults, save_knot_model
from knot_core.motion import BLINK_FRAMES, FPS
from knot_core.signals.base import wan_video_frames_of_latent

log = logging.getLogger("train_demo")
CHUNKS = 6
BUDGET_MARGIN = 0.9  # of the seconds left for steps: checkpoints and the odd slow step take the rest
RENDER_BLOCK = 50  # clips per seeded block (the block seeds fix which clips a data seed gives: keep it)
CLIP_LATENTS = CHUNKS * DEMO_STREAM.chunk_len + DEMO_STREAM.knot_len + 1  # +1: fixed_anchor skips clip latent 0
MODES = ("knot", "k0", "fixed_anchor")
FIXED_ANCHOR_SPAN = 2500  # latents of a 10,000-frame render
BLINK = PARAM_NAMES.index("blink")


def blink_interval_problem(interval: list[float] | None) -> str | None:
    """The one-line complaint about a --blink-interval MotionSequence would refuse mid-render, or None."""
    shortest = 2 * BLINK_FRAMES / FPS  # MotionSequence refuses shorter slots
    if interval is None or shortest < interval[0] <= interval[1]:
        return None
    return (f"--blink-interval {interval[0]} {interval[1]}: give LO <= HI seconds, LO above {shortest:.2f} "
            f"(a blink takes {BLINK_FRAMES} frames)")


def share_and_weight_problem(still_share: float, adversarial: float) -> str | None:
    """The one-line complaint about a --still-share outside [0, 1] or a negative --adversarial, or None (either
    would otherwise train silently as something else: all clips still, or no critic)."""
    if not 0 <= still_share <= 1:
        return f"--still-share {still_share}: give a share of the clips from 0 to 1 (phase 12s: 0.5)"
    if adversarial < 0:
        return f"--adversarial {adversarial}: give a weight of 0 (no critic) or more"
    return None


def budget_problem(max_seconds: float | None, teacher_share: float | None, workers: int) -> str | None:
    """The one-line complaint about a --max-seconds, --teacher-share or --render-workers that cannot mean
    anything, or None."""
    if max_seconds is not None and max_seconds <= 0:
        return f"--max-seconds {max_seconds:g}: give the wall time in seconds the run may take (more than 0)"
    if teacher_share is not None and not 0 <= teacher_share <= 1:
        return f"--teacher-share {teacher_share:g}: give a share of the steps from 0 to 1"
    if workers < 1:
        return f"--render-workers {workers}: give 1 or more processes"
    return None


def seconds_per_step(model, cfg: StreamConfig, data: dict, mode: str, batch: int, seed: int, n: int = 4) -> float:
    """Wall time of one training step (rollout and backward) on a throwaway copy of the model with its own random
    stream, so the run it sizes draws exactly the numbers of a run given the same --steps."""
    probe, gen, times = copy.deepcopy(model), torch.Generator().manual_seed(seed), []
    for _ in range(n):
        begun = time.perf_counter()
        result = rollout_loss(probe, cfg, sample(data, cfg, mode, batch, gen, False), CHUNKS, gen)
        result.loss.backward()
        result.loss.item()  # waits for the device
        times.append(time.perf_counter() - begun)
    return float(np.median(times[1:]))  # the first step pays one-off set-up


def mode_config(mode: str) -> StreamConfig:
    return {"knot": DEMO_STREAM, "k0": DEMO_STREAM.replace(knot_len=0),
            "fixed_anchor": DEMO_STREAM.replace(running_ahead=False)}[mode]


@dataclass(frozen=True)
class ClipBlock:
    """One independently seeded block of training clips (the unit a render worker draws)."""

    n: int
    seed: int
    frames: int
    size: int
    blink_interval: tuple[float, float] | None
    still_share: float


def render_block(block: ClipBlock) -> dict[str, np.ndarray]:
    clips = make_clips(block.n, block.seed, block.frames, block.size, blink_interval=block.blink_interval,
                       still_share=block.still_share)
    return {"videos": clips.videos, "signal": clips.signal, "references": clips.references,
            "cells": region_cells(clips.portraits, clips.drawn, block.size)}


def rendered_clips(n: int, seed: int, latents: int, cache: Path | None,
                   blink_interval: tuple[float, float] | None = None, size: int = DEMO_SIZE,
                   still_share: float = 0.0, workers: int = 1) -> dict[str, np.ndarray]:
    """n rendered clips (videos, signal rows, references, mouth/eye cells per frame) of `size` pixels square, from
    `cache` if it holds exactly these (rendering is a few minutes of the CPU budget; the codec can change, the
    clips do not). The key names the size and the still share only when they are not the defaults, so existing
    caches stay valid. `workers` processes render blocks of clips side by side (the same clips)."""
    key = np.array([n, seed, latents] + ([] if blink_interval is None else list(blink_interval))
                   + ([] if size == DEMO_SIZE else [size]) + ([] if not still_share else [-1, still_share]))
    if cache is not None and cache.is_file():
        with np.load(cache) as f:
            if f["key"].shape == key.shape and np.allclose(f["key"], key):
                return dict(f)
    frames = 1 + 4 * (latents - 1)
    blocks = [ClipBlock(min(RENDER_BLOCK, n - first), seed * 100_003 + first, frames, size, blink_interval,
                        still_share) for first in range(0, n, RENDER_BLOCK)]
    if workers > 1:  # blocks are seeded apart, so any number of workers renders the same clips
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(render_block, blocks))
    else:
        parts = [render_block(block) for block in blocks]
    data = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]} | {"key": key}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **data)
    return data


@torch.no_grad()
def encode_clips(codec, data: dict[str, np.ndarray], region_weight: float,
                 blink_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Ground-truth latents of the rendered clips (by the codec, in blocks), their driving and loss weights:
    1 + region_weight on mouth/eye cells, that times 1 + blink_weight in latents where an eye closes (a rare
    event whose few cells the mean loss otherwise hardly sees)."""
    latents = 1 + (data["videos"].shape[1] - 1) // 4
    idx = np.array([wan_video_frames_of_latent(k) for k in range(latents)])  # (L, 4)
    dev = codec.device  # clips go to the codec's device 16 at a time: all of them as floats would not fit
    lat = torch.cat([codec.encode(to_video(data["videos"][i:i + 16]).to(dev)).cpu()
                     for i in range(0, len(data["videos"]), 16)])
    cells = torch.from_numpy(data["cells"][:, idx].any(2)).float()[:, None]  # (N, 1, L, h, w)
    return {"latents": lat, "reference": codec.encode(to_video(data["references"][:, None]).to(dev)).cpu(),
            "features": torch.from_numpy(data["signal"])[:, idx], "weight": 1 + region_weight * cells * (
                1 + blink_weight * blinking(data["signal"][:, idx]))}


def blinking(features: np.ndarray) -> torch.Tensor:
    """(N, 1, L, 1, 1) 1.0 where a latent's driving rows (N, L, 4, P) have an eye partly closed."""
    return torch.from_numpy((features[..., BLINK] > 0.1).any(2)).float()[:, None, :, None, None]


def region_cells(portraits: list[Portrait], drawn: np.ndarray, size: int = DEMO_SIZE) -> np.ndarray:
    """(b, V, size/8, size/8) True on latent cells that the mouth or eyes touch, per video frame."""
    h = size // 8
    cells = np.zeros((len(portraits), drawn.shape[1], h, h), bool)
    for i, portrait in enumerate(portraits):
        for t, row in enumerate(drawn[i]):
            r = regions(portrait, DrivingFrame.from_vector(row), size)
            for x0, y0, x1, y1 in (r.mouth, r.eyes):
                cells[i, t, y0 // 8: -(-y1 // 8), x0 // 8: -(-x1 // 8)] = True
    return cells


def first_clip_latent(mode: str) -> int:
    """The clip latent a mode's stream starts at: fixed_anchor streams start mid-stream, where clip latent 0 (one
    frame alone) is not a stream latent."""
    return 1 if mode == "fixed_anchor" else 0


def sample(data: dict, cfg: StreamConfig, mode: str, batch: int, gen: torch.Generator, teacher: bool,
           pick: torch.Tensor | None = None) -> ClipBatch:
    """A batch of `batch` random clips (or the clips `pick`) as `mode` trains on them."""
    if pick is None:
        pick = torch.randint(0, len(data["latents"]), (batch,), generator=gen)
    start, first = 0, first_clip_latent(mode)
    if mode == "fixed_anchor":  # anywhere in a long stream
        start = 1 + int(torch.randint(0, FIXED_ANCHOR_SPAN, (1,), generator=gen))
    return ClipBatch(data["latents"][pick, :, first:], data["reference"][pick], data["features"][pick, first:],
                     data["weight"][pick, :, first:], start, teacher)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--codec", type=Path, help="the stage-1 demo_codec.safetensors")
    p.add_argument("--cache", type=Path, help="rendered clips are kept here (.npz) and reused")
    p.add_argument("--render-only", action="store_true", help="only render the clips into --cache")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--mode", choices=MODES, default="knot")
    p.add_argument("--seed", type=int, default=0, help="initialisation, clip sampling and noise")
    p.add_argument("--data-seed", type=int, default=0, help="which clips are rendered")
    p.add_argument("--clips", type=int, default=500)
    p.add_argument("--blink-interval", type=float, nargs=2, metavar=("LO", "HI"),
                   help="seconds between blinks, drawn per clip (default 3, as every render)")
    p.add_argument("--still-share", type=float, default=0.0,
                   help="share of clips without idle head motion, as the demo's own renders (default 0)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--adapter-lr-mult", type=float, default=5.0)
    p.add_argument("--region-weight", type=float, default=4.0)
    p.add_argument("--blink-weight", type=float, default=0.0,
                   help="extra loss weight on the mouth/eye cells of latents with a blink (x (1 + this))")
    p.add_argument("--teacher-steps", type=int, default=300)
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--init-from", type=Path, help="continue from this demo.safetensors")
    p.add_argument("--width", type=int, default=DEMO_DIT.dim, help="DiT channels (heads of 32; shipped: 128)")
    p.add_argument("--layers", type=int, default=DEMO_DIT.num_layers, help="DiT blocks (shipped: 4)")
    p.add_argument("--size", type=int, default=DEMO_SIZE,
                   help=f"frame side in pixels, a multiple of 16 (shipped: {DEMO_SIZE}); the model file records it")
    p.add_argument("--adversarial", type=float, default=0.0,
                   help="weight of a latent critic's hinge term beside the x0 regression (0: none, as shipped)")
    p.add_argument("--critic-lr", type=float, default=2e-4)
    p.add_argument("--critic-steps", type=int, default=1, help="critic updates per DiT step (same batch)")
    p.add_argument("--critic-warmup", type=int, default=100, help="steps the critic trains before the DiT sees it")
    p.add_argument("--render-workers", type=int, default=1, help="processes rendering the clips (the same clips)")
    p.add_argument("--max-seconds", type=float,
                   help="instead of --steps: as many steps as fit in this wall time from the start (timed on a "
                        "throwaway copy; the log's command gives them as --steps, which repeats the run exactly)")
    p.add_argument("--teacher-share", type=float,
                   help="instead of --teacher-steps: this share of the steps (for --max-seconds runs)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="torch device to train on (cuda: untested so far, no GPU was lent)")
    args = p.parse_args()
    for problem in (blink_interval_problem(args.blink_interval), demo_width_problem(args.width, args.layers),
                    demo_size_problem(args.size), share_and_weight_problem(args.still_share, args.adversarial),
                    budget_problem(args.max_seconds, args.teacher_share, args.render_workers)):
        if problem is not None:
            p.error(problem)
    if args.codec is None and not args.render_only:
        p.error("--codec is required (the stage-1 demo_codec.safetensors from train/train_codec.py)")
    try:
        start = None if args.init_from is None or args.render_only else load_dit(args.init_from, dtype=torch.float32)[0]
    except CheckpointError as e:
        p.error(f"--init-from {args.init_from}: {e}")
    if start is not None and (start.cfg.dim, start.cfg.num_layers) != (args.width, args.layers):
        p.error(f"--init-from {args.init_from}: a model of width {start.cfg.dim} and {start.cfg.num_layers} layers; "
                f"pass --width {start.cfg.dim} --layers {start.cfg.num_layers} to continue it")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    cfg = mode_config(args.mode)
    if str(args.device).startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    data = rendered_clips(args.clips, args.data_seed, CLIP_LATENTS, args.cache,
                          None if args.blink_interval is None else tuple(args.blink_interval), args.size,
                          args.still_share, args.render_workers)
    log.info("rendered %d clips in %.0f s", args.clips, time.perf_counter() - started)
    if args.render_only:
        return
    codec = load_codec(args.codec).to(args.device)
    data = {k: v.to(args.device) for k, v in encode_clips(codec, data, args.region_weight, args.blink_weight).items()}
    log.info("encoded %d clips in %.0f s", args.clips, time.perf_counter() - started)
    model = build_demo_model(args.seed, args.width, args.layers)
    if start is not None:
        missing, unexpected = model.load_state_dict(start.state_dict(), strict=False)
        if unexpected or any(not k.endswith("row_pos") for k in missing):  # row_pos: new, starts at zero
            raise SystemExit(f"--init-from {args.init_from}: missing {missing}, unexpected {unexpected}")
    model.to(args.device).train()
    sized_by = None
    if args.max_seconds is not None:
        per_step = seconds_per_step(model, cfg, data, args.mode, args.batch, args.seed + 4)
        args.steps = int((args.max_seconds - (time.perf_counter() - started)) * BUDGET_MARGIN / per_step)
        if args.steps < 10:
            raise ConfigError(f"--max-seconds {args.max_seconds:g}: {time.perf_counter() - started:.0f} s went to "
                             f"rendering and encoding and a step takes {per_step:.2f} s, so fewer than 10 steps fit; "
                             "give more seconds or fewer --clips")
        sized_by = {"max_seconds": args.max_seconds, "seconds_per_step": round(per_step, 4)}
        log.info("a step takes %.3f s: %d steps fit in --max-seconds %g", per_step, args.steps, args.max_seconds)
    if args.teacher_share is not None:
        args.teacher_steps = round(args.teacher_share * args.steps)
    args.max_seconds = args.teacher_share = None  # the log's command: the resolved --steps and --teacher-steps
    adapter = {id(q) for q in model.driving.parameters()}
    groups = [{"params": [q for q in model.parameters() if id(q) not in adapter]},
              {"params": list(model.driving.parameters())}]
    opt = torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[args.lr, args.lr * args.adapter_lr_mult],
                                                total_steps=args.steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(args.seed + 2)
    critic = None
    if args.adversarial > 0:
        with torch.random.fork_rng(devices=[]):  # the DiT's run draws the same numbers with or without a critic
            torch.manual_seed(args.seed + 3)
            critic = LatentCritic().to(args.device).train()
        critic_opt = torch.optim.Adam(critic.parameters(), lr=args.critic_lr, betas=(0.0, 0.99))
    adv_curve, critic_curve = [], []
    sampler = SamplerDefaults(cfg, DEMO_SAMPLER.fps, (args.size, args.size))
    args.out.mkdir(parents=True, exist_ok=True)
    losses, chunk_curve = [], []
    for step in range(args.steps):
        teacher = float(torch.rand(1, generator=gen)) < 1 - step / max(args.teacher_steps, 1)
        clips = sample(data, cfg, args.mode, args.batch, gen, teacher)
        result = rollout_loss(model, cfg, clips, CHUNKS, gen)
        loss = result.loss
        if critic is not None:
            for _ in range(args.critic_steps):
                critic_opt.zero_grad()
                d_loss = critic_loss(critic, result.truth, result.predicted, clips.reference)
                d_loss.backward()
                critic_opt.step()
            critic_curve.append(d_loss.item())
            if step >= args.critic_warmup:
                g_loss = generator_loss(critic, result.predicted, clips.reference)
                loss = loss + args.adversarial * g_loss
                adv_curve.append(g_loss.item())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(result.loss.item())
        if not teacher:
            chunk_curve.append(result.chunk_losses)
        if (step + 1) % 10 == 0:
            tail = np.mean(chunk_curve[-20:], 0) if chunk_curve else []
            log.info("%s step %d/%d loss %.4f per chunk %s%s (%.0f s)", args.mode, step + 1, args.steps,
                     np.mean(losses[-10:]), np.round(tail, 3), "" if critic is None else
                     f" critic {np.mean(critic_curve[-10:]):.3f} adversarial {np.mean(adv_curve[-10:] or [0]):.3f}",
                     time.perf_counter() - started)
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            save_knot_model(model.eval(), args.out / "demo.safetensors", sampler=sampler)
            model.train()
    record = {"command": "PYTHONPATH=. python train/train_demo.py " + " ".join(
                  f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                  for k, v in vars(args).items() if v is not None and not isinstance(v, bool)),
              "wall_s": round(time.perf_counter() - started, 1),
              **({} if sized_by is None else {"sized_by": sized_by}),
              "loss_curve": [round(float(np.mean(losses[i:i + 50])), 5) for i in range(0, len(losses), 50)],
              "self_rollout_loss_per_chunk_last_50": np.round(np.mean(chunk_curve[-50:], 0), 5).tolist()
              if chunk_curve else []}
    (args.out / "train_log.json").write_text(json.dumps(record, indent=1))
    log.info("done in %.0f s", time.perf_counter() - started)


if __name__ == "__main__":
    run_script(main)
