"""Knot Settings overrides the loaded model's recommendation: with only knot_len changed, an AvatarForcing
file keeps its own steps (1000, 800, 400, 200), shift, window and running-ahead settings."""

from __future__ import annotations

import torch
from conftest import portrait

from knot_core.checkpoints import load_dit
from knot_core.config import PRESETS, StreamConfig
from knot_core.dit import KnotDiT
from knot_core.engine.stream import StreamInputs
from knot_core.render_path import frames, prepare
from knot_core.render_plan import Length
from nodes import NODE_CLASS_MAPPINGS as N
from nodes.types import LoadedModel

KEEP = {"strategy": "model", "chunk_len": -1, "knot_len": -1, "window_len": -1, "steps": "", "shift": -1.0,
        "fusion_weight": -1.0}


def avatarforcing_file(path) -> LoadedModel:
    """A tiny AvatarForcing-format generator checkpoint (33-channel DiT under generator/model.), loaded."""
    torch.manual_seed(0)
    state = {f"model.{k}": v.clone() for k, v in KnotDiT(PRESETS["tiny-noise-ref-mask"]).state_dict().items()}
    torch.save({"generator": state}, path)
    model, info = load_dit(path, dtype=torch.float32, num_heads=2, text_len=8)
    assert info.format == "avatarforcing" and info.sampler.stream.steps == (1000, 800, 400, 200)
    return LoadedModel(model.eval(), info)


def test_knot_settings_with_only_knot_len_keeps_every_other_recommendation(models_dir, recording_host, tmp_path):
    loaded = avatarforcing_file(tmp_path / "avatar.pt")
    recommended = loaded.info.stream_config()
    settings = N["KnotForcingKnotSettings"]().build(**{**KEEP, "knot_len": 0})[0]
    assert settings.overrides == {"knot_len": 0}
    assert settings.resolve(recommended) == recommended.replace(knot_len=0)
    assert settings.resolve(recommended).steps == (1000, 800, 400, 200)  # not the class default 1000,750,500,250
    ahead = N["KnotForcingRunningAhead"]().build(True, 12, 5, settings)[0]
    assert ahead.resolve(recommended) == recommended.replace(knot_len=0, running_ahead=True, ahead_init=12,
                                                             ahead_step=5)
    assert N["KnotForcingKnotSettings"]().build(**KEEP)[0].resolve(recommended) == recommended

    # the render uses exactly that config: the node's frames are the recommended-with-knot_len-0 stream's
    vae = N["KnotForcingVAELoader"]().load("tiny_vae.safetensors", "fp32")[0]
    ref = N["KnotForcingEncodeReference"]().encode(loaded, vae, portrait(), framing="crop", width=32, height=32,
                                                   center_x=0.5, center_y=0.5)[0]
    out = N["KnotForcingStreamingSampler"]().render(loaded, vae, ref, seed=1, length=9, length_unit="frames",
                                                    filename_prefix="s/avatar", max_image_frames=64,
                                                    settings=settings, unique_id="2")
    images = out["result"][2]
    inputs = StreamInputs((4, 4), reference=ref.latent)

    def direct(cfg: StreamConfig) -> torch.Tensor:
        plan = prepare(loaded.model, vae, cfg, inputs, fps=25, length=Length(9, "frames"), seed=1)
        return torch.cat([p.frames for p in frames(plan)]).float() / 255.0

    assert torch.equal(images, direct(recommended.replace(knot_len=0)))
    assert not torch.equal(images, direct(StreamConfig(knot_len=0)))  # what a whole default config would give
