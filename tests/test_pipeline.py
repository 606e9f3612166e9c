"""Latents -> streaming decode -> MP4: exact frame counts, interruption keeps finished chunks."""

import itertools

import torch

from knot_core.config import PRESETS, StreamConfig
from knot_core.dit import KnotDiT
from knot_core.engine.stream import StreamInputs, generate, start_stream
from knot_core.pipeline import frame_stream, latent_frames_for, render_to_file, video_frames_for
from knot_core.vae import StreamingDecoder, VAEConfig, WanVAE
from knot_core.video_reader import count_frames, probe
from knot_core.video_writer import frames_from_decoder


def _parts():
    torch.manual_seed(0)
    model = KnotDiT(PRESETS["tiny-noise-ref-mask"]).eval()
    vae = WanVAE(VAEConfig.tiny()).eval()
    inputs = StreamInputs((4, 4), reference=torch.randn(1, 16, 1, 4, 4))
    return model, vae, StreamConfig(steps=(1000, 500)), inputs


def test_frame_counts_follow_the_vae():
    assert [video_frames_for(t) for t in (0, 1, 2, 3, 7)] == [0, 1, 5, 9, 25]
    assert [latent_frames_for(n) for n in (1, 2, 5, 6, 9, 25, 26)] == [1, 2, 2, 3, 3, 7, 8]


def test_streamed_frames_equal_one_shot_decode_of_the_same_latents():
    model, vae, cfg, inputs = _parts()
    latents = torch.cat([c.latents for c in itertools.islice(
        generate(model, cfg, inputs, start_stream(model, cfg, inputs, seed=1)), 3)], dim=2)
    pieces = list(frame_stream(model, cfg, inputs, start_stream(model, cfg, inputs, seed=1), StreamingDecoder(vae),
                               num_frames=33))
    streamed = torch.cat([p.frames for p in pieces])
    assert [p.frames.shape[0] for p in pieces] == [9, 12, 12]
    assert [p.first_frame for p in pieces] == [0, 9, 21]
    with torch.no_grad():
        whole = frames_from_decoder(vae.decode(latents))
    assert torch.equal(streamed, whole)


def test_render_writes_exactly_the_requested_frames(tmp_path):
    model, vae, cfg, inputs = _parts()
    out = render_to_file(model, cfg, inputs, vae, tmp_path / "a.mp4", fps=16, num_frames=27,
                         audio=torch.zeros(1, 16000 * 2), sample_rate=16000)
    assert (out.frames, out.chunks, out.interrupted) == (27, 3, False)
    info = probe(tmp_path / "a.mp4")
    assert (info.frames, info.width, info.height, info.has_audio) == (27, 32, 32, True)


def test_interrupt_leaves_a_playable_file_with_the_finished_chunks(tmp_path):
    model, vae, cfg, inputs = _parts()
    seen = []
    out = render_to_file(model, cfg, inputs, vae, tmp_path / "b.mp4", fps=16, num_frames=200,
                         on_chunk=seen.append, should_stop=lambda: len(seen) == 2)
    assert out.interrupted and out.chunks == 2
    assert count_frames(tmp_path / "b.mp4") == 9 + 12 == out.frames


def test_avatar_forcing_render_starts_with_the_reference_frame_and_counts_match(tmp_path):
    """AvatarForcing's video is [reference latent | blocks of 4]: 1 + 16 frames, then 16 per chunk."""
    model, vae, _, inputs = _parts()
    cfg = StreamConfig.for_strategy("avatar_forcing", steps=(1000, 500))
    pieces = list(frame_stream(model, cfg, inputs, start_stream(model, cfg, inputs, seed=1), StreamingDecoder(vae),
                               num_frames=49))
    assert [p.frames.shape[0] for p in pieces] == [17, 16, 16]
    with torch.no_grad():
        first = frames_from_decoder(vae.decode(inputs.reference))  # the reference alone decodes to one frame
    assert torch.equal(pieces[0].frames[:1], first)
    out = render_to_file(model, cfg, inputs, vae, tmp_path / "af.mp4", fps=25, num_frames=40)
    assert (out.frames, out.chunks) == (40, 3) and probe(tmp_path / "af.mp4").frames == 40
