"""Streams latent chunks through `StreamingDecoder` and reports per-chunk time and memory.

Shows that decoding is flat in memory however many chunks go by: the decoder keeps ~2 frames per causal
conv between chunks. Random weights unless --weights points at wan_2.1_vae.safetensors. Not collected by pytest.

    python bench/vae_memory.py                       # tiny config, CPU
    python bench/vae_memory.py --full --height 240 --width 416 --chunks 6
    python bench/vae_memory.py --full --weights models/vae/wan_2.1_vae.safetensors --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from knot_core.errors import run_script  # noqa: E402
from knot_core.vae import StreamingDecoder, VAEConfig, WanVAE, load_vae  # noqa: E402


def rss_mib() -> float:
    """Current resident set size (Linux /proc), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="full-size Wan2.1 VAE (dim 96) instead of the tiny config")
    p.add_argument("--weights", type=Path, help="load this VAE file instead of random weights (implies --full)")
    p.add_argument("--chunks", type=int, default=12)
    p.add_argument("--latents-per-chunk", type=int, default=3)
    p.add_argument("--height", type=int, default=128, help="video height in pixels (multiple of 16)")
    p.add_argument("--width", type=int, default=128, help="video width in pixels (multiple of 16)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = p.parse_args()

    dtype = getattr(torch, args.dtype)
    if args.weights:
        vae = load_vae(args.weights, dtype=dtype, device=args.device)
    else:
        torch.manual_seed(0)
        vae = WanVAE(VAEConfig() if args.full else VAEConfig.tiny()).eval().to(args.device, dtype)
    cuda = torch.device(args.device).type == "cuda"
    stream = StreamingDecoder(vae)
    h, w = args.height // 8, args.width // 8
    print(f"VAE dim {vae.config.dim}, {args.dtype} on {args.device}; {args.chunks} chunks of "
          f"{args.latents_per_chunk} latents at {args.height}x{args.width}")
    cuda_cols = "  cuda_alloc_MiB  cuda_peak_MiB" if cuda else ""
    print("chunk  frames  seconds  rss_MiB  peak_rss_MiB  cache_MiB" + cuda_cols)
    rows = []
    for i in range(args.chunks):
        z = torch.randn(1, vae.config.z_dim, args.latents_per_chunk, h, w, device=args.device)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        frames = stream.decode(z)
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        row = [i, frames.shape[2], dt, rss_mib(), peak_rss_mib(), stream.cache_nbytes() / 2**20]
        if cuda:
            row += [torch.cuda.memory_allocated() / 2**20, torch.cuda.max_memory_allocated() / 2**20]
        rows.append(row)
        print(f"{row[0]:5d}  {row[1]:6d}  {row[2]:7.3f}  {row[3]:7.1f}  {row[4]:12.1f}  {row[5]:9.2f}"
              + (f"  {row[6]:14.1f}  {row[7]:13.1f}" if cuda else ""))
        del frames
    first, last = rows[1] if len(rows) > 1 else rows[0], rows[-1]
    print(f"after chunk 1 vs last: rss {first[3]:.1f} -> {last[3]:.1f} MiB, cache {first[5]:.2f} -> {last[5]:.2f} MiB"
          + (f", cuda allocated {first[6]:.1f} -> {last[6]:.1f} MiB" if cuda else ""))
    print(f"{stream.latents_decoded} latents -> {stream.frames_decoded} frames")


if __name__ == "__main__":
    run_script(main)
