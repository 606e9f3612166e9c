"""Streaming speed and memory of the engine with random weights.

    python bench/stream_speed.py --preset tiny --device cpu --height 64 --width 64 --chunks 50
    python bench/stream_speed.py --preset wan2.1-t2v-1.3b --device cuda --dtype bf16 --height 480 --width 832

Prints per-chunk time (p50/p95), latent and video frames per second (1 latent frame = 4 video
frames), time to the first chunk, and memory over the run (first vs last chunks: CUDA
allocated, or process RSS on CPU). --json also writes every figure to a file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from knot_core.config import PRESETS, VAE_STRIDE, StreamConfig  # noqa: E402
from knot_core.dit import KnotDiT  # noqa: E402
from knot_core.stream import StreamInputs, generate, start_stream  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run(args) -> dict:
    device = torch.device(args.device)
    with torch.device("meta"):
        model = KnotDiT(PRESETS[args.preset])
    model = model.to_empty(device=device).to(DTYPES[args.dtype]).eval()
    for p in model.parameters():  # random weights at a sensible scale
        torch.nn.init.normal_(p, std=0.02)
    h, w = args.height // VAE_STRIDE[1], args.width // VAE_STRIDE[2]
    cfg = StreamConfig.for_strategy(args.strategy)
    ref = torch.randn(1, 16, 1, h, w, device=device)
    inputs = StreamInputs((h, w), reference=ref)
    state = start_stream(model, cfg, inputs, seed=0)
    times, mem = [], []
    start = time.perf_counter()
    first_chunk_s = None
    for chunk in itertools.islice(generate(model, cfg, inputs, state), args.chunks):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        first_chunk_s = first_chunk_s or now - start
        times.append(chunk.status.seconds)
        mem.append(memory_bytes(device))
    steady = times[min(2, len(times) - 1):]
    per_chunk = statistics.median(steady)
    latent_fps = cfg.chunk_len / per_chunk
    return {
        "preset": args.preset, "device": str(device), "dtype": args.dtype, "strategy": args.strategy,
        "height": args.height, "width": args.width, "chunks": args.chunks,
        "tokens_per_frame": model.cfg.tokens_per_frame(h, w),
        "first_chunk_s": first_chunk_s, "chunk_p50_s": per_chunk,
        "chunk_p95_s": sorted(steady)[int(0.95 * (len(steady) - 1))],
        "latent_fps": latent_fps, "video_fps": 4 * latent_fps,
        "memory_first_mib": mem[0] / 2**20, "memory_last_mib": mem[-1] / 2**20,
        "memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_rss",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--strategy", default="knot", choices=["knot", "self_forcing", "longlive", "rolling_forcing"])
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--chunks", type=int, default=30)
    ap.add_argument("--json", metavar="PATH", help="write the figures to this JSON file")
    args = ap.parse_args()
    result = run(args)
    for key, value in result.items():
        print(f"{key:>18}: {value:.4g}" if isinstance(value, float) else f"{key:>18}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
