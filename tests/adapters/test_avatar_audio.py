"""AvatarForcing's additive audio injection, standalone against a random residual stream."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from knot_core.adapters import AvatarAudioAdapter, AvatarAudioConfig
from knot_core.errors import CheckpointError, InputError

TINY = AvatarAudioConfig(feature_dim=12, rows_per_token=4, token_dim=8, dim=16, first_block=1, num_blocks=3)


def avatarforcing_keys() -> dict[str, tuple[int, ...]]:
    keys = {"audio_proj.proj.weight": (32, 43008), "audio_proj.proj.bias": (32,),
            "audio_proj.norm_out.weight": (32,), "audio_proj.norm_out.bias": (32,)}
    for i in range(14):
        keys[f"audio_cond_projs.{i}.weight"] = (1536, 32)
        keys[f"audio_cond_projs.{i}.bias"] = (1536,)
    return keys


def test_default_module_carries_avatarforcing_keys_under_the_driving_prefix():
    adapter = AvatarAudioAdapter()
    assert {k: tuple(v.shape) for k, v in adapter.state_dict().items()} == avatarforcing_keys()
    dit_like = nn.Module()
    dit_like.driving = nn.ModuleDict({"avatar_audio": adapter})
    assert "driving.avatar_audio.audio_cond_projs.13.weight" in dit_like.state_dict()
    checkpoint = {k: torch.randn(s) for k, s in avatarforcing_keys().items()}
    cfg = AvatarAudioConfig.from_state_dict(checkpoint)
    assert cfg == AvatarAudioConfig()
    AvatarAudioAdapter(cfg).load_state_dict(checkpoint, strict=True)
    with pytest.raises(CheckpointError, match="not an AvatarForcing model"):
        AvatarAudioConfig.from_state_dict({"blocks.0.q.weight": torch.zeros(1)})


def test_encode_packs_four_rows_into_one_normalised_token():
    torch.manual_seed(0)
    adapter = AvatarAudioAdapter(TINY)
    features = torch.randn(2, 5, 4, 12)  # [B, F, rows, feature]
    tokens = adapter.encode(features)
    assert tokens.shape == (2, 5, 8)
    proj, norm = adapter.audio_proj.proj, adapter.audio_proj.norm_out
    expected = F.layer_norm(features.reshape(2, 5, 48) @ proj.weight.T + proj.bias, (8,), norm.weight, norm.bias)
    assert torch.allclose(tokens, expected, atol=1e-6)
    with pytest.raises(InputError, match=r"features \(2, 5, 48\); need \[B, F, 4, 12\]"):
        adapter.encode(features.reshape(2, 5, 48))


def test_token_is_added_to_every_spatial_token_of_its_frame_in_blocks_first_to_last():
    torch.manual_seed(0)
    adapter = AvatarAudioAdapter(TINY)
    frames, spatial = 5, 6
    tokens = adapter.encode(torch.randn(2, frames, 4, 12))
    x = torch.randn(2, frames * spatial, 16)  # [B, F*S, dim]
    for index in range(6):
        out = adapter.before_block(index, x, tokens, None)
        if not 1 <= index < 4:
            assert out is x  # blocks outside first_block .. first_block+num_blocks-1 untouched
            continue
        lin = adapter.audio_cond_projs[index - 1]
        added = (tokens @ lin.weight.T + lin.bias)[:, :, None].expand(2, frames, spatial, 16)
        assert torch.allclose((out - x).view(2, frames, spatial, 16), added, atol=1e-6)
        assert torch.equal(out.view(2, frames, spatial, 16), x.view(2, frames, spatial, 16) + added)


def test_inactive_frames_are_untouched():
    torch.manual_seed(0)
    adapter = AvatarAudioAdapter(TINY)
    tokens = adapter.encode(torch.randn(1, 4, 4, 12))
    x = torch.randn(1, 4 * 3, 16)
    active = torch.tensor([False, True, True, False])
    out = adapter.before_block(2, x, tokens, active).view(1, 4, 3, 16)
    x4 = x.view(1, 4, 3, 16)
    assert torch.equal(out[:, 0], x4[:, 0]) and torch.equal(out[:, 3], x4[:, 3])
    assert not torch.allclose(out[:, 1], x4[:, 1])
    with pytest.raises(InputError, match="13 tokens do not split into 4 frames"):
        adapter.before_block(2, torch.randn(1, 13, 16), tokens, None)
