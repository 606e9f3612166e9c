"""The demo model's motion adapter: each of a latent frame's 4 driving rows is told apart by its position."""

from __future__ import annotations

import torch

from knot_core.checkpoints import load_dit
from knot_core.demo import DEMO_ADAPTER, DEMO_SAMPLER, MotionAdapter, build_demo_model
from knot_core.model_file import save_knot_model


def _rows(seed: int) -> torch.Tensor:
    return torch.randn(2, 3, 4, DEMO_ADAPTER.feature_dim, generator=torch.Generator().manual_seed(seed))


def _update(adapter: MotionAdapter, features: torch.Tensor) -> torch.Tensor:
    """The adapter's residual update of one block's tokens (36 per frame), given driving rows."""
    x = torch.randn(2, 3 * 36, DEMO_ADAPTER.dim, generator=torch.Generator().manual_seed(1))
    return adapter.after_block(0, x, adapter.encode(features), None) - x


def _trained_like(adapter: MotionAdapter) -> MotionAdapter:
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return adapter


def test_row_order_within_a_latent_reaches_the_model():
    rows = _rows(0)
    swapped = rows[:, :, [1, 0, 3, 2]]  # the same four video frames, in another order
    with_pos = _trained_like(MotionAdapter(DEMO_ADAPTER))
    without = _trained_like(MotionAdapter(DEMO_ADAPTER, row_positions=False))
    # attention alone is blind to the order of its keys: the update is identical to float rounding
    assert torch.allclose(_update(without, rows), _update(without, swapped), atol=1e-5)
    # with the row embeddings, which frame is closed (a blink) or open changes the update
    assert (_update(with_pos, rows) - _update(with_pos, swapped)).abs().max() > 1e-2


def test_row_positions_are_saved_and_old_files_load_without(tmp_path):
    model = build_demo_model(0)
    assert model.driving["motion"].row_pos is not None and not model.driving["motion"].row_pos.detach().any()
    with torch.no_grad():
        model.driving["motion"].row_pos.normal_()
    save_knot_model(model.eval(), tmp_path / "new.safetensors", sampler=DEMO_SAMPLER)
    loaded, _ = load_dit(tmp_path / "new.safetensors", dtype=torch.float32)
    assert torch.equal(loaded.driving["motion"].row_pos, model.driving["motion"].row_pos)

    old = build_demo_model(0)
    old.driving["motion"] = MotionAdapter(DEMO_ADAPTER, row_positions=False)  # a file from before the embeddings
    save_knot_model(old.eval(), tmp_path / "old.safetensors", sampler=DEMO_SAMPLER)
    loaded, _ = load_dit(tmp_path / "old.safetensors", dtype=torch.float32)
    assert loaded.driving["motion"].row_pos is None
