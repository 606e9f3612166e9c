"""Caches: rollback restores exactly; the reference re-indexed by rotation equals recomputation;
the chunk workspace holds [rotated context | own] contiguously, the context filled once per chunk."""

import pytest
import torch

from knot_core.attention import AnchorCache, AnchorWriter, KVCache
from knot_core.config import PRESETS
from knot_core.dit import KnotDiT
from knot_core.rope import RopeTable


def _cache(window=4, spare=2, s=3, d=4):
    return KVCache(num_layers=2, window_len=window, spare=spare, tokens_per_frame=s, batch=1, heads=2, head_dim=d,
                   dtype=torch.float32, device="cpu")


def _append(cache, frames):
    slots = cache.reserve(frames)
    for layer in range(2):
        d = cache.k.shape[-1]
        k = torch.stack([torch.full((3, 2, d), float(f * 10 + layer)) for f in frames], 0).reshape(1, -1, 2, d)
        cache.write(layer, slots, k, -k)
    cache.append(frames)


def _window(cache, layer=0):
    slots = cache.visible_slots()
    return [cache.slot_frame[s] for s in slots], cache.gather(layer, slots)


def test_ring_buffer_keeps_the_newest_frames_in_order_without_reallocating():
    cache = _cache()
    ptr = cache.k.data_ptr()
    for start in range(0, 30, 2):
        _append(cache, [start, start + 1])
    frames, (k, v) = _window(cache, layer=1)
    assert frames == [26, 27, 28, 29]
    assert k[0, ::3, 0, 0].tolist() == [261.0, 271.0, 281.0, 291.0]
    assert torch.equal(v, -k)
    assert cache.k.data_ptr() == ptr


def test_rollback_restores_the_window_exactly():
    cache = _cache()
    for start in range(0, 10, 2):
        _append(cache, [start, start + 1])
    before_frames, (k0, v0) = _window(cache)
    k0, v0 = k0.clone(), v0.clone()
    _append(cache, [10, 11])
    assert _window(cache)[0] == [8, 9, 10, 11]
    cache.rollback(2)
    after_frames, (k1, v1) = _window(cache)
    assert after_frames == before_frames == [6, 7, 8, 9]
    assert torch.equal(k0, k1) and torch.equal(v0, v1)


def test_rollback_beyond_spare_is_refused():
    cache = _cache()
    _append(cache, [0, 1])
    try:
        cache.rollback(3)
    except ValueError as err:
        assert "at most 2" in str(err)
    else:
        raise AssertionError("rollback(3) with spare 2 must fail")


def test_reference_reindexed_by_rotation_equals_recomputation_at_the_new_index():
    torch.manual_seed(0)
    model = KnotDiT(PRESETS["tiny"]).eval()
    cfg = model.cfg
    x = torch.randn(1, 16, 1, 8, 8)
    t = torch.zeros(1, 1, dtype=torch.float64)
    text = model.encode_text(None)
    anchors = {}
    for n in (8, 12, 4096):
        anchor = AnchorCache(num_layers=2, frames=1, tokens_per_frame=16, batch=1, heads=2, head_dim=32,
                             dtype=torch.float32, device="cpu")
        with torch.no_grad():
            model(x, t, frame_positions=torch.tensor([float(n)]), text_kv=text, context=AnchorWriter(anchor))
        anchors[n] = anchor
    for n in (12, 4096):
        # stored keys are position-free, so moving the reference costs nothing ...
        torch.testing.assert_close(anchors[8].k, anchors[n].k, atol=1e-5, rtol=0)
        torch.testing.assert_close(anchors[8].v, anchors[n].v, atol=1e-5, rtol=0)
        # ... and rotating them to n gives the keys a pass at n would attend with
        rope = RopeTable(cfg, torch.tensor([float(n)]), 4, 4)
        for layer in range(2):
            torch.testing.assert_close(rope.rotate(anchors[8].k[layer]), rope.rotate(anchors[n].k[layer]),
                                       atol=1e-5, rtol=0)


def test_chunk_workspace_holds_rotated_context_then_own_keys_contiguously():
    from dataclasses import replace

    from knot_core.attention import CacheView, ChunkWorkspace
    cfg = replace(PRESETS["tiny"], dim=16, num_heads=2)  # head_dim 8, as the caches below
    window = _cache(window=4, spare=2, s=3, d=8)
    for start in range(0, 14, 2):  # the ring has wrapped: the visible slots are not contiguous
        _append(window, [start, start + 1])
    anchor = AnchorCache(num_layers=2, frames=1, tokens_per_frame=3, batch=1, heads=2, head_dim=8,
                         dtype=torch.float32, device="cpu")
    anchor.write(1, 0, torch.randn(1, 3, 2, 8), torch.randn(1, 3, 2, 8))
    anchor.mark_filled(1)
    ws = ChunkWorkspace(num_layers=2, frames=1 + 4 + 2, tokens_per_frame=3, batch=1, heads=2, head_dim=8,
                        dtype=torch.float32, device="cpu")
    view = CacheView(window, anchor, anchor_position=20, base=14, workspace=ws,
                     rope=lambda positions: RopeTable(cfg, torch.tensor(positions, dtype=torch.float64), 1, 3))
    own_k, own_v = torch.randn(1, 6, 2, 8), torch.randn(1, 6, 2, 8)
    k, v = view.keys_values(1, own_k, own_v)
    slots = window.visible_slots()
    assert [window.slot_frame[s] for s in slots] == [10, 11, 12, 13]
    wk, wv = window.gather(1, slots)
    expected_k = torch.cat([RopeTable(cfg, torch.tensor([6.0]), 1, 3).rotate(anchor.k[1]),
                            RopeTable(cfg, torch.tensor([-4.0, -3.0, -2.0, -1.0]), 1, 3).rotate(wk), own_k], 1)
    torch.testing.assert_close(k, expected_k, atol=1e-6, rtol=0)
    assert torch.equal(v, torch.cat([anchor.v[1], wv, own_v], 1))
    assert k.data_ptr() == ws.k[1].data_ptr() and v.data_ptr() == ws.v[1].data_ptr()  # a slice, not a copy
    # the context is rotated once per chunk: later steps only write their own K/V
    window.k.add_(1.0)
    k2, _ = view.keys_values(1, own_k + 1, own_v)
    torch.testing.assert_close(k2[:, :15], expected_k[:, :15], atol=1e-6, rtol=0)
    torch.testing.assert_close(k2[:, 15:], own_k + 1)
    with pytest.raises(ValueError, match="overflows the workspace"):
        view.keys_values(0, torch.randn(1, 9, 2, 8), torch.randn(1, 9, 2, 8))
