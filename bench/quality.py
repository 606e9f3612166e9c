"""Long-video quality of each streaming strategy on the demo model, against exact ground truth.

    python bench/quality.py --frames 10000 --threads 1 --json docs/quality/quality.json

One driving sequence (seeded MotionSequence with idle head motion the driving signal leaves out, and blinks at
random times), the demo portrait, one noise seed. Rows: the ground truth and its codec round trip (ceilings),
the still reference (a floor), then self_forcing, longlive, rolling_forcing, knot with k = 0, knot with the anchor
fixed, and full knot. knot_k0 and knot_no_ahead run the control models trained in their own mode
(knot_core/models/demo_k0.safetensors, demo_fixed_anchor.safetensors) when present; every other row runs the
shipped model (trained only as full knot). Every row is measured chunk by chunk (the video is never held whole)
with knot_core.quality_metrics, on its frames as made and (the driving) from the MP4 they are written to:
  latent-step ratio: mean |frame step| across chunk boundaries over within-chunk steps that also cross a latent
    (every 4th frame; a chunk boundary always does), with a 95% bootstrap interval over chunks; 1.0 = seamless.
    The pixel boundary ratio (over all within-chunk steps) is printed beside it only to show why it misleads:
    3 of 4 within-chunk steps stay inside one latent's four decoded frames, which the codec draws smoother
    than any step between latents, so even the ground truth's round trip scores > 1 on it;
  identity: colour-histogram L1 distance of each frame to the reference image (0-2), its mean and its
    least-squares drift per 1,000 frames;
  drift: PSNR / SSIM against the ground truth, first and last segment;
  driving r: mouth opening (mouth-box darkness), blink (eye-box darkness) and head x (skin centroid), mapped to
    driving units by linear fits on ground truth, against the drawn driving;
  fps: generation + decoding (the MP4 writing and metrics excluded).
Writes --out-dir/quality.md (table), quality.png (all strategies), <row>.png (one plot per strategy) and
contact_sheet.png (frames across a chunk boundary, every row beside the ground truth).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from knot_core.checkpoints import load_dit  # noqa: E402
from knot_core.config import VAE_STRIDE, StreamConfig  # noqa: E402
from knot_core.demo import (  # noqa: E402
    DEMO_PORTRAIT_SEED,
    MODELS_DIR,
    demo_files,
    demo_reference,
    demo_size,
    load_demo,
    torch_threads,
)
from knot_core.demo_codec import StreamingDecoder  # noqa: E402
from knot_core.engine.stream import StreamInputs, generate, start_stream  # noqa: E402
from knot_core.errors import InputError, run_script  # noqa: E402
from knot_core.faces import PARAM_NAMES, DrivingFrame, Portrait, regions, render, render_video  # noqa: E402
from knot_core.motion import FPS, MotionSequence, MotionSignal  # noqa: E402
from knot_core.quality_metrics import (  # noqa: E402
    Agreement,
    BoundaryMeter,
    LinearMap,
    Trend,
    bootstrap_ratio,
    histogram_distance,
    mouth_darkness,
    psnr,
    skin_centroid,
    ssim,
)
from knot_core.video_writer import VideoWriter, frames_from_decoder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MOUTH, BLINK = PARAM_NAMES.index("mouth_open"), PARAM_NAMES.index("blink")
MOTION_AMOUNT = 0.8  # the demo's head-motion amplitude (knot_core.demo.demo_motion)
IDLE = 1.0  # idle head motion (knot_core.motion.IDLE_GAIN), drawn but not in the driving signal
RUNS = ("self_forcing", "longlive", "rolling_forcing", "knot_k0", "knot_no_ahead", "knot")
CONTROLS = {"knot_k0": "demo_k0.safetensors", "knot_no_ahead": "demo_fixed_anchor.safetensors"}
COLOURS = {"self_forcing": (40, 40, 220), "longlive": (0, 150, 255), "rolling_forcing": (170, 60, 170),
           "knot_k0": (200, 160, 0), "knot_no_ahead": (60, 170, 60), "knot": (0, 0, 0),
           "still_reference": (150, 150, 150), "ground_truth": (0, 200, 0), "codec_round_trip": (120, 120, 120)}


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
    else:
        parts.append("no anchor")
    return ", ".join(parts)


@dataclass(frozen=True)
class Calibration:
    """Pixel measurements -> driving units, fitted on ground-truth renderings of the same sequence."""

    mouth: LinearMap  # mouth-box darkness -> mouth_open
    blink: LinearMap  # eye-box darkness (open eyes show dark pupils) -> blink
    head_x: LinearMap  # skin centroid x -> face centre x (px)


@dataclass
class Meters:
    """Everything measured over one stretch of frames (a plot bin, a segment, or the whole run)."""

    boundary: BoundaryMeter
    psnr_sum: float = 0.0
    ssim_sum: float = 0.0
    frames: int = 0
    mouth: Agreement = field(default_factory=Agreement)
    blink: Agreement = field(default_factory=Agreement)
    head: Agreement = field(default_factory=Agreement)
    identity: Trend = field(default_factory=Trend)

    def update(self, first: int, video: np.ndarray, truth: np.ndarray, identity: np.ndarray) -> None:
        """Pixel metrics of frames first.. as made."""
        self.boundary.update(video)
        self.psnr_sum += float(psnr(video, truth).sum())
        self.ssim_sum += float(ssim(video, truth).sum())
        self.frames += len(video)
        self.identity.update(first, identity)

    def follow(self, m: dict) -> None:
        """Driving measured from the decoded MP4 (`measure`)."""
        self.mouth.update(m["mouth"], m["mouth_true"])
        self.blink.update(m["blink"], m["blink_true"])
        self.head.update(m["head_x"], m["head_x_true"])

    def summary(self) -> dict:
        n = max(self.frames, 1)
        return {"frames": self.frames, "latent_step_ratio": self.boundary.latent_ratio,
                "boundary_ratio": self.boundary.ratio, "frame_diff": self.boundary.within_mean,
                "psnr": self.psnr_sum / n, "ssim": self.ssim_sum / n, "mouth_r": self.mouth.r,
                "blink_r": self.blink.r, "head_r": self.head.r, "identity": self.identity.mean,
                "identity_drift_per_1000": 1000 * self.identity.slope}


def measure(frames: np.ndarray, rows: np.ndarray, portrait: Portrait, cal: Calibration) -> dict:
    """Calibrated mouth, blink and head x measured from frames, and their truths."""
    geo = [regions(portrait, DrivingFrame.from_vector(r), frames.shape[1]) for r in rows]
    return {"mouth": cal.mouth(mouth_darkness(frames, [g.mouth for g in geo])), "mouth_true": rows[:, MOUTH],
            "blink": cal.blink(mouth_darkness(frames, [g.eyes for g in geo])), "blink_true": rows[:, BLINK],
            "head_x": cal.head_x(skin_centroid(frames, portrait.skin)[:, 0]),
            "head_x_true": np.array([g.face_centre[0] for g in geo])}


def calibrate(portrait: Portrait, motion: MotionSequence, frames: int, side: int) -> Calibration:
    rows = motion.frames(0, frames)
    truth = render_video(portrait, rows, side)
    geo = [regions(portrait, DrivingFrame.from_vector(r), side) for r in rows]
    return Calibration(LinearMap.fit(mouth_darkness(truth, [g.mouth for g in geo]), rows[:, MOUTH]),
                       LinearMap.fit(mouth_darkness(truth, [g.eyes for g in geo]), rows[:, BLINK]),
                       LinearMap.fit(skin_centroid(truth, portrait.skin)[:, 0], [g.face_centre[0] for g in geo]))


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


def truth_chunks(portrait, motion, chunk_frames: int, side: int):
    """The ground truth itself, chunk by chunk (first chunk 1 + 4(c-1) frames, as a stream's)."""
    done, size = 0, chunk_frames - VAE_STRIDE[0] + 1
    while True:
        yield render_video(portrait, motion.frames(done, size), side), 0.0
        done, size = done + size, chunk_frames


def codec_chunks(codec, portrait, motion, chunk_frames: int, side: int):
    """The ground truth through the codec (encode, decode), chunk by chunk: the ceiling of any model."""
    decoder, done, size = StreamingDecoder(codec), 0, chunk_frames - VAE_STRIDE[0] + 1
    while True:
        started = time.perf_counter()
        # encode 1 + 4k frames: for later chunks a dummy first frame (latent 0) is encoded and dropped
        first = done - 1 if done else 0
        video = render_video(portrait, motion.frames(first, done + size - first), side)
        x = torch.from_numpy(video).float().div(127.5).sub(1).permute(3, 0, 1, 2)[None]  # (1, 3, T, H, W)
        latents = codec.encode(x)[:, :, (1 if done else 0):]
        yield frames_from_decoder(decoder.decode(latents)).numpy(), time.perf_counter() - started
        done, size = done + size, chunk_frames


def still_chunks(codec, reference, chunk_frames: int):
    """The baseline that ignores the driving: the decoded reference image, repeated."""
    still = frames_from_decoder(StreamingDecoder(codec).decode(reference)).numpy()  # (1, H, W, 3)
    first = True
    while True:
        yield np.repeat(still, chunk_frames - (VAE_STRIDE[0] - 1 if first else 0), axis=0), 0.0
        first = False


def read_chunks(path: Path, sizes: list[int]):
    """The decoded MP4's frames, regrouped into the stream's chunks."""
    with av.open(str(path)) as container:
        frames = (f.to_ndarray(format="rgb24") for f in container.decode(video=0))
        for size in sizes:
            yield np.stack([next(frames) for _ in range(size)])


@dataclass(frozen=True)
class Setup:
    portrait: Portrait
    motion: MotionSequence
    cal: Calibration
    ref_img: np.ndarray  # (H, W, 3) the reference image, at the model's size
    sheet_at: int  # first frame of the chunk the contact sheet centres on


def run_one(run, settings, chunks, setup: Setup, args, tmp: Path, config=None) -> tuple[dict, np.ndarray]:
    """Pixel metrics on the frames as made (PSNR, SSIM, seams, identity), then the driving measured from the
    decoded MP4 they were written to."""
    bins: dict[int, Meters] = {}
    segments: dict[int, Meters] = {}
    whole = Meters(BoundaryMeter(frames_per_latent=VAE_STRIDE[0]))
    done, last, sheet, sizes, busy = 0, None, [], [], 0.0
    path = tmp / f"{run}.mp4"
    with VideoWriter(path, FPS, overwrite=True) as writer:
        while done < args.frames:
            video, seconds = next(chunks)
            video, busy = video[: args.frames - done], busy + seconds
            writer.write(video)
            truth = render_video(setup.portrait, setup.motion.frames(done, len(video)), setup.ref_img.shape[0])
            identity = histogram_distance(video, setup.ref_img)
            for table, size in ((bins, args.bin), (segments, args.segment)):  # a chunk counts where it starts
                if done // size not in table:
                    table[done // size] = Meters(BoundaryMeter(last, done, VAE_STRIDE[0]))
                table[done // size].update(done, video, truth, identity)
            whole.update(done, video, truth, identity)
            lo, hi = setup.sheet_at - 4, setup.sheet_at + 4
            sheet += [video[i - done] for i in range(max(lo, done), min(hi, done + len(video)))]
            sizes.append(len(video))
            done, last = done + len(video), video[-1]
    first = 0
    for video in read_chunks(path, sizes):  # the driving, from the MP4 a viewer gets
        m = measure(video, setup.motion.frames(first, len(video)), setup.portrait, setup.cal)
        for table, size in ((bins, args.bin), (segments, args.segment)):
            table[first // size].follow(m)
        whole.follow(m)
        first += len(video)
    total = whole.summary()
    total["latent_step_ratio_ci95"] = bootstrap_ratio(whole.boundary.chunks, seed=args.seed)
    return ({"run": run, "settings": settings, "config": config, "fps": done / busy if busy else math.nan,
             "total": total, "segments": [segments[i].summary() for i in sorted(segments)],
             "bins": [{"first_frame": i * args.bin, **bins[i].summary()} for i in sorted(bins)]}, np.stack(sheet))


def fmt(x, spec: str = ".3f") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(results: list[dict]) -> str:
    head = ("| row | settings | fps | latent-step ratio [95% CI] | pixel boundary ratio | identity dist. | "
            "identity drift /1k frames | PSNR first→last (dB) | SSIM first→last | mouth r | blink r | head r |")
    lines = [head, "|" + "---|" * 12]
    for r in results:
        t, a, b = r["total"], r["segments"][0], r["segments"][-1]
        lo, hi = t["latent_step_ratio_ci95"]
        fps = "—" if math.isnan(r["fps"]) else f"{r['fps']:.0f}"
        lines.append(
            f"| {r['run']} | {r['settings']} | {fps} | {fmt(t['latent_step_ratio'])} [{fmt(lo)}, {fmt(hi)}] | "
            f"{fmt(t['boundary_ratio'])} | {fmt(t['identity'])} | {fmt(t['identity_drift_per_1000'], '+.4f')} | "
            f"{fmt(a['psnr'], '.2f')} → {fmt(b['psnr'], '.2f')} | {fmt(a['ssim'])} → {fmt(b['ssim'])} | "
            f"{fmt(t['mouth_r'])} | {fmt(t['blink_r'])} | {fmt(t['head_r'])} |")
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
        cv2.putText(img, f"{int(frac * frames)}", (int(x0 + frac * w) - 14, y0 + h + 16),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    for run, pts in series.items():
        xy = [(int(x0 + f / frames * w), int(y0 + h - (v - lo) / (hi - lo) * h)) for f, v in pts if math.isfinite(v)]
        if len(xy) > 1:
            cv2.polylines(img, [np.array(xy, np.int32)], False, COLOURS.get(run, (0, 0, 0)), 2, cv2.LINE_AA)


METRICS = (("psnr", "PSNR vs ground truth (dB)"), ("identity", "identity distance to the reference"),
           ("latent_step_ratio", "latent-step ratio (1 = seamless)"), ("mouth_r", "mouth r (driving)"))


def plot(results: list[dict], path: Path, frames: int, bin_len: int, title: str = "") -> None:
    img = np.full((790, 1240, 3), 255, np.uint8)
    cv2.putText(img, title, (20, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (key, name) in enumerate(METRICS):
        x0, y0 = 80 + (i % 2) * 600, 70 + (i // 2) * 330
        series = {r["run"]: [(b["first_frame"] + bin_len / 2, b[key]) for b in r["bins"]] for r in results}
        _panel(img, x0, y0, 520, 260, f"{name}, per {bin_len} frames", series, frames)
    for j, r in enumerate(results):
        x = 20 + j * 135
        cv2.line(img, (x, 770), (x + 20, 770), COLOURS.get(r["run"], (0, 0, 0)), 3, cv2.LINE_AA)
        cv2.putText(img, r["run"], (x + 24, 775), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def contact_sheet(sheets: dict[str, np.ndarray], path: Path, boundary: int) -> None:
    """One row of 8 frames per run, frames boundary-4 .. boundary+3 (the chunk boundary after the 4th)."""
    rows = []
    for run, frames in sheets.items():
        strip = np.concatenate(list(frames), axis=1)[:, :, ::-1]  # (H, 8W, 3) BGR
        label = np.full((frames.shape[1], 150, 3), 255, np.uint8)
        cv2.putText(label, run, (4, frames.shape[1] // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(np.concatenate([label, strip], axis=1))
    img = np.concatenate(rows, axis=0)
    x = 150 + 4 * next(iter(sheets.values())).shape[2]  # after the 4th frame
    cv2.line(img, (x, 0), (x, img.shape[0]), (0, 0, 255), 1)
    head = np.full((24, img.shape[1], 3), 255, np.uint8)
    cv2.putText(head, f"frames {boundary - 4}..{boundary + 3}; red line: chunk boundary", (4, 17),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), np.concatenate([head, img], axis=0), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def model_version(path: Path) -> str:
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%h %cs", "--", str(path)], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        return out.stdout.strip() or "uncommitted"
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def measure_row(row: str, args) -> tuple[dict, np.ndarray, int]:
    """One row of the table in its own process: (result, contact-sheet frames, first frame of the sheet's chunk)."""
    with torch_threads(args.threads), torch.inference_mode(), tempfile.TemporaryDirectory() as tmp:
        model, info, codec = load_demo(args.models)
        side = demo_size(info)
        portrait, reference = demo_reference(codec, args.portrait_seed, side)
        motion = MotionSequence(args.seed, args.frames + 64, amount=MOTION_AMOUNT, idle=IDLE)
        demo = info.stream_config()
        chunk_frames = 4 * demo.chunk_len
        first_chunk = chunk_frames - VAE_STRIDE[0] + 1  # chunk boundaries at 9, 21, 33, ... for c = 3
        sheet_at = first_chunk + chunk_frames * max(0, (args.frames // 2 - first_chunk) // chunk_frames)
        setup = Setup(portrait, motion, calibrate(portrait, motion, args.calibration, side),
                      render(portrait, DrivingFrame(), side), sheet_at)
        baselines = {"ground_truth": ("the drawn driving (idle motion included)",
                                      lambda: truth_chunks(portrait, motion, chunk_frames, side)),
                     "codec_round_trip": ("ground truth -> codec -> decoder",
                                          lambda: codec_chunks(codec, portrait, motion, chunk_frames, side)),
                     "still_reference": ("the reference image, repeated",
                                         lambda: still_chunks(codec, reference, chunk_frames))}
        if row in baselines:
            settings, chunks = baselines[row]
            result, sheet = run_one(row, settings, chunks(), setup, args, Path(tmp))
        else:
            cfg = run_config(row, demo)
            control = args.models / CONTROLS.get(row, "-")
            use, how = (load_dit(control, dtype=torch.float32)[0].eval(), f"{control.name}, trained in this mode") \
                if control.is_file() else (model, "shipped model" + ("" if row == "knot" else ", untrained mode"))
            chunks = stream_chunks(cfg, use, codec, reference, motion, args.seed)
            config = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(cfg).items()}
            result, sheet = run_one(row, f"{describe(cfg)}; {how}", chunks, setup, args, Path(tmp), config)
    print(f"{row}: {result['fps']:.0f} fps, {result['total']}", file=sys.stderr)
    return result, sheet, sheet_at


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=10_000, help="video frames per row")
    ap.add_argument("--segment", type=int, default=1000, help="frames per drift segment")
    ap.add_argument("--bin", type=int, default=250, help="frames per point of the plots")
    ap.add_argument("--calibration", type=int, default=1000, help="ground-truth frames for the pixel->driving fits")
    ap.add_argument("--seed", type=int, default=0, help="driving-motion and noise seed")
    ap.add_argument("--portrait-seed", type=int, default=DEMO_PORTRAIT_SEED)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per row")
    ap.add_argument("--jobs", type=int, default=1, help="rows measured at once, one process each")
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma list from {', '.join(RUNS)}")
    ap.add_argument("--models", type=Path, default=MODELS_DIR, help="folder of demo.safetensors and the controls")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "quality")
    ap.add_argument("--json", type=Path, help="also write every figure (per segment and per bin) here")
    args = ap.parse_args()
    runs = [r for r in args.runs.split(",") if r]
    if unknown := sorted(set(runs) - set(RUNS)):
        ap.error(f"unknown runs {unknown}; choose from {', '.join(RUNS)}")
    if args.frames < args.segment:
        ap.error(f"--frames {args.frames} is shorter than one --segment {args.segment}")
    try:
        demo_files(args.models)  # before any row starts: a folder missing a file is one line, not a worker's traceback
    except InputError as e:
        ap.error(str(e))

    rows = ["ground_truth", "codec_round_trip", "still_reference", *runs]
    with multiprocessing.get_context("fork").Pool(min(args.jobs, len(rows))) as pool:
        measured = pool.starmap(measure_row, [(row, args) for row in rows])
    results, sheets = [m[0] for m in measured], {m[0]["run"]: m[1] for m in measured}
    sheet_at = measured[0][2]

    version = model_version(args.models / "demo.safetensors")
    side = next(iter(sheets.values())).shape[1]
    header = (f"Demo model {version}; {args.frames} frames per row at {side}x{side}, 25 fps (driving r "
              f"from each row's MP4, the rest from its frames as made); portrait seed {args.portrait_seed}, "
              f"motion/noise seed {args.seed} "
              f"(MotionSequence amount {MOTION_AMOUNT}, idle {IDLE}); segments of {args.segment} frames; "
              f"{args.threads} torch thread(s) per row, {args.jobs} row(s) at once.\n\n")
    md = table(results)
    print(header + md)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "quality.md").write_text(header + md + "\n")
    plot([r for r in results if r["run"] != "ground_truth"], args.out_dir / "quality.png", args.frames, args.bin)
    ceiling = [r for r in results if r["run"] == "codec_round_trip"]
    for r in results:
        if r["run"] in RUNS:
            plot(ceiling + [r], args.out_dir / f"{r['run']}.png", args.frames, args.bin,
                 f"{r['run']} ({r['settings']}) vs the codec round trip of the ground truth (grey)")
    contact_sheet(sheets, args.out_dir / "contact_sheet.png", sheet_at)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": version, "args": {k: str(v) for k, v in vars(args).items()},
                                         "runs": results}))


if __name__ == "__main__":
    run_script(main)
