"""The demo test render's figures for a models folder: what tests/test_demo.py sets its bars on.

    python bench/demo_render.py                          # the shipped weights (knot_core/models)
    python bench/demo_render.py --models RUNS/knot_p12s  # a trained folder (demo.safetensors + demo_codec...)

A 20 s render of the demo portrait (seed 0, the bundled speech), read back from its MP4, measured against the
drawing of the same driving rows (knot_core.demo_quality): driving r (mouth, blink, head x; the ground truth's in
brackets), identity distance of the last second to the reference (another face beside it), sharpness, PSNR and
background PSNR of the last 100 frames, and the mouth-box change with the mouth held open vs closed. fps is the
render's own (generation, decoding and MP4 writing), on whatever machine runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from knot_core.demo import DEMO_PORTRAIT_SEED, DEMO_SPEECH, MODELS_DIR, demo_files, demo_motion, render_demo  # noqa: E402
from knot_core.demo_quality import following, mouth_change, render_quality  # noqa: E402
from knot_core.errors import InputError  # noqa: E402
from knot_core.faces import Portrait, render_video  # noqa: E402


def read_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=MODELS_DIR,
                   help="a folder with demo.safetensors and demo_codec.safetensors (default: the shipped ones)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the figures here")
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
        video = read_frames(report.path)
    rows = demo_motion(0, len(video), DEMO_SPEECH).frames(0, len(video))
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
    if args.json is not None:
        args.json.write_text(json.dumps({"models": str(args.models), "frames": len(video), "fps": round(fps, 1),
                                         **asdict(q), "ground_truth_following": asdict(truth),
                                         "mouth_change": change}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
