"""Long-video quality of each streaming strategy on the shipped demo model, against exact ground truth.

    python bench/quality.py --frames 10000 --threads 1 --json docs/quality/quality.json

Runs self_forcing, longlive, rolling_forcing, knot with k = 0, knot without running ahead and full knot
on one driving sequence (seeded MotionSequence, the demo portrait, the same noise seed) and measures,
chunk by chunk (the video is never held whole), with knot_core.quality_metrics:
  boundary discontinuity (cross-boundary / within-chunk mean absolute frame difference, 1.0 = seamless),
  drift (PSNR and SSIM against the ground-truth rendering, per segment, first vs last),
  driving fidelity (mouth opening and head centre measured from pixels, mapped to driving units by a
  linear fit on ground truth, against the driving input: Pearson r and mean absolute error),
  speed (video frames per second of generation + decoding, metrics excluded).
Prints a markdown table, writes it to --out-dir/quality.md and a plot of the metrics over time to
--out-dir/quality.png (drawn with OpenCV). The model is whatever knot_core.demo ships.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from knot_core.config import VAE_STRIDE, StreamConfig  # noqa: E402
from knot_core.demo import DEMO_PORTRAIT_SEED, DEMO_SIZE, demo_reference, load_demo, torch_threads  # noqa: E402
from knot_core.demo_codec import StreamingDecoder  # noqa: E402
from knot_core.engine.stream import StreamInputs, generate, start_stream  # noqa: E402
from knot_core.faces import PARAM_NAMES, DrivingFrame, Portrait, regions, render_video  # noqa: E402
from knot_core.motion import MotionSequence, MotionSignal  # noqa: E402
from knot_core.quality_metrics import (  # noqa: E402
    Agreement,
    BoundaryMeter,
    LinearMap,
    mouth_darkness,
    psnr,
    skin_centroid,
    ssim,
)
from knot_core.video_writer import frames_from_decoder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MOUTH = PARAM_NAMES.index("mouth_open")
MOTION_AMOUNT = 0.8  # the demo's head-motion amplitude (knot_core.demo.demo_motion)
RUNS = ("self_forcing", "longlive", "rolling_forcing", "knot_k0", "knot_no_ahead", "knot")
COLOURS = {"self_forcing": (40, 40, 220), "longlive": (0, 150, 255), "rolling_forcing": (170, 60, 170),
           "knot_k0": (200, 160, 0), "knot_no_ahead": (60, 170, 60), "knot": (0, 0, 0),
           "still_reference": (150, 150, 150)}  # BGR


def run_config(run: str, demo: StreamConfig) -> StreamConfig:
    """Each run's settings: the demo's c, window, steps and shift, adjusted per strategy."""
    shared = {"chunk_len": demo.chunk_len, "window_len": demo.window_len, "steps": demo.steps, "shift": demo.shift}
    if run in ("self_forcing", "longlive", "rolling_forcing"):
        return StreamConfig.for_strategy(run, **shared)
    knot = demo.replace(**shared)
    return {"knot_k0": knot.replace(knot_len=0), "knot_no_ahead": knot.replace(running_ahead=False),
            "knot": knot}[run]


def describe(cfg: StreamConfig) -> str:
    parts = [f"c={cfg.chunk_len}", f"k={cfg.knot_len}", f"L={cfg.window_len}", f"{len(cfg.steps)} steps"]
    if cfg.sink_len:
        parts.append(f"sink={cfg.sink_len}")
    if cfg.uses_reference_anchor:
        parts.append(f"ahead={cfg.ahead_init}+{cfg.ahead_step}" if cfg.running_ahead else "anchor fixed")
    return ", ".join(parts)


@dataclass(frozen=True)
class Calibration:
    """Pixel measurements -> driving units, fitted on ground-truth renderings of the same sequence."""

    mouth: LinearMap  # mouth-box darkness -> mouth_open
    head_x: LinearMap  # skin centroid x -> face centre x (px)
    head_y: LinearMap


@dataclass
class Meters:
    """Everything measured over one stretch of frames (a plot bin, a segment, or the whole run)."""

    boundary: BoundaryMeter
    psnr_sum: float = 0.0
    ssim_sum: float = 0.0
    frames: int = 0
    mouth: Agreement = field(default_factory=Agreement)
    head_err_sum: float = 0.0  # euclidean px between measured and true face centre
    head_n: int = 0

    def update(self, video: np.ndarray, truth: np.ndarray, mouth_est, mouth_true, head_est, head_true) -> None:
        self.boundary.update(video)
        self.psnr_sum += float(psnr(video, truth).sum())
        self.ssim_sum += float(ssim(video, truth).sum())
        self.frames += len(video)
        self.mouth.update(mouth_est, mouth_true)
        err = np.linalg.norm(head_est - head_true, axis=1)
        err = err[np.isfinite(err)]
        self.head_err_sum, self.head_n = self.head_err_sum + float(err.sum()), self.head_n + len(err)

    def summary(self) -> dict:
        n = max(self.frames, 1)
        return {"frames": self.frames, "boundary_ratio": self.boundary.ratio,
                "latent_boundary_ratio": self.boundary.latent_ratio,
                "frame_diff": self.boundary.within_mean, "psnr": self.psnr_sum / n,
                "ssim": self.ssim_sum / n, "mouth_r": self.mouth.r, "mouth_mae": self.mouth.mae,
                "head_err_px": self.head_err_sum / self.head_n if self.head_n else math.nan}


def measure(frames: np.ndarray, rows: np.ndarray, portrait: Portrait, cal: Calibration):
    """Calibrated mouth opening (T,) and head centre (T, 2) measured from frames, plus their truths."""
    geo = [regions(portrait, DrivingFrame.from_vector(r), DEMO_SIZE) for r in rows]
    mouth = cal.mouth(mouth_darkness(frames, [g.mouth for g in geo]))
    cen = skin_centroid(frames, portrait.skin)  # (T, 2)
    head = np.stack([cal.head_x(cen[:, 0]), cal.head_y(cen[:, 1])], axis=1)  # (T, 2)
    return mouth, rows[:, MOUTH], head, np.array([g.face_centre for g in geo])


def calibrate(portrait: Portrait, motion: MotionSequence, frames: int, chunk_frames: int) -> tuple[Calibration, dict]:
    """The pixel -> driving fits, and the metrics of the ground truth itself (what a perfect model scores)."""
    rows = motion.frames(0, frames)
    truth = render_video(portrait, rows, DEMO_SIZE)
    geo = [regions(portrait, DrivingFrame.from_vector(r), DEMO_SIZE) for r in rows]
    dark = mouth_darkness(truth, [g.mouth for g in geo])
    cen, true_cen = skin_centroid(truth, portrait.skin), np.array([g.face_centre for g in geo])
    cal = Calibration(LinearMap.fit(dark, rows[:, MOUTH]), LinearMap.fit(cen[:, 0], true_cen[:, 0]),
                      LinearMap.fit(cen[:, 1], true_cen[:, 1]))
    meters, parts = Meters(BoundaryMeter(frames_per_latent=VAE_STRIDE[0])), measure(truth, rows, portrait, cal)
    for i in range(0, frames, chunk_frames):
        meters.update(truth[i:i + chunk_frames], truth[i:i + chunk_frames], *(p[i:i + chunk_frames] for p in parts))
    return cal, meters.summary()


def stream_chunks(cfg, model, codec, reference, motion, seed):
    """Decoded video chunks (T, H, W, 3) uint8 of one strategy, each with its generation + decoding seconds."""
    inputs = StreamInputs(latent_size=tuple(reference.shape[3:]), reference=reference,
                          signals=(MotionSignal(motion),))
    state = start_stream(model, cfg, inputs, seed=seed)
    decoder = StreamingDecoder(codec)
    stream = generate(model, cfg, inputs, state)
    while True:
        started = time.perf_counter()
        video = frames_from_decoder(decoder.decode(next(stream).latents)).numpy()  # (T, H, W, 3)
        yield video, time.perf_counter() - started


def still_chunks(codec, reference, chunk_frames: int):
    """The baseline that ignores the driving: the decoded reference image, repeated."""
    still = frames_from_decoder(StreamingDecoder(codec).decode(reference)).numpy()  # (1, H, W, 3)
    while True:
        yield np.repeat(still, chunk_frames, axis=0), 0.0


def run_one(run, settings, chunks, portrait, motion, cal, args, config=None) -> dict:
    bins: dict[int, Meters] = {}
    segments: dict[int, Meters] = {}
    whole = Meters(BoundaryMeter(frames_per_latent=VAE_STRIDE[0]))
    done, busy, last = 0, 0.0, None
    while done < args.frames:
        video, seconds = next(chunks)
        video, busy = video[: args.frames - done], busy + seconds
        rows = motion.frames(done, len(video))
        truth = render_video(portrait, rows, DEMO_SIZE)
        parts = measure(video, rows, portrait, cal)
        # a chunk counts towards the bin / segment its first frame falls in
        for table, size in ((bins, args.bin), (segments, args.segment)):
            if done // size not in table:
                table[done // size] = Meters(BoundaryMeter(last, done, VAE_STRIDE[0]))
            table[done // size].update(video, truth, *parts)
        whole.update(video, truth, *parts)
        done, last = done + len(video), video[-1]
    return {"run": run, "settings": settings, "config": config, "fps": done / busy if busy else math.nan,
            "total": whole.summary(),
            "segments": [segments[i].summary() for i in sorted(segments)],
            "bins": [{"first_frame": i * args.bin, **bins[i].summary()} for i in sorted(bins)]}


def fmt(x: float, spec: str = ".3f") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(results: list[dict], gt: dict) -> str:
    head = ("| strategy | settings | fps | boundary ratio | latent-step ratio | motion | PSNR first→last (dB) | "
            "SSIM first→last | mouth r first→last | mouth MAE first→last | head err px first→last |")
    lines = [head, "|" + "---|" * 11,
             f"| ground truth (measurement ceiling) | — | — | {fmt(gt['boundary_ratio'])} | "
             f"{fmt(gt['latent_boundary_ratio'])} | "
             f"{fmt(gt['frame_diff'], '.2f')} | ∞ | 1 | "
             f"{fmt(gt['mouth_r'])} | {fmt(gt['mouth_mae'])} | {fmt(gt['head_err_px'], '.2f')} |"]
    for r in results:
        fps = "—" if math.isnan(r["fps"]) else f"{r['fps']:.0f}"
        a, b = r["segments"][0], r["segments"][-1]
        lines.append(
            f"| {r['run']} | {r['settings']} | {fps} | {fmt(r['total']['boundary_ratio'])} | "
            f"{fmt(r['total']['latent_boundary_ratio'])} | "
            f"{fmt(r['total']['frame_diff'], '.2f')} | "
            f"{a['psnr']:.2f} → {b['psnr']:.2f} | {a['ssim']:.3f} → {b['ssim']:.3f} | "
            f"{fmt(a['mouth_r'])} → {fmt(b['mouth_r'])} | {fmt(a['mouth_mae'])} → {fmt(b['mouth_mae'])} | "
            f"{fmt(a['head_err_px'], '.2f')} → {fmt(b['head_err_px'], '.2f')} |")
    return "\n".join(lines)


def _panel(img, x0, y0, w, h, title, series, frames) -> None:
    """One line chart: series = {run: [(frame, value), ...]}; y range from the data."""
    vals = [v for pts in series.values() for _, v in pts if math.isfinite(v)]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    lo, hi = (lo - 0.5, hi + 0.5) if hi - lo < 1e-9 else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), (160, 160, 160), 1)
    cv2.putText(img, title, (x0 + 6, y0 - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    for frac in (0.0, 0.5, 1.0):
        y = int(y0 + h - frac * h)
        cv2.putText(img, f"{lo + frac * (hi - lo):.3g}", (x0 - 58, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (60, 60, 60), 1, cv2.LINE_AA)
    for frac in (0.0, 0.5, 1.0):
        cv2.putText(img, f"{int(frac * frames)}", (int(x0 + frac * w) - 14, y0 + h + 16),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    for run, pts in series.items():
        xy = [(int(x0 + f / frames * w), int(y0 + h - (v - lo) / (hi - lo) * h)) for f, v in pts if math.isfinite(v)]
        if len(xy) > 1:
            cv2.polylines(img, [np.array(xy, np.int32)], False, COLOURS.get(run, (0, 0, 0)), 2, cv2.LINE_AA)


def plot(results: list[dict], path: Path, frames: int, bin_len: int) -> None:
    img = np.full((760, 1240, 3), 255, np.uint8)
    metrics = (("psnr", "PSNR vs ground truth (dB)"), ("ssim", "SSIM vs ground truth"),
               ("boundary_ratio", "boundary / within frame difference"), ("mouth_r", "mouth r (driving fidelity)"))
    for i, (key, title) in enumerate(metrics):
        x0, y0 = 80 + (i % 2) * 600, 40 + (i // 2) * 330
        series = {r["run"]: [(b["first_frame"] + bin_len / 2, b[key]) for b in r["bins"]] for r in results}
        _panel(img, x0, y0, 520, 260, f"{title}, per {bin_len} frames", series, frames)
    for j, r in enumerate(results):
        x = 60 + j * 170
        cv2.line(img, (x, 735), (x + 24, 735), COLOURS.get(r["run"], (0, 0, 0)), 3, cv2.LINE_AA)
        cv2.putText(img, r["run"], (x + 30, 740), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def model_version() -> str:
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%h %cs %s", "--", "knot_core/models/demo.safetensors"],
                             cwd=ROOT, capture_output=True, text=True, check=True)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=10_000, help="video frames per strategy")
    ap.add_argument("--segment", type=int, default=1000, help="frames per drift/fidelity segment")
    ap.add_argument("--bin", type=int, default=250, help="frames per point of the plot")
    ap.add_argument("--calibration", type=int, default=1000, help="ground-truth frames for the pixel->driving fit")
    ap.add_argument("--seed", type=int, default=0, help="driving-motion and noise seed")
    ap.add_argument("--portrait-seed", type=int, default=DEMO_PORTRAIT_SEED)
    ap.add_argument("--no-still", dest="still", action="store_false",
                    help="leave out the still-reference baseline row")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma list from {', '.join(RUNS)}")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "quality")
    ap.add_argument("--json", type=Path, help="also write every figure (per segment and per bin) here")
    args = ap.parse_args()
    runs = [r for r in args.runs.split(",") if r]
    if unknown := sorted(set(runs) - set(RUNS)):
        ap.error(f"unknown runs {unknown}; choose from {', '.join(RUNS)}")
    if args.frames < args.segment:
        ap.error(f"--frames {args.frames} is shorter than one --segment {args.segment}")

    with torch_threads(args.threads), torch.inference_mode():
        model, info, codec = load_demo()
        portrait, reference = demo_reference(codec, args.portrait_seed)
        motion = MotionSequence(args.seed, args.frames + 64, amount=MOTION_AMOUNT)
        demo = info.stream_config()
        cal, gt = calibrate(portrait, motion, args.calibration, 4 * demo.chunk_len)
        still = still_chunks(codec, reference, 4 * demo.chunk_len)
        results = [run_one("still_reference", "no model: the reference, repeated", still, portrait, motion, cal,
                           args)] if args.still else []
        for run in runs:
            cfg = run_config(run, demo)
            chunks = stream_chunks(cfg, model, codec, reference, motion, args.seed)
            config = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(cfg).items()}
            results.append(run_one(run, describe(cfg), chunks, portrait, motion, cal, args, config))
            print(f"{run}: {results[-1]['fps']:.0f} fps, {results[-1]['total']}", file=sys.stderr)

    version = model_version()
    md = table(results, gt)
    header = (f"Demo model {version}; {args.frames} frames at {DEMO_SIZE}x{DEMO_SIZE}, 25 fps; portrait seed "
              f"{args.portrait_seed}, motion/noise seed {args.seed} (MotionSequence amount {MOTION_AMOUNT}); "
              f"segments of {args.segment} frames (first → last); {args.threads} torch thread(s).\n\n"
              "boundary ratio: mean |frame difference| across chunk boundaries / within chunks (1.0 = seamless); "
              "latent-step ratio: the same boundary steps over the within-chunk steps that also cross a latent "
              "frame (every 4th; a chunk boundary always does, so this compares like with like); "
              "motion: mean |frame difference| within chunks (0-255 levels; how much the video moves); "
              "PSNR/SSIM against the exact ground-truth rendering; mouth r / MAE: mouth opening measured from the "
              "mouth box (mapped to driving units by a fit on ground truth) vs the driving mouth_open; head err: "
              "skin-centroid face centre vs the driving's face centre (tx/ty/yaw/pitch), pixels. fps: generation "
              "+ decoding only.\n\n")
    print(header + md)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "quality.md").write_text(header + md + "\n")
    plot(results, args.out_dir / "quality.png", args.frames, args.bin)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": version, "args": {k: str(v) for k, v in vars(args).items()},
                                         "ground_truth": gt, "runs": results}))


if __name__ == "__main__":
    main()
