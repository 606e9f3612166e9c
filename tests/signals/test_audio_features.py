"""wav2vec2 features the AvatarForcing way, against a reference computed here with `transformers` itself."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from knot_core.audio import load_audio, to_mono_16k
from knot_core.errors import InputError, MissingDependencyError
from knot_core.signals.audio_features import AudioSignal, Wav2Vec2Features, load_wav2vec2

from .conftest import SHARED

WINDOW_TOLERANCE = 5e-3  # max per-row relative L2 deviation, windowed vs whole clip (defaults 250 + 2·50 frames)


def speech(seconds: float) -> torch.Tensor:
    """The shared speech clip at 16 kHz (or amplitude-modulated noise when the media folder is absent)."""
    path = SHARED / "media" / "speech_en_16k_mono.wav"
    if path.is_file():
        return to_mono_16k(*load_audio(path))[: int(16000 * seconds)]
    g = torch.Generator().manual_seed(1)
    n = int(16000 * seconds)
    envelope = 0.5 + 0.5 * torch.sin(torch.arange(n) / 16000 * 2 * math.pi * 3)
    return 0.3 * envelope * torch.randn(n, generator=g)


@torch.no_grad()
def reference_rows(model, wave: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Straight transformers: normalise, interpolate the conv features (hook), full forward, concat."""
    x = (wave - wave.mean()) / torch.sqrt(wave.var(unbiased=False) + 1e-7)

    def to_video_rate(module, args, out):  # out [1, C, Lc]
        return F.interpolate(out, size=num_frames, mode="linear", align_corners=True)

    hook = model.feature_extractor.register_forward_hook(to_video_rate)
    try:
        out = model(x[None], output_hidden_states=True)
    finally:
        hook.remove()
    return torch.cat([out.last_hidden_state, *out.hidden_states], dim=-1)[0]  # [T, (L+2)·H]


def test_whole_clip_features_match_transformers_and_slice_as_avatarforcing(tiny_wav2vec2):
    cfg = tiny_wav2vec2.config
    wave = speech(3.0)
    signal = AudioSignal(wave, Wav2Vec2Features(tiny_wav2vec2))
    frames = math.ceil(wave.numel() * 25 / 16000)
    feature_dim = (cfg.num_hidden_layers + 2) * cfg.hidden_size
    assert signal.num_frames == frames == 75 and signal.row_shape == (feature_dim,)
    ref = reference_rows(tiny_wav2vec2, wave, frames)
    table = torch.cat([torch.zeros(1, feature_dim), ref])  # [1+T, F]: one zero row first
    assert table.shape == (1 + frames, feature_dim)
    assert (signal.video_features(0, frames) - ref).abs().max() < 1e-4
    latents = signal.available_latent_frames()
    assert latents == frames // 4 + 1 == 19
    got = signal.latent_features(0, latents)  # [n, 4, F]
    assert got.shape == (latents, 4, feature_dim)
    assert torch.equal(got[0], torch.zeros(4, feature_dim))  # latent 0: the zero row ×4
    for k in range(1, latents):
        assert (got[k] - table[4 * k - 3:4 * k + 1]).abs().max() < 1e-4


def test_windowed_features_stay_close_to_the_whole_clip(tiny_wav2vec2):
    wave = speech(15.0)  # 375 frames: more than one default window (250 + 2·50)
    features = Wav2Vec2Features(tiny_wav2vec2)
    whole = AudioSignal(wave, features, window_frames=1000)
    windowed = AudioSignal(wave, features)  # defaults: 250-frame windows, 50 frames of context each side
    ref = whole.video_features(0, whole.num_frames)
    got = windowed.video_features(0, windowed.num_frames)
    deviation = ((got - ref).norm(dim=1) / ref.norm(dim=1)).max()
    assert 0 < deviation < WINDOW_TOLERANCE
    small = AudioSignal(wave[: 16000 * 6], features, window_frames=50, context_frames=25)
    ref_small = AudioSignal(wave[: 16000 * 6], features, window_frames=1000).video_features(0, 150)
    dev_small = ((small.video_features(0, 150) - ref_small).norm(dim=1) / ref_small.norm(dim=1)).max()
    assert 0 < dev_small < 2 * WINDOW_TOLERANCE


