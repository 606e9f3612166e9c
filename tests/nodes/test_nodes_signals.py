"""Signal nodes on real inputs (a tiny wav2vec2 folder, POSE_KEYPOINT frames, pose images, a CSV) through a render."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from conftest import portrait

from knot_core.adapters import AvatarAudioAdapter, AvatarAudioConfig, CrossAttentionAdapter, CrossAttentionConfig
from knot_core.errors import InputError
from knot_core.pose_map_signal import PoseMapSignal
from knot_core.render_plan import frames_until_signal_end
from knot_core.signals import AudioSignal, ExpressionSignal, PoseSignal
from knot_core.video_reader import probe
from nodes import NODE_CLASS_MAPPINGS as N

transformers = pytest.importorskip("transformers", reason="the audio signal needs the optional 'transformers'")


@pytest.fixture
def encoder_dir(models_dir):
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=1,
                                         intermediate_size=128, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                                         num_conv_pos_embedding_groups=4, vocab_size=8)
    transformers.Wav2Vec2Model(config).eval().save_pretrained(models_dir / "audio_encoders" / "tiny_w2v")
    return models_dir


def _audio(seconds: float, rate: int = 44100) -> dict:
    t = torch.arange(int(seconds * rate)) / rate
    wave = torch.stack([0.4 * torch.sin(2 * math.pi * 220 * t), 0.3 * torch.sin(2 * math.pi * 330 * t)])
    return {"waveform": wave[None], "sample_rate": rate}  # [1, 2, N]


def _pose_frames(count: int) -> list[dict]:
    body = [v for i in range(18) for v in (100.0 + 5 * i, 80.0 + 3 * i, 0.9)]
    return [{"canvas_width": 320, "canvas_height": 240,
             "people": [{"pose_keypoints_2d": [b + (t if j % 3 == 0 else 0) for j, b in enumerate(body)]}]}
            for t in range(count)]


def _model(adapter=None):
    loaded = N["KnotForcingModelLoader"]().load("tiny.safetensors", "fp32")["result"][0]
    if adapter is not None:
        torch.manual_seed(1)
        loaded.model.add_adapter(adapter[0], adapter[1])
    return loaded


def _parts(adapter=None):
    model = _model(adapter)
    vae = N["KnotForcingVAELoader"]().load("tiny_vae.safetensors", "fp32")[0]
    ref = N["KnotForcingEncodeReference"]().encode(model, vae, portrait(), "crop", 0, 0, 0.5, 0.5)[0]
    return model, vae, ref


def _render(model, vae, ref, signals, **kw):
    args = dict(seed=3, length=0.0, length_unit="signal", filename_prefix="sig/run", max_image_frames=100)
    args.update(kw)
    return N["KnotForcingStreamingSampler"]().render(model, vae, ref, signals=signals, unique_id="1", **args)


def _audio_adapter():
    cfg = AvatarAudioConfig(feature_dim=4 * 64, token_dim=8, dim=64, first_block=0, num_blocks=2)
    return "avatar_audio", AvatarAudioAdapter(cfg)


def test_audio_signal_drives_the_render_until_it_ends_and_is_muxed(encoder_dir, recording_host):
    names = N["KnotForcingAudioEncoderLoader"].INPUT_TYPES()["required"]["encoder_name"][0]
    assert "tiny_w2v/model.safetensors" in names
    encoder = N["KnotForcingAudioEncoderLoader"]().load("tiny_w2v/model.safetensors")[0]
    signals = N["KnotForcingAudioSignal"]().build(_audio(1.3), encoder, 16.0, "stop")[0]
    assert isinstance(signals.items[0], AudioSignal) and signals.fps == 16.0
    wave, rate = signals.audio
    assert (tuple(wave.shape), rate) == ((2, int(1.3 * 44100)), 44100)
    model, vae, ref = _parts(_audio_adapter())
    out = _render(model, vae, ref, signals)
    expected = frames_until_signal_end(model.info.stream_config(), signals.available_latent_frames(), 16)
    info = probe(out["result"][0])
    assert info.frames == expected == out["result"][2].shape[0] and info.has_audio
    assert abs(info.audio_duration_s - expected / 16) < 0.05  # audio trimmed to the video
    with pytest.raises(InputError, match="shorter than the requested length"):
        _render(model, vae, ref, signals, length=3.0, length_unit="seconds")
    assert len(list(Path(os.environ["KNOTFORCING_OUTPUT_DIR"]).rglob("*.mp4"))) == 1


def test_audio_model_given_pose_fails_before_sampling(models_dir, recording_host):
    model, vae, ref = _parts(_audio_adapter())
    pose = N["KnotForcingPoseSignal"]().build(16.0, "stop", 1, 0.0, pose_keypoint=_pose_frames(40))[0]
    with pytest.raises(InputError, match=r"driven by the 'audio' signal, but the stream got \['pose'\]"):
        _render(model, vae, ref, pose)
    assert not list(Path(os.environ["KNOTFORCING_OUTPUT_DIR"]).rglob("*.mp4")) and not recording_host.events


def test_pose_signals_and_feature_mismatch_caught_before_sampling(models_dir, recording_host):
    build = N["KnotForcingPoseSignal"]().build
    keypoints = build(16.0, "stop", 1, 1.0, pose_keypoint=_pose_frames(40))[0]
    assert isinstance(keypoints.items[0], PoseSignal) and keypoints.items[0].row_shape == (1, 130, 3)
    maps = build(16.0, "stop", 1, 0.0, pose_images=torch.rand(40, 64, 48, 3))[0]
    assert isinstance(maps.items[0], PoseMapSignal) and maps.items[0].row_shape == (3, 16, 16)
    with pytest.raises(InputError, match="Pose Signal has no input"):
        build(16.0, "stop", 1, 0.0)
    adapter = CrossAttentionAdapter(CrossAttentionConfig(signal="pose", feature_dim=3 * 16 * 16, dim=64, num_heads=2,
                                                         blocks=(1,)))
    model, vae, ref = _parts(("pose_maps", adapter))
    with pytest.raises(InputError, match="pose cross-attention adapter: features"):
        _render(model, vae, ref, keypoints)  # keypoint rows (390 values) into a pose-map adapter (768)
    assert not recording_host.events
    out = _render(model, vae, ref, maps, length=9, length_unit="frames")
    assert probe(out["result"][0]).frames == 9


def test_expression_signal_and_chaining(models_dir, tmp_path, monkeypatch):
    csv = tmp_path / "expr.csv"
    csv.write_text("a,b\n" + "\n".join(f"{i / 30:.3f},{1 - i / 30:.3f}" for i in range(30)))
    monkeypatch.setenv("KNOTFORCING_INPUT_DIR", str(tmp_path))
    expr = N["KnotForcingExpressionSignal"]().build("expr.csv", 30.0, 16.0, "continue")[0]
    assert isinstance(expr.items[0], ExpressionSignal) and expr.items[0].row_shape == (2,)
    assert expr.available_latent_frames() is None  # 'continue': unbounded
    both = N["KnotForcingPoseSignal"]().build(16.0, "stop", 1, 0.0, pose_keypoint=_pose_frames(12), signals=expr)[0]
    assert [s.name for s in both.items] == ["expression", "pose"] and both.available_latent_frames() == 3
    with pytest.raises(InputError, match="two 'pose' signals"):
        N["KnotForcingPoseSignal"]().build(16.0, "stop", 1, 0.0, pose_keypoint=_pose_frames(12), signals=both)
    with pytest.raises(InputError, match="different frame rates"):
        N["KnotForcingPoseSignal"]().build(25.0, "stop", 1, 0.0, pose_keypoint=_pose_frames(12), signals=expr)
    with pytest.raises(InputError, match="'missing.csv' is not a file in ComfyUI's input folder"):
        N["KnotForcingExpressionSignal"]().build("missing.csv", 0.0, 16.0, "stop")
