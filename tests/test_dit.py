"""DiT details that real checkpoints depend on (FIELD_NOTES §2)."""

import math

import pytest
import torch

from knot_core.config import PRESETS
from knot_core.dit import KnotDiT, sinusoidal_embedding
from knot_core.errors import ConfigError
from knot_core.rope import RopeTable


def test_time_embedding_is_cos_first_float64():
    e = sinusoidal_embedding(torch.tensor([937.5]), 8)
    freqs = [10000 ** (-i / 4) for i in range(4)]
    expected = [math.cos(937.5 * f) for f in freqs] + [math.sin(937.5 * f) for f in freqs]
    assert e.dtype == torch.float64
    assert e[0].tolist() == pytest.approx(expected, abs=1e-12)


def test_rope_pairs_are_adjacent_and_split_by_axis():
    cfg = PRESETS["tiny"]  # head_dim 32 -> 12/10/10 dims rotated by frame/row/col
    table = RopeTable(cfg, torch.tensor([2.0]), rows=2, cols=3)
    x = torch.zeros(1, 6, 1, 32)
    x[..., 0] = 1.0  # real part of pair 0 (a frame pair with frequency 1)
    out = table.rotate(x)
    assert out[0, 0, 0, :2].tolist() == pytest.approx([math.cos(2.0), math.sin(2.0)], abs=1e-6)
    x = torch.zeros(1, 6, 1, 32)
    x[..., 12] = 1.0  # first row pair
    out = table.rotate(x)
    token_row1 = 3  # (row 1, col 0)
    assert out[0, token_row1, 0, 12:14].tolist() == pytest.approx([math.cos(1.0), math.sin(1.0)], abs=1e-6)
    assert out[0, 0, 0, 12:14].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)


def test_unpatchify_layout_matches_wan():
    model = KnotDiT(PRESETS["tiny"])
    rows, cols = 2, 3
    out = torch.arange(1 * 1 * rows * cols * 64, dtype=torch.float32).reshape(1, rows * cols, 64)
    u = model.unpatchify(out, 1, rows, cols)  # (1, 16, 1, 4, 6)
    # head channel index (q*2 + r)*16 + c lands at pixel (2*row + q, 2*col + r)
    token, q, r, ch = 4, 1, 0, 5  # token 4 = row 1, col 1
    assert u[0, ch, 0, 2 * 1 + q, 2 * 1 + r] == out[0, token, (q * 2 + r) * 16 + ch]


@pytest.mark.parametrize("hw", [(8, 8), (6, 10), (60, 104)])
def test_tokens_per_frame_from_the_grid(hw):
    assert PRESETS["tiny"].tokens_per_frame(*hw) == (hw[0] // 2) * (hw[1] // 2)


def test_per_frame_timesteps_change_only_their_frames_modulation():
    torch.manual_seed(0)
    model = KnotDiT(PRESETS["tiny"]).eval()
    x = torch.randn(1, 16, 2, 4, 4)
    text = model.encode_text(None)
    pos = torch.arange(2, dtype=torch.float64)
    with torch.no_grad():
        a = model(x, torch.tensor([[500.0, 500.0]]), frame_positions=pos, text_kv=text)
        b = model(x, torch.tensor([[500.0, 250.0]]), frame_positions=pos, text_kv=text)
    assert float((a - b).abs().max()) > 1e-4  # a frame's own level matters


def test_odd_resolution_is_refused_with_the_multiple():
    with pytest.raises(ConfigError, match="multiple of 16"):
        PRESETS["tiny"].grid(7, 8)
