"""How much of a chunk the H.264 encode costs, and how much the background encoder hides.

    python bench/encode_overlap.py --height 480 --width 832 --gpu-ms 375 --chunks 20

Frames: the shared portrait (or a gradient) panned a little every frame, 12 per chunk (3 latent
frames). The "GPU" is a wait of --gpu-ms per chunk that holds no GIL and no CPU core, as a
CUDA synchronisation does (375 ms = 12 frames at 32 fps, the issue's target). Prints the encode
time per chunk alone, and the wall time per chunk with the encode inline (VideoWriter) and on
the worker thread (BackgroundWriter).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from knot_core.background_writer import BackgroundWriter  # noqa: E402
from knot_core.errors import run_script  # noqa: E402
from knot_core.video_writer import VideoWriter  # noqa: E402

PORTRAIT = Path(__file__).resolve().parents[2] / "shared" / "media" / "portrait_astronaut_512.png"


def frames(height: int, width: int, chunks: int) -> list[torch.Tensor]:
    if PORTRAIT.is_file():
        image = cv2.cvtColor(cv2.imread(str(PORTRAIT)), cv2.COLOR_BGR2RGB)
    else:
        image = np.dstack([*np.meshgrid(np.linspace(0, 255, 512), np.linspace(0, 255, 512)), np.full((512, 512), 128)])
    big = cv2.resize(image.astype(np.uint8), (width + 64, height + 64))
    out = []
    for c in range(chunks):
        shifts = [(c * 12 + f) % 64 for f in range(12)]
        out.append(torch.from_numpy(np.stack([big[s:s + height, s:s + width] for s in shifts])))  # (12, H, W, 3)
    return out


def run(writer, pieces: list[torch.Tensor], gpu_s: float) -> list[float]:
    walls = []
    with writer:
        for piece in pieces:
            t0 = time.perf_counter()
            time.sleep(gpu_s)  # the GPU computing this chunk
            writer.write(piece)
            walls.append(time.perf_counter() - t0)
    return walls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--gpu-ms", type=float, default=375.0)
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--crf", type=int, default=18)
    args = ap.parse_args()
    pieces, gpu_s = frames(args.height, args.width, args.chunks), args.gpu_ms / 1e3
    with tempfile.TemporaryDirectory() as tmp:
        encode = run(VideoWriter(Path(tmp) / "a.mp4", 16, crf=args.crf), pieces, 0.0)
        inline = run(VideoWriter(Path(tmp) / "b.mp4", 16, crf=args.crf), pieces, gpu_s)
        background = run(BackgroundWriter(VideoWriter(Path(tmp) / "c.mp4", 16, crf=args.crf)), pieces, gpu_s)
    skip = min(2, args.chunks - 1)  # the encoder's start-up

    def ms(values: list[float]) -> float:
        return 1e3 * statistics.median(values[skip:])

    print(f"{args.height}x{args.width}, 12 frames per chunk, crf {args.crf}, simulated GPU {args.gpu_ms:.0f} ms/chunk")
    print(f"encode alone      {ms(encode):8.1f} ms/chunk")
    print(f"inline encode     {ms(inline):8.1f} ms/chunk  ({12e3 / ms(inline):.1f} video fps)")
    print(f"background encode {ms(background):8.1f} ms/chunk  ({12e3 / ms(background):.1f} video fps)")


if __name__ == "__main__":
    run_script(main)
