"""Training the demo DiT as it is used: the engine's own chunk loop, with gradients where training needs them.

`rollout_loss` runs one batch of clips through exactly what knot_core.engine.stream.generate does — the anchor
pass of the reference, running ahead (`advance_reference`, `visibility.denoise_visible`), each chunk's known latent
(`chunk_known`: the previous chunk's fused knot prediction), the few-step denoising with pinning and the final
fusion, the clean commit pass into the sliding window — on the engine's `CachedMemory`. Two differences only,
both numerically neutral (tests/test_train_rollout.py checks the outputs are equal):
  * one denoising step per chunk (drawn at random, as Self Forcing's exit step) is a forward with gradients,
    through `GradView`, which builds the same [anchor | window | own] K/V by concatenation instead of writing
    into the preallocated buffers (in-place writes cannot carry a graph);
  * the anchor pass (`GradAnchor`) keeps its K/V graph, so identity — which reaches the stream only through the
    anchor — is learnt through it. The window's K/V are detached (no backpropagation through time, as Self
    Forcing).
The loss is the x0 regression of each chunk's c + k predictions at its gradient step against the ground-truth
latents, weighted up on latent cells the mouth and eyes touch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from knot_core.config import LATENT_CHANNELS, StreamConfig
from knot_core.driving import DrivingTokens, slice_driving
from knot_core.engine.conditioning import Known, chunk_known, model_input, reference_known
from knot_core.engine.kv_store import CacheView, StreamKV
from knot_core.engine.memory import CachedMemory
from knot_core.engine.noise import NoiseSource
from knot_core.engine.sampler import ChunkContext, commit_chunk, start_noise
from knot_core.engine.schedule import FlowSchedule, advance_reference, predict_x0, renoise
from knot_core.engine.state import StreamState
from knot_core.engine.visibility import Visible, commit_visible, denoise_visible
from knot_core.rope import rotate


class GradAnchor:
    """Context of the training anchor pass: keeps each layer's K/V (with their graph) and writes detached
    copies into the store, where the engine's own (no-grad) passes read them."""

    def __init__(self, kv: StreamKV):
        self.kv = kv
        self.k: list[Tensor | None] = [None] * kv.num_layers
        self.v: list[Tensor | None] = [None] * kv.num_layers

    def keys_values(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return k, v

    def write(self, layer: int, k: Tensor, v: Tensor) -> None:
        self.k[layer], self.v[layer] = k, v
        self.kv.write_anchor(layer, k.detach(), v.detach())


class GradView:
    """A denoising forward with gradients: the K/V `CacheView.keys_values` returns, by concatenation, with the
    anchor's part taken from the graph-carrying `GradAnchor` (rotated to the same position)."""

    def __init__(self, view: CacheView, anchor: GradAnchor | None):
        self.view, self.anchor = view, anchor

    def write(self, layer: int, k: Tensor, v: Tensor) -> None:
        """A denoising pass commits nothing."""

    def keys_values(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():  # the engine's own call: rotates the context once per layer, as at inference
            self.view.keys_values(layer, k.detach(), v.detach())
        kv, n = self.view.kv, self.view.context_tokens
        a = kv.anchor_filled * kv.tokens_per_frame if self.anchor is not None else 0
        parts_k, parts_v = [], []
        if a:
            table = self.view.context_rope
            parts_k.append(rotate(self.anchor.k[layer], table.cos[:a], table.sin[:a]))
            parts_v.append(self.anchor.v[layer])
        parts_k += [kv.k_rot[layer, :, a:n], k]
        parts_v += [kv.v[layer, :, a:n], v]
        return torch.cat(parts_k, 1), torch.cat(parts_v, 1)  # (B, context + own, heads, d)


class TrainingMemory(CachedMemory):
    """The engine's memory plus the two gradient-carrying passes."""

    anchor: GradAnchor | None = None

    def anchor_reference(self, x_in: Tensor, t: Tensor) -> None:
        assert self.kv.anchor_frames == 1 and x_in.shape[2] == 1
        self.anchor = GradAnchor(self.kv)
        zero = torch.zeros(1, dtype=torch.float64, device=x_in.device)
        self.model(x_in, t, frame_positions=zero, text_kv=self.text_kv, context=self.anchor)
        self.kv.anchor_filled = 1

    def predict_with_grad(self, x_in: Tensor, t: Tensor, first_frame: int, visible: Visible,
                          driving: DrivingTokens | None) -> Tensor:
        return self._forward(x_in, t, GradView(self._context(first_frame, visible), self.anchor), driving)


@dataclass(frozen=True)
class ClipBatch:
    """Ground truth of a batch of clips, indexed by clip latent (clip latent j is stream latent start + j)."""

    latents: Tensor  # (B, 16, L, h, w) normalised ground-truth latents
    reference: Tensor  # (B, 16, 1, h, w) the anchor image's latent (a pose outside the clip)
    features: Tensor  # (B, L, 4, P) driving rows per latent frame (what the signal serves)
    weight: Tensor  # (B, 1, L, h, w) loss weight per latent cell
    start: int = 0  # stream latent index of clip latent 0
    teacher: bool = False  # commit the ground truth instead of the model's output (warm-up only)


@dataclass(frozen=True)
class StepResult:
    loss: Tensor
    chunk_losses: list[float]
    committed: Tensor  # (B, 16, chunks * c, h, w) the latents the stream output (fused, detached)
    predicted: Tensor  # (B, 16, chunks * (c + k), h, w) each chunk's graph-carrying x0 prediction
    truth: Tensor  # (B, 16, chunks * (c + k), h, w) the ground-truth latents they regress to


def _timesteps(value: float, batch: int, frames: int, device: torch.device) -> Tensor:
    return torch.full((batch, frames), value, dtype=torch.float64, device=device)


def denoise_with_grad(memory: TrainingMemory, sched: FlowSchedule, cfg: StreamConfig, noise: NoiseSource,
                      known: Known, first_frame: int, visible: Visible, driving, grad_step: int,
                      reference: Tensor) -> tuple[Tensor, Tensor]:
    """knot_core.engine.sampler.denoise_chunk with step `grad_step` run with gradients.
    Returns (fused x0 as inference makes it, the graph-carrying x0 prediction of step grad_step)."""
    b, _, frames, h, w = known.latent.shape
    device = known.latent.device
    ts = [sched.warp(s) for s in cfg.steps]
    sigmas = [sched.sigma(_timesteps(t, b, frames, device)) for t in ts]
    x = start_noise(known, sigmas[0], noise.draw((b, LATENT_CHANNELS, frames, h, w), device))
    dcfg, pred = memory.model.cfg, None
    for j, t in enumerate(ts):
        x_in = model_input(dcfg, x, known, reference)
        if j == grad_step:
            t_in = _timesteps(t, b, frames, device)
            pred = predict_x0(x, memory.predict_with_grad(x_in, t_in, first_frame, visible, driving), sigmas[j])
            x0 = pred.detach()
        else:
            with torch.no_grad():
                t_in = _timesteps(t, b, frames, device)
                x0 = predict_x0(x, memory.predict(x_in, t_in, first_frame, visible, driving), sigmas[j])
        if j + 1 == len(ts):
            return known.fuse_final(x0), pred
        x = renoise(known.pin(x0), sigmas[j + 1], noise.draw((b, LATENT_CHANNELS, frames, h, w), device))
    raise AssertionError("unreachable: steps is never empty")


def rollout_loss(model, cfg: StreamConfig, clips: ClipBatch, chunks: int, gen: torch.Generator) -> StepResult:
    """Run `chunks` chunks of the stream over a batch of clips (as generate() does) and return the summed loss."""
    b, _, _, h, w = clips.latents.shape
    sched, c, span = FlowSchedule(cfg.shift), cfg.chunk_len, cfg.span
    memory = TrainingMemory(model, cfg, model.encode_text(None, b), (h, w), b)
    noise = NoiseSource(int(torch.randint(0, 2**31, (1,), generator=gen)))
    state = StreamState(memory=memory, noise=noise, ref_index=cfg.ahead_init, next_frame=clips.start)
    ref = clips.reference
    if cfg.uses_reference_anchor:
        memory.anchor_reference(model_input(model.cfg, ref, reference_known(ref), ref),
                                _timesteps(0.0, b, 1, ref.device))
    like = torch.zeros(b, LATENT_CHANNELS, 1, h, w, device=ref.device)
    total, losses, outputs, predicted, truth = 0.0, [], [], [], []
    for _ in range(chunks):
        i = state.next_frame
        j0 = i - clips.start  # clip latent of the chunk's first frame
        state.ref_index = advance_reference(cfg, i, state.ref_index)
        seen = denoise_visible(cfg, i, state.ref_index)
        known = chunk_known(cfg, span, i, knot=state.knot, reference=ref, keep_mask=None, like=like)
        driving = DrivingTokens({name: a.encode(clips.features[:, j0:j0 + span]) for name, a in model.driving.items()})
        step = int(torch.randint(0, len(cfg.steps), (1,), generator=gen))
        x0, pred = denoise_with_grad(memory, sched, cfg, noise, known, i, seen, driving, step, ref)
        target, weight = clips.latents[:, :, j0:j0 + span], clips.weight[:, :, j0:j0 + span]
        loss = ((pred - target).pow(2) * weight).mean() / weight.mean()
        total, losses = total + loss, losses + [loss.item()]
        predicted.append(pred)
        truth.append(target)
        committed, state.knot = x0[:, :, :c], (x0[:, :, c:] if cfg.knot_len else None)
        outputs.append(committed.detach())
        if clips.teacher:
            committed = target[:, :, :c]
            state.knot = target[:, :, c:] if cfg.knot_len else None
        with torch.no_grad():
            ctx = ChunkContext(memory, sched, noise, ref, i, commit_visible(cfg, i, state.ref_index),
                               slice_driving(driving, 0, c))
            commit_chunk(ctx, cfg.context_noise, committed, known.frames(0, c))
        state.next_frame += c
    return StepResult(total / chunks, losses, torch.cat(outputs, 2), torch.cat(predicted, 2), torch.cat(truth, 2))
