"""The demo model's motion adapter: each of a latent frame's 4 driving rows is told apart by its position; and
the demo model's width and depth options (train/train_demo.py --width / --layers)."""

from __future__ import annotations

import pytest
import torch

from knot_core.checkpoints import load_dit
from knot_core.demo import DEMO_ADAPTER, DEMO_DIT, DEMO_SAMPLER, MotionAdapter, build_demo_model, demo_width_problem
from knot_core.dit import KnotDiT
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


def test_a_wider_demo_model_keeps_the_shipped_proportions_and_loads(tmp_path):
    # the default is the shipped architecture, initialised exactly as before the width option
    torch.manual_seed(0)
    before = KnotDiT(DEMO_DIT)
    before.add_adapter("motion", MotionAdapter(DEMO_ADAPTER))
    shipped = build_demo_model(0)
    assert shipped.cfg == DEMO_DIT and shipped.driving["motion"].cfg == DEMO_ADAPTER
    assert all(torch.equal(a, b) for a, b in zip(before.state_dict().values(), shipped.state_dict().values()))

    wide = build_demo_model(1, width=64, layers=2)
    assert (wide.cfg.dim, wide.cfg.ffn_dim, wide.cfg.num_heads, wide.cfg.num_layers) == (64, 192, 2, 2)
    assert wide.driving["motion"].cfg.blocks == (0, 1) and wide.driving["motion"].cfg.num_heads == 2
    save_knot_model(wide.eval(), tmp_path / "wide.safetensors", sampler=DEMO_SAMPLER)
    loaded, _ = load_dit(tmp_path / "wide.safetensors", dtype=torch.float32)
    assert loaded.cfg == wide.cfg
    assert loaded.state_dict().keys() == wide.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in wide.state_dict().items())


def test_demo_width_problems_are_one_line_naming_the_option():
    assert demo_width_problem(128, 4) is None and demo_width_problem(256, 8) is None
    for width, layers, option in ((100, 4, "--width 100:"), (0, 4, "--width 0:"), (128, 0, "--layers 0:")):
        problem = demo_width_problem(width, layers)
        assert problem.startswith(option) and "\n" not in problem
    with pytest.raises(ValueError, match="--width 48"):
        build_demo_model(0, width=48)
