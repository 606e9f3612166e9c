"""The chunk loop: running ahead, knot fusion, k = 0, determinism, bounded positions, resume."""

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from knot_core.config import PRESETS, StreamConfig
from knot_core.dit import KnotDiT
from knot_core.engine.stream import StreamInputs, generate, start_stream
from knot_core.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def tiny(layout="tiny-noise-ref-mask"):
    torch.manual_seed(0)
    return KnotDiT(PRESETS[layout]).eval()


def inputs(size=(8, 8)):
    g = torch.Generator().manual_seed(1)
    return StreamInputs(size, reference=torch.randn(1, 16, 1, *size, generator=g))


def chunks(model, cfg, inp, n, seed=3, state=None):
    state = state or start_stream(model, cfg, inp, seed=seed)
    return list(itertools.islice(generate(model, cfg, inp, state), n)), state


@pytest.mark.parametrize("c, k, s, n_init", [(3, 1, 4, 8), (2, 1, 2, 3), (4, 2, 5, 6), (3, 0, 1, 1)])
def test_running_ahead_follows_the_rule(c, k, s, n_init):
    cfg = StreamConfig(chunk_len=c, knot_len=k, ahead_step=s, ahead_init=n_init, window_len=2, steps=(1000,))
    out, _ = chunks(tiny(), cfg, inputs((4, 4)), 50)
    n, expected = n_init, []
    for j in range(50):
        i = j * c
        while i + c + k > n:  # the paper's "if", repeated only when s < c
            n += s
        expected.append(n)
    assert [ch.status.ref_index for ch in out] == expected
    assert [ch.status.first_frame for ch in out] == [j * c for j in range(50)]
    # the reference stays ahead of every chunk, by a bounded amount
    assert all(0 < ch.status.ref_index - ch.status.first_frame <= max(n_init, c + k + s) for ch in out)


def test_running_ahead_off_keeps_n():
    cfg = StreamConfig(running_ahead=False, steps=(1000,))
    out, _ = chunks(tiny(), cfg, inputs((4, 4)), 6)
    assert {ch.status.ref_index for ch in out} == {8}


def test_knot_overlap_is_fused_with_the_weight():
    model, inp = tiny(), inputs()
    first = {w: chunks(model, StreamConfig(fusion_weight=w), inp, 2)[0] for w in (0.0, 0.5, 1.0, 0.25)}
    assert torch.equal(first[0.0][0].latents, first[1.0][0].latents)  # chunk 0 has no overlap
    prev_knot, current = first[1.0][1].latents[:, :, 0], first[0.0][1].latents[:, :, 0]
    assert float((prev_knot - current).abs().max()) > 1e-3  # the two predictions differ
    for w in (0.5, 0.25):
        fused = first[w][1].latents[:, :, 0]
        torch.testing.assert_close(fused, w * prev_knot + (1 - w) * current, atol=1e-6, rtol=0)
    # later frames of chunk 1 are the same under any weight: fusion touches only the knot
    torch.testing.assert_close(first[0.5][1].latents[:, :, 1:], first[0.0][1].latents[:, :, 1:], atol=0, rtol=0)


def test_knot_is_never_output_and_k0_is_plain_causal_chunking():
    model, inp = tiny("tiny"), inputs()
    knot0 = StreamConfig(knot_len=0, anchor=False, running_ahead=False, window_len=5)
    plain = StreamConfig.for_strategy("self_forcing", window_len=5)
    a, state = chunks(model, knot0, inp, 5)
    b, _ = chunks(model, plain, inp, 5)
    assert state.knot is None
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.latents, y.latents)
    with_knot, state = chunks(model, StreamConfig(), inp, 3)
    assert all(ch.latents.shape[2] == 3 for ch in with_knot) and state.knot.shape[2] == 1
    assert state.memory.kv.window_frames == list(range(3, 9))  # the newest 6 committed frames; never the knot


def test_same_seed_same_bits_other_seed_differs():
    model, inp, cfg = tiny(), inputs(), StreamConfig()
    a, _ = chunks(model, cfg, inp, 3, seed=7)
    b, _ = chunks(model, cfg, inp, 3, seed=7)
    c, _ = chunks(model, cfg, inp, 3, seed=8)
    assert all(torch.equal(x.latents, y.latents) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[-1].latents, c[-1].latents)


