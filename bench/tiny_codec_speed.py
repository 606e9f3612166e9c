"""Decode speed of the Wan2.1 VAE against the TAEHV tiny decoder (taew2_1 / lighttaew2_1), streamed chunk by chunk.

Both at their released widths (random weights unless --vae / --tiny name the real files: the timing does not depend
on the weights), the same latent chunks, the same streaming decoders the render path uses. Prints seconds per
chunk, video frames per second (after the first, warm-up chunk) and the decoder memory kept between chunks. With
both real files, also how far the tiny decoder's frames are from the Wan VAE's (PSNR, on the same latents).
Not collected by pytest.

    python bench/tiny_codec_speed.py                                   # 128x128, 4 chunks of 3 latents, CPU
    python bench/tiny_codec_speed.py --height 240 --width 416 --threads 1
    python bench/tiny_codec_speed.py --vae models/vae/wan_2.1_vae.safetensors \\
        --tiny models/vae_approx/taew2_1.safetensors --height 480 --width 832 --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from knot_core.errors import run_script  # noqa: E402
from knot_core.tiny_codec import TinyCodec, load_tiny_codec  # noqa: E402
from knot_core.vae import WanVAE, load_vae  # noqa: E402


def time_stream(codec, chunks: list[torch.Tensor], cuda: bool) -> tuple[list[float], torch.Tensor, int]:
    """Seconds per chunk, the decoded frames (uint8-range floats kept for PSNR), decoder bytes between chunks."""
    stream = codec.streaming_decoder()
    seconds, frames = [], []
    for z in chunks:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        frames.append(stream.decode(z).cpu())
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
    return seconds, torch.cat(frames, 2), stream.cache_nbytes()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) / 2).pow(2).mean().item()  # [-1, 1] -> [0, 1] scale
    return float("inf") if mse == 0 else -10 * torch.log10(torch.tensor(mse)).item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vae", type=Path, help="wan_2.1_vae.safetensors (default: random weights, released width)")
    p.add_argument("--tiny", type=Path, help="taew2_1 / lighttaew2_1 file (default: random weights, released width)")
    p.add_argument("--chunks", type=int, default=4)
    p.add_argument("--latents-per-chunk", type=int, default=3)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype, cuda = getattr(torch, args.dtype), torch.device(args.device).type == "cuda"
    torch.manual_seed(0)
    vae = load_vae(args.vae, dtype=dtype, device=args.device) if args.vae else WanVAE().eval().to(args.device, dtype)
    tiny = (load_tiny_codec(args.tiny, dtype=dtype, device=args.device) if args.tiny
            else TinyCodec().eval().to(args.device, dtype))
    h, w = args.height // 8, args.width // 8
    chunks = [torch.randn(1, 16, args.latents_per_chunk, h, w, device=args.device) for _ in range(args.chunks)]
    print(f"{args.chunks} chunks of {args.latents_per_chunk} latents at {args.height}x{args.width}, {args.dtype} on "
          f"{args.device}, {torch.get_num_threads()} threads")
    print("decoder        frames  s/chunk (each)                 fps after chunk 0  kept_MiB")
    results = {}
    for name, codec in (("wan2.1 vae", vae), ("taehv tiny", tiny)):
        with torch.no_grad():
            seconds, frames, kept = time_stream(codec, chunks, cuda)
        later = frames.shape[2] - (4 * args.latents_per_chunk - 3)
        fps = later / sum(seconds[1:]) if len(seconds) > 1 else float("nan")
        results[name] = (frames, fps)
        each = " ".join(f"{s:.3f}" for s in seconds)
        print(f"{name:13s}  {frames.shape[2]:6d}  {each:30s} {fps:17.2f}  {kept / 2**20:8.2f}")
    (wan_frames, wan_fps), (tiny_frames, tiny_fps) = results["wan2.1 vae"], results["taehv tiny"]
    print(f"tiny / wan speed: {tiny_fps / wan_fps:.1f}x; same frame count: {wan_frames.shape == tiny_frames.shape}")
    if args.vae and args.tiny:
        print(f"PSNR of the tiny decoder's frames against the Wan VAE's: {psnr(tiny_frames, wan_frames):.2f} dB "
              "(random latents; real latents give a truer figure)")


if __name__ == "__main__":
    run_script(main)
