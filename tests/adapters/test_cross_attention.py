"""Frame-aligned cross-attention adapter: identity when fresh, real attention, frame locality, active mask."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from knot_core.adapters import CrossAttentionAdapter, CrossAttentionConfig
from knot_core.errors import InputError

B, FRAMES, S, DIM = 2, 5, 6, 16


def adapter(neighbourhood: int = 0, trained: bool = True) -> CrossAttentionAdapter:
    torch.manual_seed(0)
    cfg = CrossAttentionConfig(signal="pose", feature_dim=10, dim=DIM, num_heads=2, blocks=(1, 3),
                               neighbourhood=neighbourhood)
    module = CrossAttentionAdapter(cfg)
    if trained:  # as if trained: the zero-initialised output projection has moved
        for layer in module.layers:
            nn.init.normal_(layer.o.weight, std=0.2)
    return module


def run(module, features, active=None, index=1):
    tokens = module.encode(features)
    x = torch.randn(B, FRAMES * S, DIM, generator=torch.Generator().manual_seed(1))
    return x, module.after_block(index, x, tokens, active)


def test_fresh_adapter_is_the_identity_and_keys_are_named():
    module = adapter(trained=False)
    x, out = run(module, torch.randn(B, FRAMES, 4, 2, 5))  # pose-like rows [.., 2, 5] -> 10 values
    assert torch.equal(out, x)
    assert module.after_block(2, x, module.encode(torch.randn(B, FRAMES, 4, 10)), None) is x
    assert module.signal == "pose"
    assert {k.split(".")[0] for k in module.state_dict()} == {"token_proj", "token_norm", "layers"}
    assert "layers.1.o.weight" in module.state_dict()


def test_matches_plain_attention_over_the_frames_own_tokens():
    module = adapter(neighbourhood=0)
    features = torch.randn(B, FRAMES, 4, 10)
    x, out = run(module, features)
    layer, tokens = module.layers[0], module.encode(features)
    f = 3
    q = layer.q(layer.norm(x.view(B, FRAMES, S, DIM)[:, f])).view(B, S, 2, 8).transpose(1, 2)
    k = layer.k(tokens[:, f]).view(B, 4, 2, 8).transpose(1, 2)
    v = layer.v(tokens[:, f]).view(B, 4, 2, 8).transpose(1, 2)
    attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1) @ v  # [B, h, S, hd]
    expected = x.view(B, FRAMES, S, DIM)[:, f] + layer.o(attn.transpose(1, 2).reshape(B, S, DIM))
    assert torch.allclose(out.view(B, FRAMES, S, DIM)[:, f], expected, atol=1e-5)


@pytest.mark.parametrize("neighbourhood,changed", [(0, {2}), (1, {1, 2, 3})])
def test_each_frame_sees_only_its_neighbourhood(neighbourhood, changed):
    module = adapter(neighbourhood)
    features = torch.randn(B, FRAMES, 4, 10)
    _, base = run(module, features)
    features[:, 2] += 1.0
    _, moved = run(module, features)
    diff = (moved - base).view(B, FRAMES, S, DIM).abs().amax(dim=(0, 2, 3))
    assert {f for f in range(FRAMES) if diff[f] > 0} == changed


def test_inactive_frames_untouched_and_offer_no_keys():
    module = adapter(neighbourhood=1)
    active = torch.tensor([True, False, True, True, False])
    features = torch.randn(B, FRAMES, 4, 10)
    x, out = run(module, features, active)
    x4, out4 = x.view(B, FRAMES, S, DIM), out.view(B, FRAMES, S, DIM)
    assert torch.equal(out4[:, 1], x4[:, 1]) and torch.equal(out4[:, 4], x4[:, 4])
    assert not torch.allclose(out4[:, 0], x4[:, 0])
    features[:, 1] += 5.0  # the inactive frame's tokens reach nobody
    _, again = run(module, features, active)
    assert torch.equal(again, out)
    none_active = torch.zeros(FRAMES, dtype=torch.bool)
    assert torch.equal(module.after_block(1, x, module.encode(features), none_active), x)


def test_config_and_input_errors():
    with pytest.raises(InputError, match="dim=10 is not a multiple of num_heads=3"):
        CrossAttentionConfig(dim=10, num_heads=3)
    with pytest.raises(InputError, match="need distinct block indices"):
        CrossAttentionConfig(blocks=(1, 1))
    with pytest.raises(InputError, match="with 10 values per row"):
        adapter().encode(torch.randn(B, FRAMES, 4, 9))
