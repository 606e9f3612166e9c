"""StreamKV: the window keeps the newest frames in order and slides without reallocating, sinks
land on their anchor slots, the context is rotated once per chunk into one contiguous slice, and
the reference re-indexed by rotation equals recomputation."""

from dataclasses import replace

import pytest
import torch

from knot_core.config import PRESETS
from knot_core.dit import KnotDiT
from knot_core.engine.kv_store import AnchorWriter, CacheView, StreamKV
from knot_core.rope import RopeTable

S, D = 3, 8  # tokens per frame, head_dim
CFG = replace(PRESETS["tiny"], dim=2 * D, num_heads=2)


def _kv(anchor=1, window=4, forward=2):
    return StreamKV(num_layers=2, anchor_frames=anchor, window_len=window, forward_frames=forward,
                    tokens_per_frame=S, batch=1, heads=2, head_dim=D, dtype=torch.float32, device="cpu")


def _rope(positions):
    return RopeTable(CFG, torch.tensor(positions, dtype=torch.float64), 1, S)


def _frames_kv(frames, layer):
    """Recognisable K/V of frames: K = 10 * frame + layer everywhere, V = -K."""
    k = torch.cat([torch.full((1, S, 2, D), float(10 * f + layer)) for f in frames], 1)
    return k, -k


def _commit(kv, frames, anchor_position=None, sink_len=0):
    """A commit pass of these frames, as CachedMemory runs it (write, keys_values, finish_commit)."""
    view = CacheView(kv, anchor_position, frames[0], _rope).committing(frames)
    for layer in range(2):
        k, v = _frames_kv(frames, layer)
        view.write(layer, k, v)
        view.keys_values(layer, k, v)
    view.finish_commit(sink_len)


