"""The demo test render's figures for a models folder: what tests/test_demo.py sets its bars on.

    python bench/demo_render.py                          # the shipped weights (knot_core/models)
    python bench/demo_render.py --models RUNS/knot_p12s  # a trained folder (demo.safetensors + demo_codec...)

A 20 s render of the demo portrait (seed 0, the bundled speech), read back from its MP4, measured against the
drawing of the same driving rows (knot_core.demo_quality): driving r (mouth, blink, head x; the ground truth's in
brackets), identity distance of the last second to the reference (another face beside it), sharpness, PSNR and
background PSNR of the last 100 frames, and the mouth-box change with the mouth held open vs closed. fps is the
render's own (generation, decoding and MP4 writing), on whatever machine runs it.
--scan also asks where the error sits, over the render after its first 100 frames: PSNR of the render and of the
ground truth's codec round trip against the drawing redrawn with one part of the driving (head pose, mouth,
blink) scaled by 0-1.25 — a model that drew a part too weakly or too late would match a smaller scale or a
shifted pose better — and the correlation of per-frame PSNR with the head's distance from its mean place.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from knot_core.demo import (  # noqa: E402
    DEMO_PORTRAIT_SEED,
    DEMO_SPEECH,
    MODELS_DIR,
    demo_files,
    demo_motion,
    load_codec,
    render_demo,
)
from knot_core.demo_codec import StreamingDecoder  # noqa: E402
from knot_core.demo_quality import following, mouth_change, render_quality  # noqa: E402
from knot_core.errors import InputError, run_script  # noqa: E402
from knot_core.faces import PARAM_NAMES, DrivingFrame, Portrait, regions, render_video  # noqa: E402
from knot_core.quality_metrics import psnr  # noqa: E402
from knot_core.video_reader import read_frames  # noqa: E402
from knot_core.video_writer import frames_from_decoder  # noqa: E402

SCAN_FROM = 100  # frames: past the start, as the other measures
SCAN_PARTS = {"head pose": ("yaw", "pitch", "roll", "tx", "ty"), "mouth": ("mouth_open", "mouth_wide"),
              "blink": ("blink",)}
SCAN_SCALES = (0.0, 0.5, 0.75, 1.0, 1.25)


def round_trip(codec, video: np.ndarray) -> np.ndarray:
    """The codec's encode and decode of a (1 + 4k)-frame uint8 video."""
    x = torch.from_numpy(video).float().div(127.5).sub(1).permute(3, 0, 1, 2)[None]
    with torch.no_grad():
        return frames_from_decoder(StreamingDecoder(codec).decode(codec.encode(x))).numpy()


def scan(video: np.ndarray, rows: np.ndarray, models: Path) -> None:
    """Print where the render's error sits (the module's --scan)."""
    portrait, size = Portrait.random(DEMO_PORTRAIT_SEED), video.shape[1]
    truth = render_video(portrait, rows, size)
    start = min(SCAN_FROM, len(video) // 2)  # a short render: its second half
    coded = round_trip(load_codec(models / "demo_codec.safetensors"), truth)[start:]
    ours, tail = video[start:], rows[start:]
    db = lambda a, b: 10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2))  # noqa: E731
    for part, names in SCAN_PARTS.items():
        cols, cells = [PARAM_NAMES.index(n) for n in names], []
        for scale in SCAN_SCALES:
            scaled = tail.copy()
            scaled[:, cols] *= scale
            drawn = render_video(portrait, scaled, size)
            cells.append(f"x{scale:g} {db(ours, drawn):.2f} [{db(coded, drawn):.2f}]")
        print(f"{part} scaled: " + ", ".join(cells) + "  (render [codec round trip], dB)")
    centre = np.array([regions(portrait, DrivingFrame.from_vector(r), size).face_centre for r in tail])
    away = np.hypot(*(centre - centre.mean(0)).T)
    per_frame = psnr(ours, truth[start:])
    print(f"per-frame PSNR vs the head's distance from its mean place: r = {np.corrcoef(per_frame, away)[0, 1]:.2f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=MODELS_DIR,
                   help="a folder with demo.safetensors and demo_codec.safetensors (default: the shipped ones)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--scan", action="store_true", help="also print where the error sits (the module's doc)")
    args = p.parse_args()
    try:
        demo_files(args.models)
    except InputError as e:
        p.error(str(e))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        report = render_demo(Path(tmp) / "render.mp4", args.seconds, seed=0, models=args.models,
                             threads=args.threads)
        fps = report.frames / (time.perf_counter() - started)
        video = np.stack(list(read_frames(report.path)))
    rows = demo_motion(0, DEMO_SPEECH).frames(0, len(video))
    q = render_quality(video, rows)
    truth = following(render_video(Portrait.random(DEMO_PORTRAIT_SEED), rows, video.shape[1]), rows,
                      Portrait.random(DEMO_PORTRAIT_SEED))
    change = mouth_change(args.models)
    f = q.following
    print(f"{args.models}: {len(video)} frames {video.shape[2]}x{video.shape[1]}, {fps:.0f} fps")
    print(f"driving r mouth {f.mouth_r:.3f} [{truth.mouth_r:.3f}] blink {f.blink_r:.3f} [{truth.blink_r:.3f}] "
          f"head x {f.head_r:.3f} [{truth.head_r:.3f}]")
    print(f"identity {q.identity:.3f} (another face {q.other_identity:.3f}); last 100 frames: sharpness "
          f"{q.sharpness:.3f}, PSNR {q.psnr:.2f} dB, background {q.background_psnr:.2f} dB; mouth change {change:.1f}")
    if args.scan:
        scan(video, rows, args.models)
    if args.json is not None:
        args.json.write_text(json.dumps({"models": str(args.models), "frames": len(video), "fps": round(fps, 1),
                                         **asdict(q), "ground_truth_following": asdict(truth),
                                         "mouth_change": change}, indent=1))
    return 0


if __name__ == "__main__":
    run_script(main)
