"""LiveTalk's audio front end: wav2vec2 rows at 16 fps, both clip ends included, the first row repeated instead of
a zero row; against LiveTalk's procedure stated here with `transformers` itself (tiny random wav2vec2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from knot_core.errors import InputError
from knot_core.signals.audio_features import AudioSignal, Wav2Vec2Features

from .test_audio_features import speech

FPS = 16


@torch.no_grad()
def livetalk_rows(model, audio: torch.Tensor, num_latents: int) -> torch.Tensor:
    """scripts/inference_example.py l.129-186, for a clip of num_latents latent frames -> [n, 4, D].

    video_duration = (4n - 4) / fps seconds of audio (trimmed), normalised by Wav2Vec2FeatureExtractor;
    conv features linearly interpolated (align_corners=True) to audio_len = 4n - 3 frames (wav2vec.py
    linear_interpolation); rows = [last_hidden_state, hidden_states...]; the first row repeated 3 times in
    front (no zero row); latent k takes rows [4k, 4k + 4).
    """
    transformers = pytest.importorskip("transformers")
    duration = (num_latents * 4 - 4) / FPS
    audio = audio[:int(duration * 16000)]
    extractor = transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                                      do_normalize=True, return_attention_mask=False)
    values = torch.from_numpy(extractor(audio.numpy(), sampling_rate=16000).input_values[0]).float()
    audio_len = num_latents * 4 - 3

    def interpolate(module, args, conv):  # Wav2VecModel.forward: conv features [1, C, Lc] -> audio_len frames
        return F.interpolate(conv, size=audio_len, align_corners=True, mode="linear")

    hook = model.feature_extractor.register_forward_hook(interpolate)
    try:
        out = model(values[None], output_hidden_states=True)
    finally:
        hook.remove()
    rows = torch.cat([out.last_hidden_state, *out.hidden_states], dim=-1)[0]  # [4n - 3, D]
    rows = torch.cat([rows[:1].repeat(3, 1), rows])  # [4n, D]
    return rows.reshape(num_latents, 4, -1)


def test_livetalk_alignment_matches_livetalk(tiny_wav2vec2):
    n = 13  # 3 s of audio -> 49 video frames
    wave = speech(3.0)
    ref = livetalk_rows(tiny_wav2vec2, wave, n)
    signal = AudioSignal(wave, Wav2Vec2Features(tiny_wav2vec2), fps=FPS, alignment="livetalk")
    assert signal.num_frames == 4 * n - 3 == 49  # both ends of the 3 s included
    assert signal.available_latent_frames() == n
    got = signal.latent_features(0, n)
    assert got.shape == ref.shape
    # float32 rounding only, relative to the rows' size: measured 3.6e-5 on the bundled speech (rows up to 3.57)
    # and 1.1e-4 on the noise used without ../shared (rows up to 3.14), i.e. 1.0e-5 and 3.5e-5 relative; the conv
    # front end's GroupNorm takes whole-clip statistics in float64 blocks here, in float32 in torch. A row off by
    # one frame differs by ~5.
    assert (got - ref).abs().max() < 1e-4 * ref.abs().max()
    assert torch.equal(got[0], got[0][:1].expand(4, -1))  # latent 0: frame 0 four times, no zero row
    # chunked as the stream asks (3 latents at a time) gives the same rows
    assert torch.equal(torch.cat([signal.latent_features(s, 3) for s in (0, 3, 6, 9)]), got[:12])


def test_avatarforcing_alignment_is_not_livetalk(tiny_wav2vec2):
    n, wave = 13, speech(3.0)
    ref = livetalk_rows(tiny_wav2vec2, wave, n)
    other = AudioSignal(wave, Wav2Vec2Features(tiny_wav2vec2), fps=FPS)  # a zero row first, 48 frames
    assert other.num_frames == 48
    got = other.latent_features(0, other.available_latent_frames())
    assert torch.equal(got[0], torch.zeros_like(got[0]))
    assert (got[1:n - 1] - ref[1:n - 1]).abs().max() > 1e-2


def test_unknown_alignment_is_one_clear_error(tiny_wav2vec2):
    with pytest.raises(InputError, match="alignment='omniavatar'; choose one of avatarforcing, livetalk"):
        AudioSignal(speech(1.0), Wav2Vec2Features(tiny_wav2vec2), fps=FPS, alignment="omniavatar")
