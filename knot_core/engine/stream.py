"""The streaming loop: Knot Forcing (arXiv 2512.21734) and the peers' strategies on one engine.

generate() is an endless iterator; each step yields the committed latent frames of one chunk:
  1. once: the reference frame's clean pass writes the anchor K/V (knot strategy);
  2. running ahead: before the chunk at latent i, if i + c + k > n then n += s;
  3. denoise c + k frames (the first k pinned to the previous chunk's knot prediction);
  4. fuse the overlap, keep the last k predicted frames as the next knot (never output/cached);
  5. clean pass over the c committed frames writes their K/V into the sliding window;
  6. yield the c latents and a status record.
rolling_forcing and avatar_forcing replace 3-4 by one joint forward over a window of chunks at
staggered levels. AvatarForcing's reference is latent 0 of its video: its anchor pass gets latent
0's driving signal and the first chunk is output after it. Who sees what: visibility.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..config import LATENT_CHANNELS, StreamConfig
from ..dit import KnotDiT
from ..driving import encode_driving
from ..errors import InputError
from .conditioning import chunk_known, model_input, reference_known
from .memory import CachedMemory
from .noise import NoiseSource
from .sampler import ChunkContext, commit_chunk, denoise_chunk, rolling_step, start_noise
from .schedule import FlowSchedule, advance_reference
from .state import StreamState
from .visibility import commit_visible, denoise_visible


@dataclass(frozen=True)
class StreamInputs:
    latent_size: tuple[int, int]  # (h, w) of one latent frame = video size / 8
    reference: Tensor | None = None  # (B, 16, 1, h, w) normalised reference latent
    text: Tensor | None = None  # (B, L, text_dim) umT5 embeddings
    keep_mask: Tensor | None = None  # (h, w), 1 = keep the reference there (e.g. background)
    signals: Sequence = ()  # driving signals: `name`, `latent_features(start, count)`
    batch: int = 1


@dataclass(frozen=True)
class ChunkStatus:
    chunk_index: int
    first_frame: int  # latent index of the chunk's first committed frame
    frames_so_far: int  # latent frames committed, this chunk included
    ref_index: int  # the reference's temporal index n (knot strategy)
    seconds: float  # wall time of this chunk


@dataclass(frozen=True)
class Chunk:
    latents: Tensor  # (B, 16, c, h, w) committed latent frames
    status: ChunkStatus


def validate_inputs(model: KnotDiT, cfg: StreamConfig, inputs: StreamInputs) -> None:
    """Every mismatch a user can cause, named before any work starts."""
    dcfg = model.cfg
    h, w = inputs.latent_size
    dcfg.grid(h, w)  # raises with the valid multiple
    ref = inputs.reference
    if ref is not None and (ref.dim() != 5 or ref.shape[1] != LATENT_CHANNELS or tuple(ref.shape[3:]) != (h, w)):
        raise InputError(f"reference latent has shape {tuple(ref.shape)}; expected (B, {LATENT_CHANNELS}, 1, {h}, {w})"
                         " — encode the reference at the video resolution")
    if ref is None and (cfg.uses_reference_anchor or dcfg.cond_layout == "noise_ref_mask"):
        raise InputError("this stream anchors on a reference image but none was given; give a reference "
                         "(avatar_forcing and 33-channel models always need one; for knot, set anchor=False "
                         "or use a strategy without a reference anchor)")
    if inputs.text is not None and (inputs.text.dim() != 3 or inputs.text.shape[-1] != dcfg.text_dim
                                    or inputs.text.shape[1] > dcfg.text_len):
        raise InputError(f"text embedding has shape {tuple(inputs.text.shape)}; this model expects (B, L <= "
                         f"{dcfg.text_len}, {dcfg.text_dim}) (umT5-XXL embeddings for Wan2.1)")
    if inputs.keep_mask is not None and tuple(inputs.keep_mask.shape) != (h, w):
        raise InputError(f"keep_mask has shape {tuple(inputs.keep_mask.shape)}; expected the latent grid ({h}, {w})")
    names = {s.name for s in inputs.signals}
    for name, adapter in model.driving.items():
        if adapter.signal not in names:
            raise InputError(f"this model's '{name}' adapter is driven by the '{adapter.signal}' signal, but the "
                             f"stream got {sorted(names) or 'no signal'}; connect a '{adapter.signal}' signal")


def start_stream(model: KnotDiT, cfg: StreamConfig, inputs: StreamInputs, seed: int = 0,
                 memory=None) -> StreamState:
    validate_inputs(model, cfg, inputs)
    if memory is None:
        memory = CachedMemory(model, cfg, model.encode_text(inputs.text, inputs.batch), inputs.latent_size,
                              inputs.batch)
    return StreamState(memory=memory, noise=NoiseSource(seed), ref_index=cfg.ahead_init, next_frame=cfg.lead_frames)


@torch.no_grad()
def generate(model: KnotDiT, cfg: StreamConfig, inputs: StreamInputs, state: StreamState) -> Iterator[Chunk]:
    sched, memory, ref = FlowSchedule(cfg.shift), state.memory, inputs.reference
    device = model.patch_embedding.weight.device
    ref = None if ref is None else ref.to(device=device, dtype=torch.float32)
    if cfg.uses_reference_anchor and not state.anchored:
        _anchor_reference(model, cfg, inputs, memory, ref)  # 1
        state.anchored = True
    like = torch.zeros(inputs.batch, LATENT_CHANNELS, 1, *inputs.latent_size, device=device)
    while True:
        started, i, c = time.perf_counter(), state.next_frame, cfg.chunk_len
        state.ref_index = advance_reference(cfg, i, state.ref_index)  # 2
        seen = denoise_visible(cfg, i, state.ref_index)
        base = ChunkContext(memory, sched, state.noise, ref, i, seen, driving=None)
        if cfg.rolls:
            committed, known, ctx = _rolling(model, cfg, inputs, state, like, base)
        else:
            known = chunk_known(cfg, cfg.span, i, knot=state.knot, reference=ref, keep_mask=inputs.keep_mask,
                                like=like)
            ctx = replace(base, driving=encode_driving(model.driving, inputs.signals, i, cfg.span, device))
            x0 = denoise_chunk(ctx, cfg.steps_of_chunk(i), known, timestep_dtype=cfg.timestep_dtype,
                               pin_clean=cfg.reference_pin == "clean")  # 3
            committed, state.knot = x0[:, :, :c], (x0[:, :, c:] if cfg.knot_len else None)  # 4
        commit_ctx = replace(ctx.first(c), visible=commit_visible(cfg, i, state.ref_index))
        commit_chunk(commit_ctx, cfg.context_noise, committed, known.frames(0, c))  # 5
        state.next_frame, state.chunk_index = i + c, state.chunk_index + 1
        lead = i == cfg.lead_frames and cfg.lead_frames  # the video's reference latent goes out first
        latents = torch.cat([ref, committed], dim=2) if lead else committed
        status = ChunkStatus(state.chunk_index - 1, 0 if lead else i, i + c, state.ref_index,
                             time.perf_counter() - started)
        yield Chunk(latents, status)  # 6


def _anchor_reference(model, cfg, inputs, memory, ref) -> None:
    """The reference frame's clean pass. Where it is the video's latent 0 (AvatarForcing), it also
    gets latent 0's driving signal, as the model was trained (its zero audio row's tokens)."""
    t0 = torch.zeros(inputs.batch, 1, dtype=torch.float64, device=ref.device)
    driving = encode_driving(model.driving, inputs.signals, 0, 1, ref.device) if cfg.lead_frames else None
    memory.anchor_reference(model_input(model.cfg, ref, reference_known(ref), ref), t0, driving)


def _rolling(model, cfg, inputs, state, like, base: ChunkContext):
    """Rolling / avatar forcing: add a fresh noise chunk, run joint forwards until the oldest is clean."""
    i, c, device, sched = state.next_frame, cfg.chunk_len, like.device, base.sched
    while True:
        frames = c * (len(state.rolling) + 1)
        known = chunk_known(cfg, frames, i, knot=None, reference=base.reference, keep_mask=inputs.keep_mask,
                            like=like)
        eps = state.noise.draw((inputs.batch, LATENT_CHANNELS, c, *inputs.latent_size), device)
        sigma0 = sched.sigma(torch.full((inputs.batch, c), sched.warp(cfg.steps[0]), dtype=torch.float64))
        state.rolling.append(start_noise(known.frames(frames - c, frames), sigma0.to(device), eps))
        state.levels.append(0)
        ctx = replace(base, driving=encode_driving(model.driving, inputs.signals, i, frames, device))
        done = rolling_step(ctx, cfg.steps, state.rolling, state.levels, known)
        if done is not None:
            return done, known, ctx
