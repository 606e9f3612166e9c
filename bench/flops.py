"""Analytic FLOPs of one steady-state chunk of the stream, and the bytes of its K/V caches.

    python bench/flops.py                                   # Wan2.1-T2V-1.3B at 480x832, every strategy
    python bench/flops.py --height 512 --width 512 --dtype-bytes 4
    python bench/flops.py --check                           # against torch's FlopCounterMode on a real stream

Counts the matrix products of the DiT (2*m*n*k each) as `knot_core/dit.py` runs them: patch
embedding, timestep MLPs, self-attention q/k/v/o, self-attention QK^T and PV, cross-attention
q/o and its QK^T and PV against the text tokens, FFN and head. The text K/V projections are
computed once per run (`KnotDiT.encode_text`) and are left out, as are norms, RoPE and other
element-wise work. A chunk is its denoising forwards over c + k frames (one per step; for
rolling_forcing the one joint forward over the chunks in flight) plus the commit pass over its
c frames; keys per query = own frames + visible window + anchor (reference frame or frame sink)
in steady state, i.e. once the window is full.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from knot_core.config import PRESETS, STRATEGIES, VAE_STRIDE, DiTConfig, StreamConfig  # noqa: E402
from knot_core.errors import run_script  # noqa: E402

MIB = 2**20
PARTS = ("patch_embedding", "time_embedding", "self_qkvo", "self_attention", "cross_qo", "cross_attention", "ffn",
         "head")


@dataclass(frozen=True)
class ForwardFlops:
    """FLOPs of one DiT forward, by part (all layers summed)."""

    label: str
    frames: int  # latent frames the forward runs on (its own tokens)
    key_frames: int  # frames each query attends to: own + visible window + anchor
    patch_embedding: int
    time_embedding: int
    self_qkvo: int
    self_attention: int  # QK^T and PV
    cross_qo: int
    cross_attention: int  # QK^T and PV against the text tokens
    ffn: int
    head: int

    @property
    def total(self) -> int:
        return sum(getattr(self, part) for part in PARTS)


@dataclass(frozen=True)
class ChunkFlops:
    forwards: tuple[ForwardFlops, ...]
    output_frames: int  # latent frames committed by the chunk (x4 video frames)

    @property
    def total(self) -> int:
        return sum(f.total for f in self.forwards)


@dataclass(frozen=True)
class CacheBytes:
    """Bytes of the stream's K/V tensors (`knot_core.engine.kv_store.StreamKV`, all layers): each holds
    [anchor | window | own frames] = anchor_frames + window_len + max_forward_frames frames."""

    keys: int  # un-rotated K
    rotated_keys: int  # K rotated to the current chunk's positions
    values: int

    @property
    def total(self) -> int:
        return self.keys + self.rotated_keys + self.values


def forward_flops(dit: DiTConfig, label: str, frames: int, key_frames: int, tokens_per_frame: int,
                  batch: int = 1) -> ForwardFlops:
    d, layers = dit.dim, dit.num_layers
    s = batch * frames * tokens_per_frame  # query tokens
    keys = key_frames * tokens_per_frame
    patch = math.prod(dit.patch_size)
    return ForwardFlops(
        label=label, frames=frames, key_frames=key_frames,
        patch_embedding=2 * s * dit.in_dim * patch * d,
        # one timestep per frame: time_embedding (freq_dim -> dim -> dim) and time_projection (dim -> 6 dim)
        time_embedding=2 * batch * frames * (dit.freq_dim * d + d * d + d * 6 * d),
        self_qkvo=layers * 4 * 2 * s * d * d,
        self_attention=layers * 2 * 2 * s * keys * d,
        cross_qo=layers * 2 * 2 * s * d * d,
        cross_attention=layers * 2 * 2 * s * dit.text_len * d,
        ffn=layers * 2 * 2 * s * d * dit.ffn_dim,
        head=2 * s * d * dit.out_dim * patch,
    )


def chunk_flops(dit: DiTConfig, stream: StreamConfig, latent_hw: tuple[int, int], batch: int = 1) -> ChunkFlops:
    """FLOPs of one chunk once the window is full (every chunk after the first few)."""
    tpf = dit.tokens_per_frame(*latent_hw)
    context = stream.window_len + stream.anchor_frames
    c = stream.chunk_len
    if stream.rolls:
        joint = stream.max_forward_frames
        denoise = [forward_flops(dit, "joint denoise", joint, joint + context, tpf, batch)]
    else:
        denoise = [forward_flops(dit, f"denoise step {j + 1}", stream.span, stream.span + context, tpf, batch)
                   for j in range(len(stream.steps))]
    # Rolling Forcing's clean pass sees its own sliding window (the sink has left it in the steady state)
    commit = forward_flops(dit, "commit", c, c + (stream.commit_window_len or context), tpf, batch)
    return ChunkFlops(tuple(denoise) + (commit,), output_frames=c)


def cache_bytes(dit: DiTConfig, stream: StreamConfig, latent_hw: tuple[int, int], dtype_bytes: int = 2,
                batch: int = 1) -> CacheBytes:
    """Sizes from the shapes (num_layers, B, frames*tokens_per_frame, heads, head_dim) of each tensor."""
    frames = stream.anchor_frames + stream.stored_window_len + stream.max_forward_frames
    one = frames * dit.num_layers * batch * dit.tokens_per_frame(*latent_hw) * dit.num_heads * dit.head_dim \
        * dtype_bytes
    return CacheBytes(keys=one, rotated_keys=one, values=one)


def describe(dit: DiTConfig, stream: StreamConfig, latent_hw: tuple[int, int], dtype_bytes: int = 2) -> str:
    flops, cache = chunk_flops(dit, stream, latent_hw), cache_bytes(dit, stream, latent_hw, dtype_bytes)
    lines = [f"{stream.strategy}: c={stream.chunk_len} k={stream.knot_len} window={stream.window_len} "
             f"anchor={stream.anchor_frames} steps={len(stream.steps)} "
             f"tokens/frame={dit.tokens_per_frame(*latent_hw)}"]
    lines += [f"  {f.label:<16}{f.frames:>3} frames, {f.key_frames:>3} key frames: {f.total / 1e12:7.2f} TFLOP "
              f"(attention {(f.self_attention + f.cross_attention) / f.total:.0%})" for f in flops.forwards]
    lines.append(f"  chunk: {flops.total / 1e12:.1f} TFLOP per {4 * flops.output_frames} video frames; "
                 f"K/V MiB: keys {cache.keys / MIB:.0f}, rotated keys {cache.rotated_keys / MIB:.0f}, "
                 f"values {cache.values / MIB:.0f}, total {cache.total / MIB:.0f}")
    return "\n".join(lines)


def measured_chunk_flops(dit: DiTConfig, stream: StreamConfig, latent_hw: tuple[int, int], warm_chunks: int) -> int:
    """FLOPs torch's FlopCounterMode sees in chunk number `warm_chunks` of a real stream (random weights)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from knot_core.dit import KnotDiT
    from knot_core.engine.stream import StreamInputs, generate, start_stream

    torch.manual_seed(0)
    model = KnotDiT(dit).eval()
    inputs = StreamInputs(latent_hw, reference=torch.randn(1, 16, 1, *latent_hw))
    stream_iter = generate(model, stream, inputs, start_stream(model, stream, inputs, seed=0))
    for _ in itertools.islice(stream_iter, warm_chunks):
        pass
    # the math backend decomposes attention into bmm, which the counter sees on CPU too
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        next(stream_iter)
    return counter.get_total_flops()


