"""Streaming speed and memory of the engine (+ streaming VAE decode) with random weights.

    python bench/stream_speed.py --preset tiny --device cpu --height 64 --width 64 --chunks 50
    python bench/stream_speed.py --preset wan2.1-t2v-1.3b --layers 2 --height 256 --width 256 --chunks 6
    python bench/stream_speed.py --preset wan2.1-t2v-1.3b --device cuda --dtype bf16 --height 480 --width 832 \
        --vae full --strategy knot self_forcing --compile default --minutes 1 10 --json out.json

Per strategy: time to the first decoded frames, the warm-up chunks' time (--warmup, default 2;
compilation lands here with --compile), per-chunk time p50/p95 over the chunks after them, split
into DiT and VAE, steady-state latent and video frames per second (1 latent frame = 4 video
frames), the DiT's FLOPs per chunk (bench/flops.py), achieved TFLOP/s over the DiT p50 and MFU
against --peak-tflops, the K/V MiB (keys, rotated keys, values) from the shapes, and memory (CUDA max
allocated, or process RSS on CPU) after the warm-up chunks and after each requested number of
minutes of video (--minutes; video at --fps). --layers builds the preset with fewer blocks of
the real width (a CPU proxy for the full model). A table is printed last; --json writes every
figure (after each strategy, so a run stopped later keeps the finished ones).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.flops import MIB, cache_bytes, chunk_flops  # noqa: E402
from knot_core.compilation import COMPILE_MODES as USER_COMPILE_MODES  # noqa: E402
from knot_core.config import DTYPES, PRESETS, VAE_STRIDE, StreamConfig  # noqa: E402
from knot_core.dit import KnotDiT  # noqa: E402
from knot_core.engine.stream import StreamInputs, generate, start_stream  # noqa: E402
from knot_core.errors import run_script  # noqa: E402
from knot_core.vae import StreamingDecoder, VAEConfig, WanVAE  # noqa: E402

COMPILE_MODES = (*USER_COMPILE_MODES, "reduce-overhead")  # CUDA graphs: tried here before users get them
H100_BF16_DENSE_TFLOPS = 989.0  # datasheet; a large bf16 GEMM measured 798 on this workplace's H100


def memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MIB
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def random_module(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    module = module.to_empty(device=device).to(dtype).eval()
    for p in module.parameters():  # random weights at a sensible scale
        torch.nn.init.normal_(p, std=0.02)
    return module


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"


def p95(xs: list[float]) -> float:
    """Nearest-rank 95th percentile (the largest of fewer than 20 values)."""
    return sorted(xs)[math.ceil(0.95 * len(xs)) - 1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(args, device: torch.device) -> tuple[KnotDiT, StreamingDecoder | None]:
    dit = PRESETS[args.preset] if args.layers is None else dataclasses.replace(PRESETS[args.preset],
                                                                               num_layers=args.layers)
    with torch.device("meta"):
        model = KnotDiT(dit)
        vae = None if args.vae == "none" else WanVAE(VAEConfig() if args.vae == "full" else VAEConfig.tiny())
    model = random_module(model, device, DTYPES[args.dtype])
    if args.compile != "none":
        model.compile_blocks(mode=args.compile)
    return model, None if vae is None else StreamingDecoder(random_module(vae, device, DTYPES[args.dtype]))


def time_chunks(args, model, decoder, cfg, inputs, device, marks: dict[float, int], chunks: int) -> dict:
    """Generates (and decodes) `chunks` chunks; per-chunk DiT/VAE seconds and memory at the marks."""
    state = start_stream(model, cfg, inputs, seed=0)
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
        if j + 1 == max(args.warmup, 1):
            memory[f"after {j + 1} chunk{'s' * (j > 0)}"] = memory_mib(device)
        for m, c in marks.items():
            if c == j + 1:  # printed as reached: a run stopped at a time limit still tells
                memory[f"after {m:g} min"] = memory_mib(device)
                print(f"[{cfg.strategy}] after {m:g} min of video ({c} chunks, {t2 - started:.0f} s): "
                      f"{memory[f'after {m:g} min']:.0f} MiB", flush=True)
    return {"dit_s": dit_s, "vae_s": vae_s, "memory": memory, "first_frames_s": first_frames_s}


def run(args, strategy: str) -> dict:
    device = torch.device(args.device)
    model, decoder = build(args, device)
    h, w = args.height // VAE_STRIDE[1], args.width // VAE_STRIDE[2]
    cfg = StreamConfig.for_strategy(strategy)
    inputs = StreamInputs((h, w), reference=torch.randn(1, 16, 1, h, w, device=device))
    marks = {m: round(m * 60 * args.fps / (4 * cfg.chunk_len)) for m in args.minutes}
    chunks = max([args.chunks, *marks.values()])
    if chunks <= args.warmup:
        raise SystemExit(f"--chunks {chunks} must exceed --warmup {args.warmup} to leave steady-state chunks")
    t = time_chunks(args, model, decoder, cfg, inputs, device, marks, chunks)
    dit_s, vae_s, n = t["dit_s"], t["vae_s"], args.warmup
    steady = [d + v for d, v in zip(dit_s[n:], vae_s[n:], strict=True)]
    per_chunk, dit_p50 = statistics.median(steady), statistics.median(dit_s[n:])
    flops = chunk_flops(model.cfg, cfg, (h, w)).total
    cache = cache_bytes(model.cfg, cfg, (h, w), dtype_bytes=DTYPES[args.dtype].itemsize)
    peak = args.peak_tflops or (H100_BF16_DENSE_TFLOPS if device.type == "cuda" else None)
    return {
        "strategy": strategy, "preset": args.preset, "num_layers": model.cfg.num_layers, "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__, "dtype": args.dtype, "vae": args.vae, "compile": args.compile,
        "height": args.height, "width": args.width, "chunks": chunks, "warmup_chunks": n,
        "tokens_per_frame": model.cfg.tokens_per_frame(h, w),
        "first_frames_s": t["first_frames_s"], "warmup_s": sum(dit_s[:n]) + sum(vae_s[:n]),
        "chunk_p50_s": per_chunk, "chunk_p95_s": p95(steady),
        "dit_p50_s": dit_p50, "dit_p95_s": p95(dit_s[n:]),
        "vae_p50_s": statistics.median(vae_s[n:]),
        "latent_fps": cfg.chunk_len / per_chunk, "video_fps": 4 * cfg.chunk_len / per_chunk,
        "dit_tflop_per_chunk": flops / 1e12, "dit_tflops": flops / 1e12 / dit_p50,
        "peak_tflops": peak, "mfu": None if peak is None else flops / 1e12 / dit_p50 / peak,
        "cache_mib": {"keys": cache.keys / MIB, "rotated_keys": cache.rotated_keys / MIB,
                      "values": cache.values / MIB, "total": cache.total / MIB},
        "memory_mib": t["memory"], "memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_rss",
    }


def table(results: list[dict]) -> str:
    head = (f"{'strategy':<16}{'video fps':>10}{'first (s)':>10}{'warmup (s)':>11}{'p50 (s)':>9}{'p95 (s)':>9}"
            f"{'DiT (s)':>9}{'VAE (s)':>9}{'TFLOP':>10}{'TFLOP/s':>10}{'MFU':>6}")
    rows = [head] + [f"{r['strategy']:<16}{r['video_fps']:>10.2f}{r['first_frames_s']:>10.3f}{r['warmup_s']:>11.3f}"
                     f"{r['chunk_p50_s']:>9.3f}{r['chunk_p95_s']:>9.3f}{r['dit_p50_s']:>9.3f}{r['vae_p50_s']:>9.3f}"
                     f"{r['dit_tflop_per_chunk']:>10.3g}{r['dit_tflops']:>10.3g}"
                     f"{'-' if r['mfu'] is None else format(r['mfu'], '.0%'):>6}" for r in results]
    rows += [f"{r['strategy']:<16}K/V MiB (analytic): " + ", ".join(f"{k} {v:.4g}" for k, v in r["cache_mib"].items())
             for r in results]
    rows += [f"{r['strategy']:<16}memory ({r['memory_kind']}, MiB): "
             + ", ".join(f"{k} {v:.0f}" for k, v in r["memory_mib"].items()) for r in results]
    r = results[0]
    setup = (f"{r['preset']} x{r['num_layers']} layers, {r['height']}x{r['width']}, {r['dtype']}, vae {r['vae']}, "
             f"compile {r['compile']}, {r['device_name']}, torch {r['torch']}; "
             f"p50/p95 over the {r['chunks'] - r['warmup_chunks']} chunks after {r['warmup_chunks']} warm-up")
    return "\n".join([setup, *rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--layers", type=int, help="build the preset with this many blocks (real widths)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--strategy", nargs="+", default=["knot"],
                    choices=["knot", "self_forcing", "longlive", "rolling_forcing"])
    ap.add_argument("--vae", default="none", choices=["none", "tiny", "full"], help="decode each chunk as well")
    ap.add_argument("--compile", default="none", choices=COMPILE_MODES, help="KnotDiT.compile_blocks(mode=...)")
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--chunks", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=2,
                    help="first chunks left out of the steady-state figures; to match the steady-state FLOPs, cover "
                         "compilation and the window filling up (ceil(window_len / chunk_len) chunks)")
    ap.add_argument("--minutes", type=float, nargs="*", default=[], help="also report memory after these minutes")
    ap.add_argument("--fps", type=float, default=16.0, help="video fps used to turn --minutes into chunks")
    ap.add_argument("--peak-tflops", type=float,
                    help=f"for MFU (default on cuda: {H100_BF16_DENSE_TFLOPS:g}, H100 bf16 dense; none on cpu)")
    ap.add_argument("--json", metavar="PATH", help="write the figures to this JSON file")
    args = ap.parse_args()
    results = []
    for strategy in args.strategy:
        results.append(run(args, strategy))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    run_script(main)
