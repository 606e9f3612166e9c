"""The peers' own loops on our streaming engine == their cache-free restatements (fp32, tiny presets, >= 8 chunks).

AvatarForcing and Rolling Forcing against tests/reference_rolling.py (whole loop), LongLive's two sink
modes against tests/reference_memory.py; each with a wrong variant that must fail, and the bounds that
keep positions from growing past the peers' 1024-frame RoPE tables.
"""

import dataclasses
import itertools

import pytest
import torch

from knot_core.adapters.avatar_audio import AvatarAudioAdapter, AvatarAudioConfig
from knot_core.config import PRESETS, StreamConfig
from knot_core.dit import KnotDiT
from knot_core.engine.noise import NoiseSource
from knot_core.engine.schedule import FlowSchedule
from knot_core.engine.stream import StreamInputs, generate, start_stream
from knot_core.engine.visibility import PEER_ROPE_FRAMES, commit_visible, denoise_visible
from knot_core.signals.base import NO_FRAME, DrivingSignal
from tests.reference_memory import ReferenceMemory
from tests.reference_rolling import (
    AF_LAYOUT,
    AVATAR_FORCING,
    RF_LAYOUT,
    ROLLING_FORCING,
    RollingReference,
    peer_tables,
    replay_cache,
)

SEED = 3
SIZE = (8, 8)


class AvatarTable(DrivingSignal):
    """Random audio rows with AvatarForcing's latent mapping: latent 0 = the zero row x4, latent k = rows 4k-4..4k-1."""

    name = "audio"

    def __init__(self, rows=400, dim=10):
        super().__init__(fps=25, num_frames=rows)
        self.table = torch.randn(rows, dim, generator=torch.Generator().manual_seed(2))

    @property
    def row_shape(self):
        return (self.table.shape[1],)

    def video_features(self, start, count):
        return self.table[start:start + count]

    def video_frames_of_latent(self, k):
        return [NO_FRAME] * 4 if k == 0 else list(range(4 * (k - 1), 4 * k))


def _avatar_model():
    torch.manual_seed(0)
    model = KnotDiT(PRESETS["tiny-noise-ref-mask"]).eval()
    audio = AvatarAudioAdapter(AvatarAudioConfig(feature_dim=10, token_dim=8, dim=64, first_block=0, num_blocks=2))
    for p in audio.parameters():
        torch.nn.init.normal_(p, std=0.3)  # the audio must matter
    model.add_adapter("avatar_audio", audio)
    return _sharpen(model)


def _sharpen(model):
    """Sharper self-attention (larger q/k norm gains), so where a cached frame sits matters at 1e-4."""
    with torch.no_grad():
        for block in model.blocks:
            block.self_attn.norm_q.weight.mul_(3.0)
            block.self_attn.norm_k.weight.mul_(3.0)
    return model.eval()


def _engine(model, cfg, inputs, chunks):
    state = start_stream(model, cfg, inputs, seed=SEED)
    return [c.latents for c in itertools.islice(generate(model, cfg, inputs, state), chunks)]


def _max_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def _avatar_case():
    model, ref = _avatar_model(), torch.randn(1, 16, 1, *SIZE, generator=torch.Generator().manual_seed(5))
    text = torch.randn(1, 5, model.cfg.text_dim, generator=torch.Generator().manual_seed(6))
    return model, ref, text


def _avatar_reference(model, ref, text, chunks, reference_cls=RollingReference, peer=AVATAR_FORCING):
    loop = reference_cls(model, peer, model.encode_text(text), NoiseSource(SEED), reference=ref,
                         signals=[AvatarTable()], latent_size=SIZE)
    return loop.run(chunks)


def test_avatar_forcing_equals_the_authors_loop():
    model, ref, text = _avatar_case()
    cfg = StreamConfig.for_strategy("avatar_forcing")
    ours = _engine(model, cfg, StreamInputs(SIZE, reference=ref, text=text, signals=[AvatarTable()]), 8)
    theirs = _avatar_reference(model, ref, text, 8)
    assert [x.shape[2] for x in ours] == [5] + [4] * 7  # the reference latent is video latent 0
    assert torch.equal(ours[0][:, :, :1], ref)
    assert _max_diff(ours, theirs) <= 1e-5, [float((x - y).abs().max()) for x, y in zip(ours, theirs)]
    assert float((ours[1] - ours[-1]).abs().max()) > 1e-2  # not trivially constant