@pytest.mark.parametrize("strategy", ["knot", "self_forcing"])
def test_positions_are_relative_so_frame_100000_is_like_frame_0(strategy):
    # Every RoPE position is taken relative to the chunk, so a stream translated by 100,000
    # latent frames computes exactly the same numbers: no table overflow, no reset.
    model, inp = tiny("tiny"), inputs()
    cfg = StreamConfig.for_strategy(strategy, start_from_reference=False, steps=(1000, 500))
    base, _ = chunks(model, cfg, inp, 4)
    state = start_stream(model, cfg, inp, seed=3)
    state.next_frame, state.ref_index = 100_000, 100_000 + cfg.ahead_init
    far, _ = chunks(model, cfg, inp, 4, state=state)
    assert [c.status.first_frame for c in far] == [100_000 + 3 * j for j in range(4)]
    for x, y in zip(base, far, strict=True):
        torch.testing.assert_close(x.latents, y.latents, atol=1e-5, rtol=0)


def test_bad_inputs_fail_before_work():
    model = tiny()
    with pytest.raises(InputError, match=r"expected \(B, 16, 1, 8, 8\)"):
        start_stream(model, StreamConfig(), StreamInputs((8, 8), reference=torch.zeros(1, 16, 1, 4, 4)))
    with pytest.raises(InputError, match="needs a reference|anchors on a reference"):
        start_stream(model, StreamConfig(), StreamInputs((8, 8)))
    with pytest.raises(InputError, match=r"text embedding has shape \(1, 3, 7\)"):
        start_stream(model, StreamConfig(), StreamInputs((8, 8), reference=torch.zeros(1, 16, 1, 8, 8),
                                                         text=torch.zeros(1, 3, 7)))


RESUME_SCRIPT = """
import itertools, sys, torch
sys.path.insert(0, {root!r})
from safetensors.torch import save_file
from knot_core.config import PRESETS, StreamConfig
from knot_core.dit import KnotDiT
from knot_core.engine.stream import StreamInputs, generate, start_stream
torch.manual_seed(0)
model = KnotDiT(PRESETS["tiny-noise-ref-mask"]).eval()
g = torch.Generator().manual_seed(1)
inp = StreamInputs((8, 8), reference=torch.randn(1, 16, 1, 8, 8, generator=g))
cfg = StreamConfig(strategy={strategy!r}, **{overrides!r})
state = start_stream(model, cfg, inp, seed=3)
state.load({state_path!r}, cfg)
out = [c.latents for c in itertools.islice(generate(model, cfg, inp, state), 3)]
save_file({{"out": torch.cat(out, dim=2)}}, {out_path!r})
"""


@pytest.mark.parametrize("strategy, overrides", [
    ("knot", {}), ("rolling_forcing", {"knot_len": 0, "sink_len": 3}),
    ("rolling_forcing", {"knot_len": 0, "sink_len": 3, "window_len": 2, "commit_window_len": 7}),
    ("avatar_forcing", {"knot_len": 0, "chunk_len": 4, "window_len": 2, "steps": (1000, 800, 400, 200)})])
def test_save_restore_in_new_process_continues_exactly(tmp_path, strategy, overrides):
    from safetensors.torch import load_file
    model, inp = tiny(), inputs()
    cfg = StreamConfig(strategy=strategy, **overrides)
    full, _ = chunks(model, cfg, inp, 6)
    first, state = chunks(model, cfg, inp, 3)
    state.save(tmp_path / "state.safetensors", cfg)
    script = RESUME_SCRIPT.format(root=str(ROOT), strategy=strategy, overrides=overrides,
                                  state_path=str(tmp_path / "state.safetensors"), out_path=str(tmp_path / "out.st"))
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    resumed = load_file(str(tmp_path / "out.st"))["out"]
    assert torch.equal(resumed, torch.cat([c.latents for c in full[3:]], dim=2))


def test_resume_refuses_other_settings(tmp_path):
    model, inp = tiny(), inputs()
    _, state = chunks(model, StreamConfig(), inp, 1)
    state.save(tmp_path / "s.safetensors", StreamConfig())
    fresh = start_stream(model, StreamConfig(chunk_len=4), inp)
    with pytest.raises(InputError, match="chunk_len"):
        fresh.load(tmp_path / "s.safetensors", StreamConfig(chunk_len=4))


@pytest.mark.parametrize("layout", ["tiny", "tiny-noise-ref-mask", "tiny-noise-mask-latent"])
def test_keep_mask_holds_the_reference_region_fixed(layout):
    model, inp = tiny(layout), inputs()
    keep = torch.zeros(8, 8)
    keep[:, :3] = 1  # e.g. the background on the left
    masked = StreamInputs(inp.latent_size, reference=inp.reference, keep_mask=keep)
    out, _ = chunks(model, StreamConfig(), masked, 3)
    video = torch.cat([c.latents for c in out], dim=2)  # (1, 16, 9, 8, 8)
    ref = inp.reference.expand_as(video)
    assert torch.equal(video[..., :3], ref[..., :3])
    assert float((video[:, :, 1:, :, 3:] - ref[:, :, 1:, :, 3:]).abs().mean()) > 0.1
