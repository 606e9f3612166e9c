"""Our streaming engine, set to LiveTalk's and Causal Forcing's loops (`model_loops.LOOPS`), equals cache-free
references of the authors' loops (tests/reference_peers.py) within 1e-5 in fp32 over >= 8 chunks; a wrong
variant (window off by one, sink re-indexed, float timesteps, noised reference, wrong first-chunk steps) fails."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch

from knot_core.adapters.avatar_audio import AvatarAudioAdapter, AvatarAudioConfig
from knot_core.config import DiTConfig
from knot_core.dit import KnotDiT
from knot_core.engine.stream import StreamInputs, generate, start_stream
from knot_core.model_loops import LOOPS
from knot_core.signals.base import DrivingSignal
from tests.reference_peers import causal_forcing_reference, livetalk_reference

TOL = 1e-5
WRONG = 1e-3  # a wrong variant differs by at least this much somewhere
HW = (8, 8)
SEED = 7
TINY = dict(dim=64, ffn_dim=128, num_heads=2, freq_dim=32, text_dim=32, text_len=8)


class RowsSignal(DrivingSignal):
    """Fixed per-video-frame rows, served with the Wan VAE mapping (LiveTalk's: latent 0 = frame 0 x4)."""

    name = "audio"

    def __init__(self, rows: torch.Tensor):
        super().__init__(16.0, rows.shape[0])
        self.rows = rows

    @property
    def row_shape(self):
        return tuple(self.rows.shape[1:])

    def video_features(self, start, count):
        return self.rows[start:start + count]


def stream_chunks(model, cfg, inputs, chunks):
    state = start_stream(model, cfg, inputs, seed=SEED)
    return [c.latents for c in itertools.islice(generate(model, cfg, inputs, state), chunks)]


def _max_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def livetalk_case(blocks: int = 8):
    """(model, inputs, reference chunks) of a tiny LiveTalk-layout DiT with random audio rows."""
    torch.manual_seed(0)
    # 4 layers: LiveTalk injects audio before blocks 2..num_layers//2 (here block 2, one audio_cond_proj)
    model = KnotDiT(DiTConfig(num_layers=4, cond_layout="noise_ref_mask", **TINY)).eval()
    model.add_adapter("avatar_audio", AvatarAudioAdapter(AvatarAudioConfig(feature_dim=8, token_dim=4, dim=64,
                                                                           num_blocks=1)).eval())
    rows = torch.randn(4 * 3 * blocks - 3, 8)  # T = 4n - 3 video frames for n latents
    inputs = StreamInputs(HW, reference=torch.randn(1, 16, 1, *HW), text=torch.randn(1, 5, 32),
                          signals=(RowsSignal(rows),))
    with torch.no_grad():
        ref = livetalk_reference(model, model.encode_text(inputs.text), inputs.reference, rows, SEED, blocks)
    return model, inputs, ref


@pytest.fixture(scope="module")
def livetalk():
    return livetalk_case()


def test_livetalk_loop_equals_the_reference(livetalk):
    model, inputs, ref = livetalk
    cfg = LOOPS["livetalk"].sampler.stream
    ours = stream_chunks(model, cfg, inputs, len(ref))
    assert len(ours) == 8 and ours[0].shape == (1, 16, 3, *HW)
    assert _max_diff(ours, ref) <= TOL
    assert torch.equal(ours[0][:, :, :1], inputs.reference)  # the reference pinned at latent 0
    assert float((ours[0] - ours[-1]).abs().max()) > 1e-2  # not trivially constant


@pytest.mark.parametrize("change", [
    {"sink_positions": "relative"},  # sink moved next to the window instead of its absolute positions
    {"window_len": 2}, {"window_len": 4},  # window off by one
    {"sink_len": 8},
    {"timestep_dtype": "float32"},  # 937.5 instead of the bf16 936 the model was given
    {"reference_pin": "noised"},  # reference re-noised with the block instead of pinned clean
])
def test_livetalk_wrong_variants_fail(livetalk, change):
    model, inputs, ref = livetalk
    cfg = LOOPS["livetalk"].sampler.stream.replace(**change)
    assert _max_diff(stream_chunks(model, cfg, inputs, len(ref)), ref) > WRONG


def test_livetalk_audio_alignment_matters(livetalk):
    """The AvatarForcing alignment (zero row for latent 0, rows shifted by one) gives another stream."""
    model, inputs, ref = livetalk

    class ZeroRowFirst(RowsSignal):
        def video_frames_of_latent(self, k):
            return [0] * 4 if k == 0 else list(range(4 * k - 4, 4 * k))

    shifted = replace(inputs, signals=(ZeroRowFirst(inputs.signals[0].rows),))
    assert _max_diff(stream_chunks(model, LOOPS["livetalk"].sampler.stream, shifted, len(ref)), ref) > WRONG


def t2v_case():
    torch.manual_seed(1)
    model = KnotDiT(DiTConfig(num_layers=2, **TINY)).eval()
    return model, StreamInputs(HW, text=torch.randn(1, 5, 32))


@pytest.fixture(scope="module")
def t2v():
    return t2v_case()


CF_CASES = {  # loop -> chunks run (chunk-wise: 8 x 3 = 24 latents, past the peer's 21: our sliding extension)
    "causal_forcing_chunkwise": 8, "causal_forcing_framewise": 10, "causal_forcing_pp_2step": 9,
    "causal_forcing_pp_1step": 9,
}


def cf_reference(case, name, chunks):
    """The reference chunks of a Causal Forcing loop on case = (model, inputs)."""
    model, inputs = case
    s = LOOPS[name].sampler.stream
    with torch.no_grad():
        return causal_forcing_reference(model, model.encode_text(inputs.text), HW, SEED, chunks, s.chunk_len,
                                        s.steps, s.first_chunk_steps)


@pytest.mark.parametrize("name", list(CF_CASES))
def test_causal_forcing_loops_equal_the_reference(t2v, name):
    model, inputs = t2v
    ref = cf_reference(t2v, name, CF_CASES[name])
    ours = stream_chunks(model, LOOPS[name].sampler.stream, inputs, len(ref))
    assert len(ours) == CF_CASES[name] >= 8
    assert _max_diff(ours, ref) <= TOL
    assert float((ours[0] - ours[-1]).abs().max()) > 1e-2


@pytest.mark.parametrize("name, change", [
    ("causal_forcing_chunkwise", {"window_len": 17}),  # drops frame 0 from block 6 (frames 18-20)
    ("causal_forcing_framewise", {"window_len": 8}),  # a local window instead of global attention
    ("causal_forcing_pp_2step", {"first_chunk_steps": ()}),  # block 0 with the 2-step list
    ("causal_forcing_pp_1step", {"steps": (1000, 500)}),
])
def test_causal_forcing_wrong_variants_fail(t2v, name, change):
    model, inputs = t2v
    ref = cf_reference(t2v, name, CF_CASES[name])
    cfg = LOOPS[name].sampler.stream.replace(**change)
    assert _max_diff(stream_chunks(model, cfg, inputs, len(ref)), ref) > WRONG


def test_a_bf16_timestep_gets_its_sinusoid_in_bf16_as_livetalk_computes_it():
    """LiveTalk's sinusoidal_embedding_1d: float64 sinusoid cast to the timestep's dtype, then to the model's."""
    from knot_core.dit import sinusoidal_embedding

    torch.manual_seed(0)
    model = KnotDiT(DiTConfig(num_layers=1, **TINY)).eval()
    seen = []
    model.time_embedding.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    t = torch.tensor([[936.0]], dtype=torch.bfloat16)
    with torch.no_grad():
        model(torch.randn(1, 16, 1, *HW), t, frame_positions=torch.zeros(1), text_kv=model.encode_text(None))
        model(torch.randn(1, 16, 1, *HW), t.double(), frame_positions=torch.zeros(1), text_kv=model.encode_text(None))
    expected = sinusoidal_embedding(torch.tensor([[936.0]], dtype=torch.float64), 32).to(torch.bfloat16).float()
    assert torch.equal(seen[0], expected)
    assert not torch.equal(seen[1], expected) and (seen[1] - expected).abs().max() < 1e-2  # fp32 path unrounded


@pytest.mark.parametrize("name", ["livetalk", "causal_forcing_pp_2step"])
def test_a_resumed_stream_equals_an_uninterrupted_one(tmp_path, livetalk, t2v, name):
    """Stopped after chunk 4 (LiveTalk: sink still filling at 3, full at 4; CF++: past its 4-step block 0)."""
    model, inputs = (livetalk[0], livetalk[1]) if name == "livetalk" else t2v
    cfg = LOOPS[name].sampler.stream
    full = stream_chunks(model, cfg, inputs, 7)
    state = start_stream(model, cfg, inputs, seed=SEED)
    first = [c.latents for c in itertools.islice(generate(model, cfg, inputs, state), 4)]
    state.save(tmp_path / "state.safetensors", cfg)
    fresh = start_stream(model, cfg, inputs, seed=0)  # another seed: everything must come from the file
    fresh.load(tmp_path / "state.safetensors", cfg)
    rest = [c.latents for c in itertools.islice(generate(model, cfg, inputs, fresh), 3)]
    assert all(torch.equal(a, b) for a, b in zip(first + rest, full, strict=True))


@pytest.mark.parametrize("name", ["livetalk", "causal_forcing_chunkwise", "causal_forcing_framewise"])
def test_the_engines_visibility_is_the_peers_cache_arithmetic_for_every_block(name):
    """Without a model: for every block the peer's 1024-frame RoPE table allows, what our engine shows a block
    (sink/anchor frames and window) is what the peer's cache index arithmetic (PeerKVCache) shows it."""
    from knot_core.engine.visibility import commit_visible, denoise_visible
    from tests.reference_peers import PeerKVCache

    cfg = LOOPS[name].sampler.stream
    c = cfg.chunk_len
    cache = PeerKVCache(15, 9, 15, True) if name == "livetalk" else PeerKVCache(21, 0, 21, False, True)
    for i in range(0, 1024 - c + 1, c):
        for visible in (denoise_visible(cfg, i, 0), commit_visible(cfg, i, 0)):
            peer = cache.forward(i, c)
            sink = list(range(min(cfg.sink_len, i)))
            assert visible.anchor_position in ((0,) if cfg.sink_len else (None,))
            ours = sink + list(range(visible.window_from, i))
            assert ours == peer, (name, i, ours, peer)
