"""Streaming speed and memory of the engine (+ streaming VAE decode) with random weights.

    python bench/stream_speed.py --preset tiny --device cpu --height 64 --width 64 --chunks 50
    python bench/stream_speed.py --preset wan2.1-t2v-1.3b --device cuda --dtype bf16 --height 480 --width 832 \
        --vae full --strategy knot self_forcing --minutes 1 10 --json out.json

Per strategy: time to the first decoded frames, per-chunk time p50/p95 split into DiT and VAE,
steady-state latent and video frames per second (1 latent frame = 4 video frames), and memory
(CUDA max allocated, or process RSS on CPU) after the first chunks and after each requested number
of minutes of video (--minutes; video at --fps, default 16). A table is printed last; --json writes
every figure.
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
from knot_core.vae import StreamingDecoder, VAEConfig, WanVAE  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def random_module(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    module = module.to_empty(device=device).to(dtype).eval()
    for p in module.parameters():  # random weights at a sensible scale
        torch.nn.init.normal_(p, std=0.02)
    return module


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args, strategy: str) -> dict:
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    with torch.device("meta"):
        model = KnotDiT(PRESETS[args.preset])
        vae = None if args.vae == "none" else WanVAE(VAEConfig() if args.vae == "full" else VAEConfig.tiny())
    model = random_module(model, device, dtype)
    decoder = None if vae is None else StreamingDecoder(random_module(vae, device, dtype))
    h, w = args.height // VAE_STRIDE[1], args.width // VAE_STRIDE[2]
    cfg = StreamConfig.for_strategy(strategy)
    inputs = StreamInputs((h, w), reference=torch.randn(1, 16, 1, h, w, device=device))
    state = start_stream(model, cfg, inputs, seed=0)
    chunks = args.chunks
    marks = {m: round(m * 60 * args.fps / (4 * cfg.chunk_len)) for m in args.minutes}
    if marks:
        chunks = max(chunks, max(marks.values()))
    dit_s, vae_s, memory = [], [], {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    first_frames_s = None
    stream = generate(model, cfg, inputs, state)
    for j in range(chunks):
        t0 = time.perf_counter()
        chunk = next(stream)
        sync(device)
        t1 = time.perf_counter()
        if decoder is not None:
            decoder.decode(chunk.latents)
            sync(device)
        t2 = time.perf_counter()
        first_frames_s = first_frames_s or t2 - started
        dit_s.append(t1 - t0)
        vae_s.append(t2 - t1)
        if j == 1:
            memory["after 2 chunks"] = memory_mib(device)
        memory.update({f"after {m} min": memory_mib(device) for m, c in marks.items() if c == j + 1})
    steady = [d + v for d, v in itertools.islice(zip(dit_s, vae_s, strict=True), 2, None)] or [dit_s[0] + vae_s[0]]
    per_chunk = statistics.median(steady)
    return {
        "strategy": strategy, "preset": args.preset, "device": str(device), "dtype": args.dtype, "vae": args.vae,
        "height": args.height, "width": args.width, "chunks": chunks,
        "tokens_per_frame": model.cfg.tokens_per_frame(h, w),
        "first_frames_s": first_frames_s, "chunk_p50_s": per_chunk,
        "chunk_p95_s": sorted(steady)[int(0.95 * (len(steady) - 1))],
        "dit_p50_s": statistics.median(dit_s[2:] or dit_s), "vae_p50_s": statistics.median(vae_s[2:] or vae_s),
        "latent_fps": cfg.chunk_len / per_chunk, "video_fps": 4 * cfg.chunk_len / per_chunk,
        "memory_mib": memory, "memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_rss",
    }


def table(results: list[dict]) -> str:
    head = f"{'strategy':<16}{'video fps':>10}{'first (s)':>10}{'p50 (s)':>9}{'p95 (s)':>9}{'DiT (s)':>9}{'VAE (s)':>9}"
    rows = [head] + [f"{r['strategy']:<16}{r['video_fps']:>10.2f}{r['first_frames_s']:>10.3f}{r['chunk_p50_s']:>9.3f}"
                     f"{r['chunk_p95_s']:>9.3f}{r['dit_p50_s']:>9.3f}{r['vae_p50_s']:>9.3f}" for r in results]
    rows += [f"{r['strategy']:<16}memory ({r['memory_kind']}, MiB): "
             + ", ".join(f"{k} {v:.0f}" for k, v in r["memory_mib"].items()) for r in results]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--strategy", nargs="+", default=["knot"],
                    choices=["knot", "self_forcing", "longlive", "rolling_forcing"])
    ap.add_argument("--vae", default="none", choices=["none", "tiny", "full"], help="decode each chunk as well")
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--chunks", type=int, default=30)
    ap.add_argument("--minutes", type=float, nargs="*", default=[], help="also report memory after these minutes")
    ap.add_argument("--fps", type=float, default=16.0, help="video fps used to turn --minutes into chunks")
    ap.add_argument("--json", metavar="PATH", help="write the figures to this JSON file")
    args = ap.parse_args()
    results = [run(args, s) for s in args.strategy]
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
