"""Train the shipped demo model (knot_core.demo) on procedural portraits, on the CPU, seeded and reproducible.

The shipped weights are five runs, each starting from the one before (about 25 minutes in all on one core):

    PYTHONPATH=. python train/train_demo.py --out /tmp/demo_s1 --seed 0 --clips 600 \
        --codec-steps 800 --dit-steps 700 --batch 4 --threads 1
    PYTHONPATH=. python train/train_demo.py --out /tmp/demo_s2 --seed 1 --clips 600 --codec-steps 0 \
        --dit-steps 500 --batch 4 --threads 1 --context-noise 0.3 --adapter-lr-mult 10.0 --init-from /tmp/demo_s1
    PYTHONPATH=. python train/train_demo.py --out /tmp/demo_s3 --seed 2 --clips 600 --codec-steps 0 \
        --dit-steps 1400 --batch 4 --threads 1 --context-noise 0.3 --adapter-lr-mult 5 --region-weight 8 \
        --context-drop 0.3 --add-injection --init-from /tmp/demo_s2
    PYTHONPATH=. python train/train_demo.py --out /tmp/demo_s4 --seed 3 --clips 600 --codec-steps 0 \
        --dit-steps 800 --batch 4 --threads 1 --context-noise 0.3 --adapter-lr-mult 5 --region-weight 8 \
        --context-drop 0.3 --lr 3e-4 --add-injection --init-from /tmp/demo_s3
    PYTHONPATH=. python train/train_demo.py --out knot_core/models --seed 4 --clips 600 --codec-steps 0 \
        --dit-steps 800 --batch 4 --threads 1 --context-noise 0.3 --adapter-lr-mult 5 --region-weight 8 \
        --context-drop 0.3 --lr 3e-4 --add-injection --init-from /tmp/demo_s4

(logs: knot_core/models/demo_train_log_stage{1,2,3,4}.json and demo_train_log.json for the last run; stages 1-2
were run before the injection existed, writing to knot_core/models and /tmp/runA as their logs say).

Stage 1, codec: the small autoencoder of knot_core.demo_codec on 9-frame windows of rendered clips (L1 on
pixels, latent noise injection so the decoder tolerates the DiT's imprecision); then per-channel latent
statistics make latents ~unit scale.
Stage 2, DiT (the paper's recipe as far as it applies on a CPU): each clip of 1 + 12M video frames is
L = 3M + 1 latents cut into M Knot Forcing chunks (c = 3 committed + k = 1 knot, window 6); the clip's LAST
latent is the reference ("future-facing" anchor), placed at the running-ahead index n of each chunk
(knot_core.engine.schedule.advance_reference). One forward of the engine's KnotDiT holds, per clip, M copies of
the reference (one per chunk position n), the clean latents as teacher-forced context (each attends to its
reference copy, its own committed chunk and the 6-frame window before it: the commit pass's mask) and
the M noisy chunks (reference copy, window of clean context, itself: the denoise pass's mask). Each chunk's
first frame is the knot: given in the conditioning channels (mask 0) and pinned in the noisy input, as at
inference. Few-step streaming: every chunk is trained at one of the 4 sampling timesteps (1000/750/500/250,
shift 5) with an x0 loss on all 4 frames (the knot's own prediction is fused 50/50 at inference), and the
context and knot latents get random noise (std up to 0.1) so imperfect generated context is in-distribution.
Runs 3-5, following the driving: runs 1-2 learned to copy the reference and context and ignore the
zero-initialised cross-attention (mouth r = -0.12 against the driving). Run 3 adds the position-aware
additive injection (knot_core.demo.MotionInjection), weighs the loss 1 + 8x on latent cells the mouth and eyes
touch (faces.regions), and hides the clean context from the noisy chunks of 30% of the clips, so the driving
is the only source of their motion; runs 4 and 5 repeat it at a lower learning rate (3e-4).
Writes knot_core/models/{demo.safetensors, demo_codec.safetensors, demo_train_log.json}.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from knot_core.checkpoints import load_dit
from knot_core.config import LATENT_CHANNELS
from knot_core.demo import DEMO_DIT, DEMO_SAMPLER, DEMO_SIZE, DEMO_STREAM, MotionInjection, build_demo_model, load_codec
from knot_core.demo_codec import DemoCodec
from knot_core.driving import DrivingTokens
from knot_core.engine.schedule import FlowSchedule, advance_reference
from knot_core.faces import NUM_PARAMS, DrivingFrame, Portrait, regions, render_video
from knot_core.model_file import save_knot_model
from knot_core.motion import MotionSequence
from knot_core.signals.base import wan_video_frames_of_latent

log = logging.getLogger("train_demo")
CHUNKS = 3  # M chunks per training clip -> 10 latents, 37 video frames


def make_clips(n: int, seed: int, frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n rendered clips (n, frames, H, W, 3) uint8, their driving rows (n, frames, P) and a per-frame map
    (n, frames, h, w) bool of the latent cells the mouth and eyes (faces.regions) touch."""
    rng = np.random.default_rng(seed)
    videos = np.zeros((n, frames, DEMO_SIZE, DEMO_SIZE, 3), np.uint8)
    params = np.zeros((n, frames, NUM_PARAMS), np.float32)
    cells = np.zeros((n, frames, DEMO_SIZE // 8, DEMO_SIZE // 8), bool)
    for i in range(n):
        motion = MotionSequence(int(rng.integers(1 << 30)), amount=float(rng.uniform(0.3, 1.1)))
        params[i] = motion.frames(int(rng.integers(0, 5000)), frames)
        portrait = Portrait.random(int(rng.integers(1 << 30)))
        videos[i] = render_video(portrait, params[i], DEMO_SIZE)
        for j, row in enumerate(params[i]):
            r = regions(portrait, DrivingFrame.from_vector(row), DEMO_SIZE)
            for x0, y0, x1, y1 in (r.mouth, r.eyes):
                cells[i, j, y0 // 8: -(-y1 // 8), x0 // 8: -(-x1 // 8)] = True
    return videos, params, cells


def latent_cells(cells: np.ndarray, latents: int) -> torch.Tensor:
    """Per video frame cell maps (n, V, h, w) -> per latent frame (n, L, h, w): union over its 4 video frames."""
    idx = np.array([wan_video_frames_of_latent(k) for k in range(latents)])  # (L, 4)
    return torch.from_numpy(cells[:, idx].any(2))


def to_video(clips: np.ndarray) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(clips).float().div(127.5).sub(1).permute(0, 4, 1, 2, 3)


def train_codec(codec: DemoCodec, videos: np.ndarray, steps: int, batch: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed + 1)
    opt = torch.optim.AdamW(codec.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    losses = []
    for step in range(steps):
        idx = rng.integers(0, len(videos), batch)
        start = rng.integers(0, (videos.shape[1] - 9) // 4 + 1, batch) * 4
        x = to_video(np.stack([videos[i, s:s + 9] for i, s in zip(idx, start, strict=True)]))  # (B, 3, 9, H, W)
        z = codec.encode_raw(x)  # (B, 16, 3, h, w)
        zn = z + 0.1 * z.detach().std() * torch.randn_like(z)
        zs = zn.transpose(1, 2)  # (B, 3, 16, h, w)
        prev = torch.cat([zs[:, :1], zs[:, :-1]], 1)
        out = codec.decode_pairs(zs.flatten(0, 1), prev.flatten(0, 1)).view(batch, 3, 4, 3, *x.shape[3:])
        target = codec.groups(x).view(batch, 3, 4, 3, *x.shape[3:])
        loss = (out - target).abs().mean() + 1e-4 * z.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log.info("codec step %d/%d loss %.4f", step, steps, np.mean(losses[-100:]))
    return losses


@torch.no_grad()
def encode_all(codec: DemoCodec, videos: np.ndarray) -> torch.Tensor:
    raw = torch.cat([codec.encode_raw(to_video(videos[i:i + 32])) for i in range(0, len(videos), 32)])
    codec.latent_mean.copy_(raw.mean(dim=(0, 2, 3, 4)))
    codec.latent_std.copy_(raw.std(dim=(0, 2, 3, 4)))
    m, s = codec.latent_mean.view(1, -1, 1, 1, 1), codec.latent_std.view(1, -1, 1, 1, 1)
    return (raw - m) / s  # (N, 16, L, h, w)


def sequence_layout(m_chunks: int):
    """Frame roles, positions and the frame-level attention mask of one teacher-forced training sequence.

    Frames: M reference copies | 3M clean context latents | M noisy chunks of 4. Returns (positions (F,),
    mask (F, F) bool query x key, chunk index of each noisy frame).
    """
    c, k, win = DEMO_STREAM.chunk_len, DEMO_STREAM.knot_len, DEMO_STREAM.window_len
    n, refs = DEMO_STREAM.ahead_init, []
    for m in range(m_chunks):
        n = advance_reference(DEMO_STREAM, m * c, n)
        refs.append(n)
    n_ctx, span = c * m_chunks, c + k
    total = m_chunks + n_ctx + m_chunks * span
    ctx0, noisy0 = m_chunks, m_chunks + n_ctx
    mask = torch.zeros(total, total, dtype=torch.bool)
    pos = torch.zeros(total, dtype=torch.float64)
    for m in range(m_chunks):
        mask[m, m] = True
        pos[m] = refs[m]
        lo = max(0, m * c - win)
        for j in range(m * c, m * c + c):  # commit pass of chunk m
            mask[ctx0 + j, m] = True
            mask[ctx0 + j, ctx0 + lo: ctx0 + m * c + c] = True
            pos[ctx0 + j] = j
        rows = slice(noisy0 + m * span, noisy0 + (m + 1) * span)  # denoise pass of chunk m
        mask[rows, m] = True
        mask[rows, ctx0 + lo: ctx0 + m * c] = True
        mask[rows, rows] = True
        pos[rows] = torch.arange(m * c, m * c + span, dtype=torch.float64)
    return pos, mask


def driving_rows(params: torch.Tensor, latents: int) -> torch.Tensor:
    """(B, V, P) per video frame -> (B, L, 4, P) per latent frame (Wan's latent/video alignment)."""
    idx = torch.tensor([wan_video_frames_of_latent(k) for k in range(latents)])  # (L, 4)
    return params[:, idx]


def build_batch(lat: torch.Tensor, params: torch.Tensor, sched: FlowSchedule, gen: torch.Generator,
                context_noise: float = 0.1):
    """Model input, timesteps, x0 target and driving features of a batch of clips (B, 16, 3M+1, h, w)."""
    b, ch, L, h, w = lat.shape
    c, span, m_chunks = DEMO_STREAM.chunk_len, DEMO_STREAM.span, CHUNKS
    ref = lat[:, :, -1:]  # the clip's last latent: the future-facing anchor
    aug = torch.rand(b, 1, 1, 1, 1, generator=gen) * context_noise
    noisy_ctx = lat + aug * torch.randn(lat.shape, generator=gen)  # imperfect context / knots
    ctx = noisy_ctx[:, :, : c * m_chunks]
    chunk_ids = torch.arange(m_chunks)[:, None] * c + torch.arange(span)[None]  # (M, 4) latent indices
    x0 = lat[:, :, chunk_ids.flatten()]  # (B, 16, 4M, h, w)
    steps = torch.tensor([sched.warp(s) for s in DEMO_STREAM.steps], dtype=torch.float64)
    t_chunk = steps[torch.randint(0, len(steps), (b, m_chunks), generator=gen)]  # (B, M)
    t_noisy = t_chunk.repeat_interleave(span, dim=1)  # (B, 4M)
    sigma = sched.sigma(t_noisy)[:, None, :, None, None].float()
    eps = torch.randn(x0.shape, generator=gen)
    knot = torch.zeros(1, 1, x0.shape[2], 1, 1)
    knot[:, :, ::span] = 1  # each chunk's first frame is known (knot / start)
    known = noisy_ctx[:, :, chunk_ids.flatten()]
    x_noisy = (1 - sigma) * torch.where(knot > 0, known, x0) + sigma * eps
    cond_noisy = torch.where(knot > 0, known, ref.expand_as(x0))
    cond_ctx = torch.where(torch.arange(ctx.shape[2]).view(1, 1, -1, 1, 1) % c == 0, ctx, ref.expand_as(ctx))
    refs = ref.expand(-1, -1, m_chunks, -1, -1)
    x = torch.cat([refs, ctx, x_noisy], 2)  # (B, 16, F, h, w)
    cond = torch.cat([refs, cond_ctx, cond_noisy], 2)
    gen_mask = torch.cat([torch.zeros(1, 1, m_chunks), (torch.arange(ctx.shape[2]) % c != 0).float().view(1, 1, -1),
                          1 - knot.view(1, 1, -1)], 2).view(1, 1, -1, 1, 1).expand(b, 1, -1, h, w)
    x_in = torch.cat([x, cond, gen_mask], 1)  # (B, 33, F, h, w) noise | known/reference | mask (1 = generate)
    t = torch.cat([torch.zeros(b, m_chunks + ctx.shape[2], dtype=torch.float64), t_noisy], 1)  # (B, F)
    rows = driving_rows(params, L)  # (B, L, 4, P)
    feats = torch.cat([torch.zeros_like(rows[:, :m_chunks]), rows[:, : ctx.shape[2]], rows[:, chunk_ids.flatten()]], 1)
    return x_in, t, x0, sigma, feats, chunk_ids


def batch_mask(frame_mask: torch.Tensor, tokens: int, drop: torch.Tensor) -> torch.Tensor:
    """Token-level mask (B, 1, F*S, F*S); clips with drop=True hide the clean context from the noisy chunks
    (they see only their reference copy and themselves), so the driving is their only source of motion."""
    masks = frame_mask[None].repeat(len(drop), 1, 1)  # (B, F, F)
    noisy0 = CHUNKS + DEMO_STREAM.chunk_len * CHUNKS  # first noisy frame: after the reference copies and context
    masks[drop, noisy0:, CHUNKS:noisy0] = False
    return masks.repeat_interleave(tokens, 1).repeat_interleave(tokens, 2)[:, None]


@dataclass(frozen=True)
class DitRecipe:
    steps: int
    batch: int
    seed: int
    context_noise: float = 0.1
    adapter_lr_mult: float = 1.0
    region_weight: float = 0.0  # extra loss weight on latent cells of the mouth and eyes
    context_drop: float = 0.0  # probability per clip of hiding the clean context from the noisy chunks
    lr: float = 1e-3


def train_dit(model, latents: torch.Tensor, params: torch.Tensor, cells: torch.Tensor, recipe: DitRecipe,
              checkpoint: Path | None = None) -> list[float]:
    gen = torch.Generator().manual_seed(recipe.seed + 2)
    sched = FlowSchedule(DEMO_STREAM.shift)
    pos, frame_mask = sequence_layout(CHUNKS)
    tokens = int(np.prod(DEMO_DIT.grid(DEMO_SIZE // 8, DEMO_SIZE // 8)))
    active = torch.ones(len(pos), dtype=torch.bool)
    active[:CHUNKS] = False  # reference copies carry no driving signal
    adapter_params = list(model.driving.parameters())
    ids = {id(q) for q in adapter_params}
    groups = [{"params": [q for q in model.parameters() if id(q) not in ids]}, {"params": adapter_params}]
    max_lr = [recipe.lr, recipe.lr * recipe.adapter_lr_mult]
    opt = torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=0.01)
    lr = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=recipe.steps, pct_start=0.1)
    text_kv_fn, losses, n_noisy = model.encode_text, [], CHUNKS * DEMO_STREAM.span
    for step in range(recipe.steps):
        idx = torch.randint(0, len(latents), (recipe.batch,), generator=gen)
        x_in, t, x0, sigma, feats, chunk_ids = build_batch(latents[idx], params[idx], sched, gen,
                                                           recipe.context_noise)
        drop = torch.zeros(recipe.batch, dtype=torch.bool)
        if recipe.context_drop:  # drawn only when used: runs without it replay the earlier stages' random stream
            drop = torch.rand(recipe.batch, generator=gen) < recipe.context_drop
        driving = DrivingTokens({name: a.encode(feats) for name, a in model.driving.items()}, active)
        v = model(x_in, t, frame_positions=pos, text_kv=text_kv_fn(None, recipe.batch),
                  attn_mask=batch_mask(frame_mask, tokens, drop), driving=driving)[:, :, -n_noisy:]  # (B,16,4M,h,w)
        pred = x_in[:, :LATENT_CHANNELS, -n_noisy:] - sigma * v
        weight = 1 + recipe.region_weight * cells[idx][:, None, chunk_ids.flatten()].float()  # (B, 1, 4M, h, w)
        loss = ((pred - x0).pow(2) * weight).mean() / weight.mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lr.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == recipe.steps - 1:
            log.info("dit step %d/%d loss %.4f", step, recipe.steps, np.mean(losses[-50:]))
        if checkpoint is not None and (step + 1) % 100 == 0:  # a run cut short still leaves usable weights
            save_knot_model(model, checkpoint, sampler=DEMO_SAMPLER)
    return losses


def curve(losses: list[float], points: int = 20) -> list[float]:
    size = max(1, len(losses) // points)
    return [round(float(np.mean(losses[i:i + size])), 5) for i in range(0, len(losses), size)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("knot_core/models"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips", type=int, default=600)
    p.add_argument("--codec-steps", type=int, default=800)
    p.add_argument("--dit-steps", type=int, default=700)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--context-noise", type=float, default=0.1, help="max std of the noise on context/knot latents")
    p.add_argument("--adapter-lr-mult", type=float, default=1.0, help="learning-rate factor of the motion adapter")
    p.add_argument("--region-weight", type=float, default=0.0, help="extra loss weight on mouth/eye latent cells")
    p.add_argument("--context-drop", type=float, default=0.0, help="probability of hiding the context per clip")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--add-injection", action="store_true", help="give the model the additive motion injection")
    p.add_argument("--init-from", type=Path, help="fine-tune: start from demo.safetensors/demo_codec.safetensors here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    videos, params, cells = make_clips(args.clips, args.seed, 1 + 4 * DEMO_STREAM.chunk_len * CHUNKS)
    log.info("rendered %d clips in %.0f s", len(videos), time.perf_counter() - started)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.init_from is None:
        codec = DemoCodec()
        codec_losses = train_codec(codec, videos, args.codec_steps, 12, args.seed)
        codec.eval()
    else:  # fine-tune: the codec of the earlier run stays as it is (its latent statistics are recomputed alike)
        codec, codec_losses = load_codec(args.init_from / "demo_codec.safetensors"), []
    latents = encode_all(codec, videos)
    save_file({k: v.contiguous() for k, v in codec.state_dict().items()}, str(args.out / "demo_codec.safetensors"),
              metadata={"format": "knot_forcing.demo_codec.v1"})
    codec_s = time.perf_counter() - started
    if args.init_from is None:
        model = build_demo_model(args.seed, injection=args.add_injection)
    else:
        model = load_dit(args.init_from / "demo.safetensors", dtype=torch.float32)[0].requires_grad_(True).train()
        if args.add_injection and "inject" not in model.driving:  # stage 3 adds it to the stage-2 model
            torch.manual_seed(args.seed)
            model.add_adapter("inject", MotionInjection())
    recipe = DitRecipe(args.dit_steps, args.batch, args.seed, args.context_noise, args.adapter_lr_mult,
                       args.region_weight, args.context_drop, args.lr)
    dit_losses = train_dit(model, latents, torch.from_numpy(params), latent_cells(cells, latents.shape[2]), recipe,
                           args.out / "demo.safetensors")
    model.eval()
    save_knot_model(model, args.out / "demo.safetensors", sampler=DEMO_SAMPLER)
    wall = time.perf_counter() - started
    flags = [f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
             for k, v in vars(args).items() if v is not None and v is not False]
    record = {"command": "PYTHONPATH=. python train/train_demo.py " + " ".join(flags), "wall_s": round(wall, 1),
        "codec_wall_s": round(codec_s, 1), "codec_loss_curve": curve(codec_losses), "dit_loss_curve": curve(dit_losses)}
    (args.out / "demo_train_log.json").write_text(json.dumps(record, indent=1))
    log.info("done in %.0f s", wall)


if __name__ == "__main__":
    main()