def _stored(kv, layer=1):
    """Frame id per stored frame of the context (from K), and whether V == -K."""
    n = kv.context_frames * S
    k, v = kv.k[layer, 0, :n], kv.v[layer, 0, :n]
    return [int(x) // 10 for x in k[::S, 0, 0].tolist()], torch.equal(v, -k)


def test_window_keeps_the_newest_frames_in_order_and_slides_without_reallocating():
    kv = _kv(anchor=0)
    pointers = [t.data_ptr() for t in (kv.k, kv.v, kv.k_rot)]
    for start in range(0, 30, 2):
        _commit(kv, [start, start + 1])
    assert kv.window_frames == [26, 27, 28, 29]
    assert _stored(kv) == ([26, 27, 28, 29], True)
    assert [t.data_ptr() for t in (kv.k, kv.v, kv.k_rot)] == pointers


def test_sink_frames_land_on_their_anchor_slots_then_the_window_fills():
    kv = _kv(anchor=3, window=4)
    _commit(kv, [0, 1], anchor_position=0, sink_len=3)
    assert (kv.anchor_filled, kv.window_frames) == (2, [])
    _commit(kv, [2, 3], anchor_position=0, sink_len=3)  # one sink frame, one window frame
    assert (kv.anchor_filled, kv.window_frames) == (3, [3])
    for start in range(4, 14, 2):
        _commit(kv, [start, start + 1], anchor_position=0, sink_len=3)
    assert _stored(kv) == ([0, 1, 2, 10, 11, 12, 13], True)


def test_context_is_rotated_once_per_chunk_into_one_contiguous_slice():
    kv = _kv(anchor=1, window=4, forward=2)
    anchor_k, anchor_v = torch.randn(1, S, 2, D), torch.randn(1, S, 2, D)
    AnchorWriter(kv).write(1, anchor_k, anchor_v)
    kv.anchor_filled = 1
    for start in range(0, 14, 2):
        _commit(kv, [start, start + 1], anchor_position=20)
    view = CacheView(kv, anchor_position=20, base=14, rope=_rope)
    own_k, own_v = torch.randn(1, 2 * S, 2, D), torch.randn(1, 2 * S, 2, D)
    k, v = view.keys_values(1, own_k, own_v)
    window_k, window_v = _frames_kv([10, 11, 12, 13], 1)
    expected_k = torch.cat([_rope((6,)).rotate(anchor_k), _rope((-4, -3, -2, -1)).rotate(window_k), own_k], 1)
    torch.testing.assert_close(k, expected_k, atol=1e-6, rtol=0)
    assert torch.equal(v, torch.cat([anchor_v, window_v, own_v], 1))
    assert k.data_ptr() == kv.k_rot[1].data_ptr() and v.data_ptr() == kv.v[1].data_ptr()  # a slice, not a copy
    kv.k.add_(1.0)  # later steps of the chunk only write their own K/V: the context is not rotated again
    k2, _ = view.keys_values(1, own_k + 1, own_v)
    torch.testing.assert_close(k2[:, :5 * S], expected_k[:, :5 * S], atol=1e-6, rtol=0)
    torch.testing.assert_close(k2[:, 5 * S:], own_k + 1)
    with pytest.raises(ValueError, match="overflows the K/V buffers"):
        view.keys_values(0, torch.randn(1, 3 * S, 2, D), torch.randn(1, 3 * S, 2, D))


def test_partial_views_see_a_window_tail_or_no_sink_and_commits_still_land_in_the_store():
    kv = _kv(anchor=2, window=4, forward=2)
    for start in range(0, 12, 2):
        _commit(kv, [start, start + 1], anchor_position=0, sink_len=2)
    assert (kv.anchor_filled, kv.window_frames) == (2, [8, 9, 10, 11])
    sink_k, sink_v = _frames_kv([0, 1], 1)
    tail_k, tail_v = _frames_kv([10, 11], 1)
    own_k, own_v = torch.randn(1, 2 * S, 2, D), torch.randn(1, 2 * S, 2, D)
    # sink + a window tail (Rolling Forcing's denoise pass): gathered, sink re-indexed to 8..9
    view = CacheView(kv, anchor_position=8, base=12, rope=_rope, window_from=10)
    assert not view.in_place
    k, v = view.keys_values(1, own_k, own_v)
    torch.testing.assert_close(k, torch.cat([_rope((-4, -3, -2, -1)).rotate(torch.cat([sink_k, tail_k], 1)),
                                             own_k], 1), atol=1e-6, rtol=0)
    assert torch.equal(v, torch.cat([sink_v, tail_v, own_v], 1))
    # the window without the sink (its clean pass, once the sink left its window): read in place from slot 2
    view = CacheView(kv, anchor_position=None, base=12, rope=_rope).committing([12, 13])
    assert view.in_place and view.offset == 2 * S
    for layer in range(2):
        k, v = _frames_kv([12, 13], layer)
        view.write(layer, k, v)
        ks, vs = view.keys_values(layer, k, v)
        assert ks.shape[1] == vs.shape[1] == 6 * S and torch.equal(vs[:, 4 * S:], v)
    view.finish_commit(2)
    assert _stored(kv) == ([0, 1, 10, 11, 12, 13], True)
    # a gathered commit view still writes its frames' K and V into the store
    view = CacheView(kv, anchor_position=0, base=14, rope=_rope, window_from=13).committing([14, 15])
    for layer in range(2):
        k, v = _frames_kv([14, 15], layer)
        view.write(layer, k, v)
        view.keys_values(layer, k, v)
    view.finish_commit(2)
    assert _stored(kv) == ([0, 1, 12, 13, 14, 15], True)


def test_state_tensors_restore_the_cache_exactly():
    kv = _kv(anchor=2, window=4)
    for start in range(0, 12, 2):
        _commit(kv, [start, start + 1], anchor_position=0, sink_len=2)
    restored = _kv(anchor=2, window=4)
    restored.load_state_tensors({k: t.clone() for k, t in kv.state_tensors().items()})
    assert (restored.anchor_filled, restored.window_frames) == (2, [6, 7, 8, 9, 10, 11][-4:])
    assert _stored(restored) == _stored(kv) == ([0, 1, 8, 9, 10, 11], True)


def test_reference_reindexed_by_rotation_equals_recomputation_at_the_new_index():
    torch.manual_seed(0)
    model = KnotDiT(PRESETS["tiny"]).eval()
    cfg = model.cfg
    x = torch.randn(1, 16, 1, 8, 8)
    t = torch.zeros(1, 1, dtype=torch.float64)
    text = model.encode_text(None)
    anchors = {}
    for n in (8, 12, 4096):
        kv = StreamKV(num_layers=2, anchor_frames=1, window_len=1, forward_frames=1, tokens_per_frame=16, batch=1,
                      heads=2, head_dim=32, dtype=torch.float32, device="cpu")
        with torch.no_grad():
            model(x, t, frame_positions=torch.tensor([float(n)]), text_kv=text, context=AnchorWriter(kv))
        anchors[n] = kv
    for n in (12, 4096):
        # stored keys are position-free, so moving the reference costs nothing ...
        torch.testing.assert_close(anchors[8].k[:, :, :16], anchors[n].k[:, :, :16], atol=1e-5, rtol=0)
        torch.testing.assert_close(anchors[8].v[:, :, :16], anchors[n].v[:, :, :16], atol=1e-5, rtol=0)
        # ... and rotating them to n gives the keys a pass at n would attend with
        rope = RopeTable(cfg, torch.tensor([float(n)]), 4, 4)
        for layer in range(2):
            torch.testing.assert_close(rope.rotate(anchors[8].k[layer, :, :16]),
                                       rope.rotate(anchors[n].k[layer, :, :16]), atol=1e-5, rtol=0)
