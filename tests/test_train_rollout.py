"""train/rollout.py runs the engine's loop with gradients: same outputs as generate(), gradients into the anchor."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))

import rollout  # noqa: E402
from rollout import ClipBatch, rollout_loss  # noqa: E402

from knot_core.adapters.cross_attention import CrossAttentionAdapter, CrossAttentionConfig  # noqa: E402
from knot_core.config import PRESETS, StreamConfig  # noqa: E402
from knot_core.dit import KnotDiT  # noqa: E402
from knot_core.engine.stream import StreamInputs, generate, start_stream  # noqa: E402
from knot_core.signals.base import DrivingSignal  # noqa: E402

CHUNKS = 3


class Rows(DrivingSignal):
    """Fixed per-video-frame rows, served as the engine asks (4 per latent)."""

    name = "motion"

    def __init__(self, rows: torch.Tensor):
        super().__init__(25, len(rows), "stop")
        self.rows = rows

    @property
    def row_shape(self) -> tuple[int, ...]:
        return (self.rows.shape[1],)

    def video_features(self, start: int, count: int) -> torch.Tensor:
        return self.rows[start:start + count]


def tiny_model() -> KnotDiT:
    torch.manual_seed(0)
    model = KnotDiT(PRESETS["tiny-noise-mask-latent"])
    adapter = CrossAttentionAdapter(CrossAttentionConfig(signal="motion", feature_dim=5, dim=64, num_heads=2,
                                                         blocks=(0, 1)))
    for layer in adapter.layers:  # non-zero output, so the driving reaches the result
        torch.nn.init.normal_(layer.o.weight, std=0.1)
    model.add_adapter("motion", adapter)
    return model.eval()


def test_rollout_matches_generate_and_reaches_the_anchor():
    model, cfg = tiny_model(), StreamConfig(start_from_reference=False)
    latents = 1 + 4 * (CHUNKS * cfg.chunk_len + cfg.knot_len - 1)
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(1, 16, 1, 4, 4, generator=g)
    rows = torch.randn(latents, 5, generator=g)
    signal = Rows(rows)
    feats = torch.stack([signal.latent_features(k, 1)[0] for k in range(CHUNKS * cfg.chunk_len + 1)])[None]
    inputs = StreamInputs(latent_size=(4, 4), reference=ref, signals=(signal,))

    # the rollout draws its noise seed from `gen`; give generate() the same seed
    gen = torch.Generator().manual_seed(5)
    seed = int(torch.randint(0, 2**31, (1,), generator=torch.Generator().manual_seed(5)))
    stream = generate(model, cfg, inputs, start_stream(model, cfg, inputs, seed=seed))
    expected = torch.cat([next(stream).latents for _ in range(CHUNKS)], 2)  # (1, 16, 9, 4, 4)

    # the rollout regresses to a target; use the generated latents so the loss of a perfect match is 0 there
    target = torch.cat([expected, torch.zeros(1, 16, 1, 4, 4)], 2)
    ref_leaf = ref.clone().requires_grad_(True)  # the reference enters the I2V layout only in the anchor pass
    clips = ClipBatch(target, ref_leaf, feats, torch.ones(1, 1, target.shape[2], 4, 4))
    committed = []
    original = rollout.commit_chunk

    def spy(ctx, context_noise, latents, known):
        committed.append(latents.clone())
        return original(ctx, context_noise, latents, known)

    rollout.commit_chunk = spy  # record what each chunk commits (what generate() yields)
    try:
        result = rollout_loss(model, cfg, clips, CHUNKS, gen)
    finally:
        rollout.commit_chunk = original
    assert torch.allclose(torch.cat(committed, 2), expected, atol=1e-5, rtol=0)
    assert torch.equal(result.committed, torch.cat(committed, 2))  # what tune_decoder.py pairs with true frames
    result.loss.backward()
    assert len(result.chunk_losses) == CHUNKS
    # gradients reach the reference through the anchor pass (identity's only path) and the driving adapter
    assert float(ref_leaf.grad.abs().sum()) > 0
    assert float(model.driving["motion"].token_proj.weight.grad.abs().sum()) > 0