def test_chunked_requests_equal_one_request_and_the_cache_stays_small(tiny_wav2vec2):
    signal = AudioSignal(speech(4.0), Wav2Vec2Features(tiny_wav2vec2), window_frames=40, context_frames=10)
    total = signal.available_latent_frames()
    one_shot = signal.latent_features(0, total)
    chunks, start = [], 0
    while start < total:  # chunks of 3 new frames + the knot frame re-asked next time
        count = min(4, total - start)
        part = signal.latent_features(start, count)
        assert torch.equal(part, one_shot[start:start + count])
        chunks.append(part[: min(3, count)])
        start += 3
        assert signal.cached_windows <= 2
    assert torch.equal(torch.cat(chunks)[:total], one_shot)


def test_end_policies(tiny_wav2vec2):
    features = Wav2Vec2Features(tiny_wav2vec2)
    wave = speech(2.0)  # 50 video frames -> latent frames 0..12
    stop = AudioSignal(wave, features)
    assert stop.available_latent_frames() == 13
    with pytest.raises(InputError, match=r"ends at latent frame 13 \(50 video frames at 25 fps\).*end_policy="):
        stop.latent_features(10, 4)
    run_on = AudioSignal(wave, features, end_policy="continue")
    assert run_on.available_latent_frames() is None
    far = run_on.latent_features(0, 40)  # 160 frames: 110 of them past the audio, on silence
    assert far.shape == (40, 4, features.feature_dim) and torch.isfinite(far).all()
    assert torch.equal(far[:13], stop.latent_features(0, 13))


def test_bad_audio_inputs(tiny_wav2vec2):
    features = Wav2Vec2Features(tiny_wav2vec2)
    bad = speech(1.0)
    bad[10] = float("nan")
    with pytest.raises(InputError, match="NaN or infinite"):
        AudioSignal(bad, features)
    with pytest.raises(InputError, match="fps=0"):
        AudioSignal(speech(1.0), features, fps=0)
    with pytest.raises(InputError, match="fps=-25"):
        AudioSignal(speech(1.0), features, fps=-25)
    with pytest.raises(InputError, match="end_policy='forever'"):
        AudioSignal(speech(1.0), features, end_policy="forever")
    with pytest.raises(InputError, match="shorter than one wav2vec2 frame"):
        AudioSignal(torch.zeros(100), features)


def test_loads_folder_and_single_safetensors(tiny_wav2vec2, tmp_path):
    from safetensors.torch import save_file

    tiny_wav2vec2.save_pretrained(tmp_path / "folder")
    state = {}
    for key, value in tiny_wav2vec2.state_dict().items():  # as the hub's CTC file names them
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        state[f"wav2vec2.{key}"] = value.contiguous()
    state["lm_head.weight"] = torch.zeros(8, tiny_wav2vec2.config.hidden_size)
    (tmp_path / "single").mkdir()
    save_file(state, tmp_path / "single" / "wav2vec2.safetensors")
    wave = speech(1.0)
    expected = AudioSignal(wave, Wav2Vec2Features(tiny_wav2vec2)).video_features(0, 25)
    for path in (tmp_path / "folder", tmp_path / "single" / "wav2vec2.safetensors"):
        rows = AudioSignal(wave, Wav2Vec2Features(load_wav2vec2(path))).video_features(0, 25)
        assert (rows - expected).abs().max() < 1e-5


def test_missing_transformers_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError, match="pip install transformers"):
        load_wav2vec2(tmp_path)


def test_file_and_comfy_entry_points(tiny_wav2vec2, shared_media):
    from knot_core.audio import load_audio

    features = Wav2Vec2Features(tiny_wav2vec2)
    path = shared_media / "speech_en_44k_stereo.m4a"
    wave, sr = load_audio(path)
    from_file = AudioSignal.from_file(path, features)
    from_comfy = AudioSignal.from_comfy({"waveform": wave[None], "sample_rate": sr}, features)
    assert from_file.num_frames == from_comfy.num_frames == math.ceil(to_mono_16k(wave, sr).numel() * 25 / 16000)
    assert torch.allclose(from_file.latent_features(5, 3), from_comfy.latent_features(5, 3), atol=1e-5)