def check() -> bool:
    """Analytic == counted, for every strategy, on 1-layer models of the 1.3B widths and the tiny preset."""
    ok = True
    for preset, hw in (("wan2.1-1.3b-noise-ref-mask", (4, 6)), ("tiny-noise-ref-mask", (8, 8))):
        dit = dataclasses.replace(PRESETS[preset], num_layers=1)
        for strategy in STRATEGIES:
            stream = StreamConfig.for_strategy(strategy)
            # 8 warm chunks fill every strategy's windows (rolling_forcing: its clean pass's 18 frames = 6 chunks)
            want, got = chunk_flops(dit, stream, hw).total, measured_chunk_flops(dit, stream, hw, warm_chunks=8)
            ok &= want == got
            verdict = "ok" if want == got else f"DIFF {got - want:+,}"
            print(f"{preset:<28}{strategy:<16} analytic {want:>14,} counted {got:>14,} {verdict}")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="wan2.1-t2v-1.3b", choices=sorted(PRESETS))
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--strategy", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    ap.add_argument("--dtype-bytes", type=int, default=2, help="bytes per cache element (bf16: 2)")
    ap.add_argument("--check", action="store_true", help="compare with FlopCounterMode on a real stream, then exit")
    args = ap.parse_args()
    if args.check:
        sys.exit(0 if check() else 1)
    hw = (args.height // VAE_STRIDE[1], args.width // VAE_STRIDE[2])
    for strategy in args.strategy:
        print(describe(PRESETS[args.preset], StreamConfig.for_strategy(strategy), hw, args.dtype_bytes))


if __name__ == "__main__":
    run_script(main)
