"""render_plan: the latent frames a render asks its signals for, counted against the real stream loop."""

import itertools

import pytest
import torch

from knot_core.config import PRESETS, StreamConfig
from knot_core.dit import KnotDiT
from knot_core.driving import DrivingAdapter
from knot_core.engine.stream import StreamInputs, generate, start_stream
from knot_core.errors import InputError
from knot_core.pipeline import video_frames_for
from knot_core.render_plan import (
    check_vae_pair,
    chunks_for,
    frames_until_signal_end,
    latent_frames_asked,
    plan_frames,
)


class ProbeSignal:
    """A driving signal that records the latent frames the stream asks for."""

    name = "probe"

    def __init__(self):
        self.highest = 0

    def latent_features(self, start, count):
        self.highest = max(self.highest, start + count)
        return torch.zeros(count, 1)


def _asked_by_generate(cfg: StreamConfig, chunks: int) -> int:
    torch.manual_seed(0)
    model = KnotDiT(PRESETS["tiny"]).eval()
    adapter = DrivingAdapter()
    adapter.signal = "probe"
    model.add_adapter("probe", adapter)
    probe = ProbeSignal()
    inputs = StreamInputs((2, 2), reference=torch.randn(1, 16, 1, 2, 2), signals=(probe,))
    list(itertools.islice(generate(model, cfg, inputs, start_stream(model, cfg, inputs)), chunks))
    return probe.highest


@pytest.mark.parametrize("cfg", [
    StreamConfig(chunk_len=3, knot_len=1, steps=(1000, 500)),
    StreamConfig(chunk_len=2, knot_len=1, steps=(1000,)),
    StreamConfig.for_strategy("self_forcing", chunk_len=3, steps=(1000, 500)),
    StreamConfig.for_strategy("rolling_forcing", chunk_len=2, steps=(1000, 750, 500)),
    StreamConfig.for_strategy("avatar_forcing", steps=(1000, 500)),
], ids=["knot_c3k1", "knot_c2k1", "self_forcing", "rolling", "avatar"])
def test_latent_frames_asked_matches_the_stream_loop(cfg):
    for chunks in (1, 3):
        assert latent_frames_asked(cfg, chunks) == _asked_by_generate(cfg, chunks)


def test_avatar_forcing_chunks_cover_the_video_with_the_reference_as_latent_0():
    cfg = StreamConfig.for_strategy("avatar_forcing")  # 1 + 4n latents after n chunks
    assert [chunks_for(cfg, f) for f in (1, 17, 18, 33, 34)] == [1, 1, 2, 2, 3]  # 1 frame: still one chunk
    assert frames_until_signal_end(cfg, 1 + 4 * 6, 25) == video_frames_for(1 + 4 * 3)  # 3 blocks + 3 in flight


def test_frame_counts():
    cfg = StreamConfig(chunk_len=3, knot_len=1)
    assert [chunks_for(cfg, n) for n in (1, 9, 10, 21, 22)] == [1, 1, 2, 2, 3]
    assert plan_frames(cfg, 16, 2.0, "seconds", None) == 32
    assert plan_frames(cfg, 25, 7, "frames", None) == 7
    # 13 latent frames: chunks with c + k = 4 fit three times (3*3 + 1 = 10 <= 13; 4*3 + 1 = 13 <= 13)
    assert frames_until_signal_end(cfg, 13, 16) == video_frames_for(12) == 45
    assert plan_frames(cfg, 16, 0, "signal", 13) == 45
    assert plan_frames(cfg, 16, 45, "frames", 13) == 45


def test_too_short_signal_and_bad_lengths_are_refused():
    cfg = StreamConfig(chunk_len=3, knot_len=1)
    with pytest.raises(InputError, match="shorter than the requested length: 46 frames .* need 16 latent frames "
                                         "of signal, it has 13 .*enough for 45 frames"):
        plan_frames(cfg, 16, 46, "frames", 13)
    with pytest.raises(InputError, match="even one chunk needs 4"):
        plan_frames(cfg, 16, 0, "signal", 3)
    with pytest.raises(InputError, match="no driving signal with an end"):
        plan_frames(cfg, 16, 0, "signal", None)
    with pytest.raises(InputError, match="gives 0 video frames"):
        plan_frames(cfg, 16, 0.01, "seconds", None)
    with pytest.raises(InputError, match="length unit 'minutes'"):
        plan_frames(cfg, 16, 1, "minutes", None)


def test_vae_pair():
    check_vae_pair(16, 16)
    with pytest.raises(InputError, match="the VAE has 48 latent channels but the model works in 16"):
        check_vae_pair(16, 48)