class RefRopedBeforeWindowOnCommit(RollingReference):
    """Wrong variant: the clean pass places the reference like the denoise pass (not at 0)."""

    def commit_context(self, i):
        return self.denoise_context(i)


class NoAudioOnReference(RollingReference):
    """Wrong variant: the reference pass gets no driving signal."""

    def _driving(self, first, count):
        return None if (first, count) == (0, 1) else super()._driving(first, count)


@pytest.mark.parametrize("variant", ["window 3", "reference placed as in denoise", "no audio on the reference"])
def test_avatar_forcing_wrong_variants_fail(variant):
    model, ref, text = _avatar_case()
    cfg = StreamConfig.for_strategy("avatar_forcing")
    ours = _engine(model, cfg, StreamInputs(SIZE, reference=ref, text=text, signals=[AvatarTable()]), 8)
    if variant == "window 3":
        theirs = _avatar_reference(model, ref, text, 8, peer=dataclasses.replace(AVATAR_FORCING, denoise_window=3))
    elif variant == "reference placed as in denoise":
        theirs = _avatar_reference(model, ref, text, 8, reference_cls=RefRopedBeforeWindowOnCommit)
    else:
        theirs = _avatar_reference(model, ref, text, 8, reference_cls=NoAudioOnReference)
    assert _max_diff(ours, theirs) > 1e-4, _max_diff(ours, theirs)


def _rolling_case():
    torch.manual_seed(0)
    model = _sharpen(KnotDiT(PRESETS["tiny"]))
    text = torch.randn(1, 5, model.cfg.text_dim, generator=torch.Generator().manual_seed(6))
    return model, text


@pytest.mark.parametrize("peer, overrides, equal", [
    (ROLLING_FORCING, {}, True),
    (ROLLING_FORCING, {"commit_window_len": 0}, False),  # clean pass sees only the denoise context
    (dataclasses.replace(ROLLING_FORCING, commit_window=21), {}, False),  # commit window off by one block
    (dataclasses.replace(ROLLING_FORCING, denoise_window=6), {}, False),
])
def test_rolling_forcing_equals_the_authors_loop(peer, overrides, equal):
    model, text = _rolling_case()
    cfg = StreamConfig.for_strategy("rolling_forcing", **overrides)
    chunks = 10  # the sink leaves the clean pass's 18-frame window at block 7, read from block 8 on
    ours = _engine(model, cfg, StreamInputs(SIZE, text=text), chunks)
    theirs = RollingReference(model, peer, model.encode_text(text), NoiseSource(SEED), latent_size=SIZE).run(chunks)
    diff = _max_diff(ours, theirs)
    assert (diff <= 1e-5) if equal else (diff > 1e-4), diff
    assert float((ours[0] - ours[-1]).abs().max()) > 1e-2


@pytest.mark.parametrize("mode, reference_mode, window", [
    ("absolute", "relative", 6), ("relative", "absolute", 6), ("absolute", "absolute", 5)])
def test_longlive_wrong_sink_position_or_window_fails(mode, reference_mode, window):
    torch.manual_seed(0)
    model = _sharpen(KnotDiT(PRESETS["tiny"]))
    text = torch.randn(1, 5, model.cfg.text_dim)
    inputs = StreamInputs(SIZE, text=text)
    cfg = StreamConfig.for_strategy("longlive", sink_positions=mode)
    ours = _engine(model, cfg, inputs, 8)
    ref_cfg = cfg.replace(sink_positions=reference_mode, window_len=window)
    state = start_stream(model, ref_cfg, inputs, seed=SEED, memory=ReferenceMemory(model, ref_cfg,
                                                                                   model.encode_text(text)))
    theirs = [c.latents for c in itertools.islice(generate(model, ref_cfg, inputs, state), 8)]
    assert _max_diff(ours, theirs) > 1e-4


def test_schedule_tables_are_built_in_float32_like_the_peers():
    sigmas, timesteps = peer_tables(5.0)
    sched = FlowSchedule(5.0)
    assert sched.warp(800) == float(timesteps[200]) == float(torch.tensor(952.38104, dtype=torch.float32))
    assert torch.equal(sched.sigmas, sigmas.double()) and torch.equal(sched.timesteps, timesteps.double())
    t = torch.tensor([[sched.warp(s) for s in (1000, 800, 400, 200)]], dtype=torch.float64)
    assert torch.equal(sched.sigma(t), sigmas[[0, 200, 600, 800]].double()[None])


@pytest.mark.parametrize("strategy, overrides", [
    ("avatar_forcing", {}), ("longlive", {}), ("longlive", {"sink_positions": "relative"}),
    ("rolling_forcing", {}), ("self_forcing", {}), ("knot", {})])
