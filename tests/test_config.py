import pytest

from knot_core.config import PRESETS, DiTConfig, StreamConfig
from knot_core.errors import ConfigError


def test_wan_1_3b_derived_sizes():
    cfg = PRESETS["wan2.1-t2v-1.3b"]
    assert cfg.head_dim == 128
    assert cfg.rope_dims == (44, 42, 42)
    assert cfg.in_dim == 16
    assert cfg.tokens_per_frame(60, 104) == 1560  # 480x832
    assert PRESETS["wan2.1-1.3b-noise-ref-mask"].in_dim == 33
    assert PRESETS["wan2.1-1.3b-noise-mask-latent"].in_dim == 36


@pytest.mark.parametrize("kwargs, needle", [
    ({"chunk_len": 0}, "chunk_len=0"),
    ({"knot_len": 3}, "knot_len=3"),
    ({"window_len": 0}, "window_len=0"),
    ({"steps": (1000, 1000, 500)}, "strictly decreasing"),
    ({"steps": (250, 500)}, "strictly decreasing"),
    ({"steps": (1200,)}, "(0, 1000]"),
    ({"fusion_weight": 1.5}, "fusion_weight=1.5"),
    ({"strategy": "magic"}, "strategy='magic'"),
])
def test_bad_stream_settings_name_the_setting(kwargs, needle):
    with pytest.raises(ConfigError) as err:
        StreamConfig(**kwargs)
    assert needle in str(err.value)


def test_peer_strategies_refuse_knots():
    with pytest.raises(ConfigError, match="only the 'knot' strategy"):
        StreamConfig.for_strategy("self_forcing", knot_len=1)
    assert StreamConfig.for_strategy("longlive").sink_len == 3


def test_resolution_must_fit_patch():
    with pytest.raises(ConfigError, match="multiple of 16"):
        DiTConfig().grid(61, 104)
