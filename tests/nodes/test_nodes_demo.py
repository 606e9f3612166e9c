"""Demo Model and Motion Signal nodes, and the codec interface that lets the demo codec stand in the VAE socket."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from knot_core.config import StreamConfig
from knot_core.demo import DEMO_PORTRAIT_SEED, DEMO_SIZE, DEMO_SPEECH, demo_reference
from knot_core.demo_codec import StreamingDecoder as CodecDecoder
from knot_core.errors import InputError
from knot_core.faces import PARAM_NAMES
from knot_core.motion import decode_audio, loudness_envelope
from knot_core.vae import StreamingDecoder, VAEConfig, WanVAE
from nodes import NODE_CLASS_MAPPINGS

N = NODE_CLASS_MAPPINGS
MOUTH = PARAM_NAMES.index("mouth_open")


@pytest.fixture(scope="module")
def demo():
    return N["KnotForcingDemoModel"]().load(DEMO_PORTRAIT_SEED)


def test_demo_model_outputs(demo):
    loaded, codec, reference, image = demo
    assert loaded.info.config.out_dim == codec.z_dim == 16 and loaded.info.sampler.resolution == (DEMO_SIZE, DEMO_SIZE)
    h = DEMO_SIZE // 8
    assert tuple(reference.latent.shape) == (1, 16, 1, h, h) and (reference.height, reference.width) == (DEMO_SIZE,) * 2
    torch.testing.assert_close(reference.latent, demo_reference(codec, DEMO_PORTRAIT_SEED)[1])
    assert tuple(image.shape) == (1, DEMO_SIZE, DEMO_SIZE, 3) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.std()) > 0.1
    other = N["KnotForcingDemoModel"]().load(DEMO_PORTRAIT_SEED + 1)
    assert float((other[3] - image).abs().mean()) > 0.05  # another seed, another face


def test_the_portrait_image_through_encode_reference_gives_the_demo_reference(demo):
    """The codec works behind the generic Encode Reference node (device, dtype, encode of the interface)."""
    loaded, codec, reference, image = demo
    encoded = N["KnotForcingEncodeReference"]().encode(loaded, codec, image, framing="crop", width=0, height=0,
                                                       center_x=0.5, center_y=0.5)[0]
    assert (encoded.height, encoded.width) == (DEMO_SIZE, DEMO_SIZE)
    torch.testing.assert_close(encoded.latent, reference.latent, atol=1e-4, rtol=0)


def test_streaming_decoder_interface_on_both_codecs(demo):
    codec = demo[1]
    latent = torch.randn(1, 16, 4, DEMO_SIZE // 8, DEMO_SIZE // 8, generator=torch.Generator().manual_seed(0))
    ours = codec.streaming_decoder()
    assert isinstance(ours, CodecDecoder)
    chunked = torch.cat([ours.decode(latent[:, :, :1]), ours.decode(latent[:, :, 1:])], 2)  # (1, 3, 13, H, W)
    torch.testing.assert_close(chunked, CodecDecoder(codec).decode(latent))
    assert ours.frames_decoded == 13
    vae = WanVAE(VAEConfig.tiny()).eval()
    assert isinstance(vae.streaming_decoder(), StreamingDecoder) and vae.z_dim == 16
    assert vae.streaming_decoder() is not vae.streaming_decoder()  # one fresh stream per call


def test_motion_signal_without_audio_is_unbounded_and_seeded():
    signals = N["KnotForcingMotionSignal"]().build(3, 0.5)[0]
    (signal,) = signals.items
    assert signal.name == "motion" and signal.fps == 25 and signal.num_frames is None and signals.audio is None
    rows = signal.video_features(1000, 8)  # (8, 9): any frame, computed on demand
    assert tuple(rows.shape) == (8, len(PARAM_NAMES))
    again = N["KnotForcingMotionSignal"]().build(3, 0.5)[0].items[0].video_features(1000, 8)
    torch.testing.assert_close(rows, again)
    still = N["KnotForcingMotionSignal"]().build(3, 0.0)[0].items[0].video_features(0, 50)
    assert float(still[:, :5].abs().max()) == 0.0  # amount 0: no head motion


def test_motion_signal_mouth_follows_the_audio_loudness():
    samples, rate = decode_audio(DEMO_SPEECH)
    audio = {"waveform": torch.from_numpy(np.stack([samples, samples]))[None], "sample_rate": rate}  # stereo
    signals = N["KnotForcingMotionSignal"]().build(0, 0.8, audio=audio)[0]
    (signal,) = signals.items
    envelope = loudness_envelope(DEMO_SPEECH)
    assert signal.num_frames == len(envelope) == int(np.ceil(len(samples) / (rate / 25)))
    mouth = signal.video_features(0, len(envelope))[:, MOUTH].numpy()
    np.testing.assert_allclose(mouth, envelope, atol=1e-6)  # the same envelope as from the file
    wave, mux_rate = signals.audio
    assert tuple(wave.shape) == (2, len(samples)) and mux_rate == rate
    with pytest.raises(InputError, match="AUDIO input"):
        N["KnotForcingMotionSignal"]().build(0, 0.8, audio={"waveform": torch.zeros(1, 1, 10)})


def test_motion_signal_with_audio_is_the_command_line_demos_signal_and_runs_on_past_the_speech():
    """One rule for what follows the speech: the node and `knot-forcing demo` build the same signal; a length in
    'signal' stops at the speech's end, a longer one runs on with the mouth closed (the node refused it)."""
    from knot_core.demo import DEMO_MOTION_AMOUNT, demo_motion
    from knot_core.render_plan import Length, plan_length

    samples, rate = decode_audio(DEMO_SPEECH)
    audio = {"waveform": torch.from_numpy(samples)[None, None], "sample_rate": rate}
    (signal,) = N["KnotForcingMotionSignal"]().build(0, DEMO_MOTION_AMOUNT, audio=audio)[0].items
    speech = len(loudness_envelope(DEMO_SPEECH))
    past = speech + 300
    rows = signal.video_features(0, past).numpy()  # asked past the speech's end: served, not refused
    np.testing.assert_array_equal(rows, demo_motion(0, DEMO_SPEECH).signal_frames(0, past))
    assert (rows[speech:, MOUTH] == 0).all() and rows[speech:, :MOUTH].std(0).max() > 0  # mouth shut, head moves
    cfg = StreamConfig()
    assert plan_length(cfg, 25, Length(0, "signal"), [signal]) <= speech
    assert plan_length(cfg, 25, Length(20.0, "seconds"), [signal]) == 500


def test_a_demo_run_logs_no_missing_prompt_warning(demo, tmp_path, monkeypatch, caplog):
    """The demo was trained without a prompt: no 'no text embedding' warning; a text-conditioned model still gets it."""
    from dataclasses import replace

    from nodes.host import StandaloneHost, use_host

    monkeypatch.setenv("KNOTFORCING_OUTPUT_DIR", str(tmp_path))
    loaded, codec, reference, _ = demo
    signals = N["KnotForcingMotionSignal"]().build(0, 0.8)[0]
    render = N["KnotForcingStreamingSampler"]().render
    with use_host(StandaloneHost()), caplog.at_level("WARNING"):
        out = render(loaded, codec, reference, 0, 5.0, "frames", "demo/run", 16, signals=signals)
        assert out["result"][2].shape[0] == 5 and "no text embedding" not in caplog.text
        render(replace(loaded, takes_text=True), codec, reference, 0, 5.0, "frames", "demo/run", 16, signals=signals)
    assert caplog.text.count("no text embedding given") == 1