def test_positions_never_grow(strategy, overrides):
    """Every distance a forward sees is bounded however far the stream runs; inside the peers' 1024-frame
    RoPE range an absolute placement is exactly absolute."""
    cfg = StreamConfig.for_strategy(strategy, **overrides)
    reach = PEER_ROPE_FRAMES - cfg.max_forward_frames
    for i in (cfg.lead_frames + cfg.chunk_len * 40, 10**4, 10**7):
        for seen in (denoise_visible(cfg, i, i + cfg.ahead_init), commit_visible(cfg, i, i + cfg.ahead_init)):
            assert 0 < i - seen.window_from <= max(cfg.stored_window_len, cfg.window_len)
            if seen.anchor_position is not None:
                assert -cfg.ahead_init - cfg.ahead_step <= i - seen.anchor_position <= reach
    if strategy == "avatar_forcing":
        assert commit_visible(cfg, 1001, 0).anchor_position == 0  # inside the authors' range: at 0
        assert 10**7 - commit_visible(cfg, 10**7, 0).anchor_position == reach == 1008


def test_avatar_forcing_far_past_the_authors_range_is_translation_invariant():
    """Past the 1024-frame RoPE range the clean pass holds the reference at distance 1008: a stream at
    latent 100,001 and one at 200,001 compute the same numbers (no growth, no overflow)."""
    _, ref, text = _avatar_case()
    torch.manual_seed(0)
    model = _sharpen(KnotDiT(PRESETS["tiny-noise-ref-mask"]))  # no audio adapter: no signal that long needed
    cfg = StreamConfig.for_strategy("avatar_forcing", steps=(1000, 500))
    outs = []
    for start in (100_001, 200_001):
        inputs = StreamInputs(SIZE, reference=ref, text=text)
        state = start_stream(model, cfg, inputs, seed=SEED)
        state.next_frame = start
        outs.append([c.latents for c in itertools.islice(generate(model, cfg, inputs, state), 4)])
    assert _max_diff(outs[0], outs[1]) <= 1e-5



def _reference_seen(entries, sink):
    """(position of the anchor's frame 0, window frames) of a reference context: the anchor is the reference
    segment or Rolling Forcing's sink frames 0..sink-1; the window, the other committed frames."""
    anchor, window = None, []
    for sid, delta, frames in entries:
        if sid == ReferenceMemory.REF:
            anchor = delta
            continue
        anchor = delta if frames[0] < sink else anchor
        window += [f for f in frames if f >= sink]
    return anchor, sorted(window)


def _engine_seen(seen, first_committed, i, anchor_exists):
    anchor = seen.anchor_position - seen.anchor_from if anchor_exists and seen.anchor_position is not None else None
    return anchor, [f for f in range(first_committed, i) if f >= seen.window_from]


@pytest.mark.parametrize("peer, layout, strategy", [
    (AVATAR_FORCING, AF_LAYOUT, "avatar_forcing"), (ROLLING_FORCING, RF_LAYOUT, "rolling_forcing")])
def test_reference_and_engine_rules_are_the_authors_cache_arithmetic(peer, layout, strategy):
    """The authors' K/V-cache index arithmetic, replayed over every block their 1024-frame RoPE table allows
    (past every eviction pattern), says block by block what each pass sees; the reference's rules and the
    engine's visibility say the same."""
    cfg, c = StreamConfig.for_strategy(strategy), peer.chunk
    ref = RollingReference(None, peer, None, None)
    replay = replay_cache(peer, layout, 400)
    assert len(replay) == {"avatar_forcing": 252, "rolling_forcing": 337}[strategy]  # their RoPE table's end
    for k, (d_at, d_seen, c_at, c_seen) in enumerate(replay):
        i = layout.prefix + k * c
        ref.block_segment = {layout.prefix + b * c: b + 1 for b in range(k)}  # blocks committed so far
        assert _reference_seen(ref.denoise_context(i), peer.sink) == (d_at, d_seen), k
        assert _reference_seen(ref.commit_context(i), peer.sink) == (c_at, c_seen), k
        anchor_exists, first = peer.reference or k > 0, layout.prefix + peer.sink
        assert _engine_seen(denoise_visible(cfg, i, 0), first, i, anchor_exists) == (d_at, d_seen), k
        assert _engine_seen(commit_visible(cfg, i, 0), first, i, anchor_exists) == (c_at, c_seen), k
