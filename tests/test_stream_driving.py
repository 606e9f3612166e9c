"""Driving adapters through the engine: features asked per chunk, cached == recomputed."""

import itertools

import pytest
import torch

from knot_core.adapters.avatar_audio import AvatarAudioAdapter, AvatarAudioConfig
from knot_core.adapters.cross_attention import CrossAttentionAdapter, CrossAttentionConfig
from knot_core.config import PRESETS, StreamConfig
from knot_core.dit import KnotDiT
from knot_core.engine.stream import StreamInputs, generate, start_stream
from knot_core.errors import InputError
from knot_core.signals.base import DrivingSignal
from tests.reference_memory import ReferenceMemory


class TableSignal(DrivingSignal):
    """A fixed random feature table; records which video frames the engine asked for."""

    def __init__(self, name, rows, dim, seed):
        self.name = name
        super().__init__(fps=16, num_frames=rows)
        self.table = torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed))
        self.asked = []

    @property
    def row_shape(self):
        return (self.table.shape[1],)

    def video_features(self, start, count):
        self.asked.append((start, count))
        return self.table[start:start + count]


def _model():
    torch.manual_seed(0)
    model = KnotDiT(PRESETS["tiny-noise-ref-mask"]).eval()
    cross = CrossAttentionAdapter(CrossAttentionConfig(signal="expression", feature_dim=6, dim=64, num_heads=2,
                                                       blocks=(0, 1)))
    avatar = AvatarAudioAdapter(AvatarAudioConfig(feature_dim=10, token_dim=8, dim=64, first_block=0, num_blocks=2))
    for p in list(cross.parameters()) + list(avatar.parameters()):
        torch.nn.init.normal_(p, std=0.3)  # no zero-init identity: the adapters must matter
    model.add_adapter("expression", cross)
    model.add_adapter("avatar_audio", avatar)
    return model.eval()


def _signals():
    return [TableSignal("expression", 200, 6, 1), TableSignal("audio", 200, 10, 2)]


@pytest.mark.parametrize("strategy", ["knot", "rolling_forcing"])
def test_driven_stream_equals_reference_recomputation(strategy):
    model = _model()
    # rolling_forcing's own clean-pass window is tested against its whole-loop reference (test_peer_loops.py);
    # ReferenceMemory states the commit pass that sees the denoise context (commit_window_len = 0)
    extra = {"sink_len": 3, "commit_window_len": 0} if strategy != "knot" else {}
    cfg = StreamConfig.for_strategy(strategy, steps=(1000, 500), **extra)
    ref = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    cached_in = StreamInputs((8, 8), reference=ref, signals=_signals())
    naive_in = StreamInputs((8, 8), reference=ref, signals=_signals())
    state = start_stream(model, cfg, cached_in, seed=1)
    cached = [c.latents for c in itertools.islice(generate(model, cfg, cached_in, state), 5)]
    state = start_stream(model, cfg, naive_in, seed=1, memory=ReferenceMemory(model, cfg, model.encode_text(None)))
    naive = [c.latents for c in itertools.islice(generate(model, cfg, naive_in, state), 5)]
    assert max(float((a - b).abs().max()) for a, b in zip(cached, naive, strict=True)) <= 1e-5
    # features are requested chunk by chunk, never the whole signal
    asked = cached_in.signals[0].asked
    assert max(count for _, count in asked) <= 4 * (cfg.span if strategy == "knot" else 3 * len(cfg.steps))
    assert max(start + count for start, count in asked) < 200


def test_driving_changes_the_video_and_a_missing_signal_is_named():
    model = _model()
    cfg = StreamConfig(steps=(1000,))
    ref = torch.randn(1, 16, 1, 8, 8)
    a = next(generate(model, cfg, i := StreamInputs((8, 8), reference=ref, signals=_signals()),
                      start_stream(model, cfg, i, seed=1))).latents
    other = [TableSignal("expression", 200, 6, 9), TableSignal("audio", 200, 10, 2)]
    b = next(generate(model, cfg, j := StreamInputs((8, 8), reference=ref, signals=other),
                      start_stream(model, cfg, j, seed=1))).latents
    assert float((a - b).abs().max()) > 1e-3
    with pytest.raises(InputError, match="driven by the 'audio' signal"):
        start_stream(model, cfg, StreamInputs((8, 8), reference=ref, signals=other[:1]))


def test_model_with_adapters_round_trips_through_our_format(tmp_path):
    from knot_core.checkpoints import load_dit
    from knot_core.model_file import save_knot_model

    model = _model()
    save_knot_model(model, tmp_path / "driven.safetensors")
    loaded, info = load_dit(tmp_path / "driven.safetensors", dtype="fp32")
    assert sorted((a.name, a.type) for a in info.adapters) == [("avatar_audio", "avatar_audio"),
                                                               ("expression", "cross_attention")]
    cfg = StreamConfig(steps=(1000, 500))
    ref = torch.randn(1, 16, 1, 8, 8)
    outs = []
    for m in (model, loaded):
        inp = StreamInputs((8, 8), reference=ref, signals=_signals())
        outs.append(torch.cat([c.latents for c in itertools.islice(generate(m, cfg, inp, start_stream(m, cfg, inp)),
                                                                   2)], dim=2))
    assert torch.equal(outs[0], outs[1])
