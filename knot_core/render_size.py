"""Is a requested video size sane for this model and this machine? Checked before any work starts.

A model renders well only near the resolution it was trained at, and memory grows with the pixel count
(the K/V caches with the tokens per frame, the VAE's causal caches with the pixels): `--width 4096 --height
4096` on a model trained at 32x32 would otherwise grow for minutes into gigabytes of untrained noise. So a
size more than MAX_AREA_RATIO times the trained area is refused, and so is any size whose estimated
working memory exceeds what the device has free; both messages carry the estimate.

The estimate is a lower bound: the stream's K/V tensors exactly (StreamKV: un-rotated keys, rotated keys
and values for [anchor | window | own frames]), one forward's largest activations (FFN hidden states), and
the VAE decoder's causal caches, measured on a 2x2 latent and scaled by the area.
"""

from __future__ import annotations

import logging
import os

import torch

from .config import DiTConfig, StreamConfig
from .errors import InputError

log = logging.getLogger(__name__)

MAX_AREA_RATIO = 4.0  # e.g. 480x832 -> up to 960x1664 (720p and 1080p-ish fit), never 16x the area
GIB = 1 << 30


def kv_bytes(dit: DiTConfig, cfg: StreamConfig, latent_hw: tuple[int, int], dtype_bytes: int) -> int:
    """Bytes of the stream's K/V tensors, all layers (three tensors of frames x tokens x dim each)."""
    frames = cfg.anchor_frames + cfg.window_len + cfg.max_forward_frames
    return 3 * frames * dit.num_layers * dit.tokens_per_frame(*latent_hw) * dit.dim * dtype_bytes


def activation_bytes(dit: DiTConfig, cfg: StreamConfig, latent_hw: tuple[int, int], dtype_bytes: int) -> int:
    """The largest tensors of one forward: the FFN's hidden states and the block's q/k/v/output."""
    tokens = cfg.max_forward_frames * dit.tokens_per_frame(*latent_hw)
    return tokens * (dit.ffn_dim + 4 * dit.dim) * dtype_bytes


def vae_cache_bytes(vae, cfg: StreamConfig, latent_hw: tuple[int, int]) -> int:
    """The decoder's causal caches at this size: measured at 2x2 latents, scaled by the area (0 if unknown)."""
    decoder = vae.streaming_decoder()
    if not hasattr(decoder, "cache_nbytes"):
        return 0
    probe = (2, 2)
    with torch.no_grad():
        for frames in (1, cfg.chunk_len):  # the first chunk, then a steady one: every cache is filled
            decoder.decode(torch.zeros(1, vae.z_dim, frames, *probe, dtype=vae.dtype, device=vae.device))
    return decoder.cache_nbytes() * latent_hw[0] * latent_hw[1] // (probe[0] * probe[1])


def free_memory(device: str) -> int | None:
    """Bytes free on the device (CUDA: driver's free memory; CPU: MemAvailable), None when unknown."""
    if str(device).startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_render_size(dit: DiTConfig, cfg: StreamConfig, size: tuple[int, int], trained: tuple[int, int],
                      vae, device: str, dtype_bytes: int, *, vae_factor: int = 8) -> int:
    """Refuse a (height, width) far above the trained area or the free memory; returns the estimate (bytes)."""
    height, width = size
    latent_hw = (height // vae_factor, width // vae_factor)
    kv = kv_bytes(dit, cfg, latent_hw, dtype_bytes)
    act = activation_bytes(dit, cfg, latent_hw, dtype_bytes)
    vae_cache = vae_cache_bytes(vae, cfg, latent_hw)
    need = kv + act + vae_cache
    estimate = (f"at least {need / GIB:.1f} GiB: K/V caches {kv / GIB:.2f}, activations {act / GIB:.2f}, "
                f"VAE caches {vae_cache / GIB:.2f}")
    ratio = height * width / (trained[0] * trained[1])
    if ratio > MAX_AREA_RATIO:
        scale = (MAX_AREA_RATIO ** 0.5)
        raise InputError(f"--width {width} --height {height} is {ratio:.0f}x the area this model was trained at "
                         f"({trained[1]}x{trained[0]}): it would render untrained noise and need {estimate}. Use at "
                         f"most {MAX_AREA_RATIO:.0f}x the trained area (e.g. {int(trained[1] * scale) // 16 * 16}x"
                         f"{int(trained[0] * scale) // 16 * 16}), or leave --width/--height out for the model's size")
    free = free_memory(device)
    if free is not None and need > free:
        raise InputError(f"--width {width} --height {height} needs {estimate}, but {device} has "
                         f"{free / GIB:.1f} GiB free; choose a smaller size, --dtype bf16, or free memory")
    log.info("%dx%d: working memory %s", width, height, estimate)
    return need
