"""knot_core.audio: decoding real files written with PyAV, ComfyUI AUDIO, the band-limited resampler."""

from __future__ import annotations

import math
import wave

import av
import pytest
import torch

from knot_core import audio
from knot_core.audio import StreamingResampler, audio_from_comfy, load_audio, load_mono_16k, resample, to_mono_16k
from knot_core.errors import InputError

from .conftest import sine, write_audio


def peak_hz(x: torch.Tensor, rate: int) -> float:
    """Frequency of the largest spectral peak, refined by parabolic interpolation (Hann window)."""
    spec = torch.fft.rfft(x.double() * torch.hann_window(x.numel(), dtype=torch.float64)).abs()
    k = int(spec.argmax())
    a, b, c = (math.log(float(spec[i])) for i in (k - 1, k, k + 1))
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * rate / x.numel()


@pytest.mark.parametrize("sr_from,sr_to,freq", [(44100, 16000, 440.0), (48000, 16000, 3000.0),
                                                 (8000, 16000, 1000.0), (22050, 16000, 5000.0)])
def test_resample_sine_keeps_frequency_and_amplitude(sr_from, sr_to, freq):
    x = sine(freq, sr_from, 1.0)[0]
    y = resample(x, sr_from, sr_to)
    assert y.shape == (math.ceil(x.numel() * sr_to / sr_from),)
    t = torch.arange(y.numel(), dtype=torch.float64) / sr_to
    expected = 0.5 * torch.sin(2 * math.pi * freq * t)
    interior = slice(200, -200)  # the ends see the zero padding
    assert (y.double() - expected)[interior].abs().max() < 2e-3
    assert abs(peak_hz(y[interior], sr_to) - freq) < 0.5


def test_resample_removes_content_above_the_new_nyquist():
    x = sine(10_000.0, 44100, 1.0)[0]  # above 8 kHz: must not alias down to 6 kHz
    y = resample(x, 44100, 16000)[300:-300]
    assert y.pow(2).mean().sqrt() / x.pow(2).mean().sqrt() < 0.01  # < -40 dB


def test_resample_blocks_do_not_change_the_result(monkeypatch):
    x = torch.randn(2, 30_000)
    whole = resample(x, 44100, 16000)
    monkeypatch.setattr(audio, "OUTPUT_BLOCK", 777)
    assert torch.equal(resample(x, 44100, 16000), whole)
    assert whole.shape == (2, math.ceil(30_000 * 16000 / 44100))


def test_streaming_resampler_equals_one_shot():
    x = torch.randn(50_000, generator=torch.Generator().manual_seed(0))
    whole = resample(x, 44100, 16000)
    stream = StreamingResampler(44100, 16000)
    sizes = [1, 7, 300, 4096, 10_000, 1, 35_595]  # uneven pieces, some shorter than the filter
    assert sum(sizes) == x.numel()
    pieces, start = [], 0
    for size in sizes:
        pieces.append(stream.push(x[start:start + size]))
        start += size
        assert stream.buffer.shape[1] <= 2 * stream.half + size + 1  # only the taps still needed are held
    pieces.append(stream.flush())
    assert torch.allclose(torch.cat(pieces, dim=1)[0], whole, atol=1e-6)
    same = StreamingResampler(16000, 16000)
    assert torch.equal(torch.cat([same.push(x[:10]), same.push(x[10:20]), same.flush()], 1)[0], x[:20])


@pytest.mark.parametrize("suffix,codec,rate", [("wav", "pcm_s16le", 44100), ("flac", "flac", 22050),
                                               ("mp3", "libmp3lame", 44100), ("m4a", "aac", 48000),
                                               ("ogg", "libopus", 48000)])
def test_load_audio_formats(tmp_path, suffix, codec, rate):
    src = sine(440.0, rate, 1.0, channels=2)
    path = write_audio(tmp_path / f"tone.{suffix}", src, rate, codec)
    wave_, sr = load_audio(path)
    assert sr == rate and wave_.shape[0] == 2 and wave_.dtype == torch.float32
    assert abs(wave_.shape[1] - rate) < 0.1 * rate  # codecs add priming/padding, never lose the clip
    mono = to_mono_16k(wave_, sr)
    assert torch.allclose(load_mono_16k(path), mono, atol=1e-6)  # block-by-block decode == whole-file path
    assert abs(peak_hz(mono[2000:14000], 16000) - 440.0) < 1.0
    level = mono[2000:14000].pow(2).mean().sqrt()
    assert abs(float(level) - 0.5 * 0.9 / math.sqrt(2)) < 0.02  # mean of the 0.5 and 0.4 channels


def test_load_audio_from_a_video_file(tmp_path):
    path = write_audio(tmp_path / "clip.mp4", sine(440.0, 44100, 1.0, channels=2), 44100, "aac", video=True)
    with av.open(str(path)) as check:
        assert len(check.streams.video) == 1 and len(check.streams.audio) == 1
    wave_, sr = load_audio(path)
    assert sr == 44100 and wave_.shape[0] == 2
    assert abs(peak_hz(to_mono_16k(wave_, sr)[2000:14000], 16000) - 440.0) < 1.0


def test_video_without_audio_stream_is_rejected(tmp_path):
    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg4", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 64, "yuv420p"
        for _ in range(5):
            for packet in vs.encode(av.VideoFrame.from_ndarray(torch.zeros(64, 64, 3, dtype=torch.uint8).numpy())):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
    with pytest.raises(InputError, match=r"has no audio stream \(streams found: video\)"):
        load_audio(path)


def test_unreadable_and_empty_audio(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not an audio file" * 20)
    with pytest.raises(InputError, match="cannot read .* as audio"):
        load_audio(junk)
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
    with pytest.raises(InputError, match="contains no decodable audio samples; the audio track is empty"):
        load_audio(empty)


def test_comfy_audio_dict():
    src = sine(440.0, 44100, 0.5, channels=2)
    wave_, sr = audio_from_comfy({"waveform": src[None], "sample_rate": 44100})
    assert sr == 44100 and torch.equal(wave_, src)
    bad = src.clone()
    bad[1, 100] = float("nan")
    with pytest.raises(InputError, match="1 audio samples are NaN or infinite"):
        audio_from_comfy({"waveform": bad[None], "sample_rate": 44100})
    with pytest.raises(InputError, match="need a dict with 'waveform'"):
        audio_from_comfy({"samples": src})
    with pytest.raises(InputError, match=r"need a tensor \[batch, channels, samples\]"):
        audio_from_comfy({"waveform": src, "sample_rate": 44100})
    with pytest.raises(InputError, match="at least one sample"):
        audio_from_comfy({"waveform": torch.zeros(1, 2, 0), "sample_rate": 44100})


def test_shared_media_stereo_m4a_matches_the_16k_wav(shared_media):
    ref = to_mono_16k(*load_audio(shared_media / "speech_en_16k_mono.wav"))
    other = to_mono_16k(*load_audio(shared_media / "speech_en_44k_stereo.m4a"))
    assert abs(other.numel() - ref.numel()) < 0.01 * ref.numel()
    assert ref.abs().max() > 0.1 and other.abs().max() > 0.1


def test_nan_samples_in_a_file_are_rejected(tmp_path):
    src = sine(440.0, 16000, 0.5)
    src[0, 4000] = float("nan")
    path = write_audio(tmp_path / "nan.wav", src, 16000, "pcm_f32le")
    with pytest.raises(InputError, match="decodes to NaN or infinite samples"):
        load_audio(path)
    with pytest.raises(InputError, match="decodes to NaN or infinite samples"):
        load_mono_16k(path)
