"""TAEHV tiny codecs (taew2_1, lighttaew2_1): the released key layout, streaming decode equal to one-shot decode and
to a frame-by-frame reference of TAEHV's semantics, the 4T-3 frame rule, both latent conventions, and the loader."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_render import one_thread  # noqa: F401 - autouse fixture: one torch thread per test
from torch import Tensor

from knot_core.errors import CheckpointError, InputError
from knot_core.pipeline import video_frames_for
from knot_core.tiny_codec import (
    MemBlock,
    TGrow,
    TinyCodec,
    TinyCodecConfig,
    TinyStreamingDecoder,
    load_tiny_codec,
)
from knot_core.vae import StreamingDecoder, VAEConfig, WanVAE, denormalize_latent, load_codec, normalize_latent


def tiny_codec(latents="normalised", seed=0, dtype=torch.float64) -> TinyCodec:
    torch.manual_seed(seed)
    return TinyCodec(TinyCodecConfig.tiny(latents)).eval().to(dtype)


def reference_decode(codec: TinyCodec, z: Tensor) -> Tensor:
    """TAEHV's decode, stated frame by frame with no batching over time (TAEHV `StreamingTAEHV` semantics).

    Each latent frame goes through the blocks in order, depth first; a MemBlock sees its own input of the
    previous time step at its own frame rate (zeros for the first); a TGrow of stride s turns one frame into
    s frames, which continue in order; the stream's first 3 output frames are dropped. Pixels [0, 1] -> [-1, 1].
    """
    past: dict[int, Tensor] = {}
    out = []

    def walk(x, start):
        for i in range(start, len(codec.decoder)):
            block = codec.decoder[i]
            if isinstance(block, MemBlock):
                before = past.get(i, torch.zeros_like(x))
                past[i] = x
                x = torch.relu(block.conv(torch.cat([x, before], 1)) + x)
            elif isinstance(block, TGrow):
                for part in block.conv(x).chunk(block.stride, 1):  # channel group j is the j-th new frame
                    walk(part, i + 1)
                return
            else:
                x = block(x)
        out.append(x)

    with torch.no_grad():
        for t in range(z.shape[2]):
            walk(z[:, :, t].to(codec.dtype), 0)
    frames = torch.stack(out[3:], 2).float()  # (B, 3, 4T - 3, H, W)
    return frames.clamp(0, 1) * 2 - 1



def test_released_layout_keys_shapes_and_size():
    state = TinyCodec().state_dict()  # the released widths, as madebyollin's TAEHV(checkpoint_path=None)
    assert len(state) == 128 and sum(t.numel() for t in state.values()) == 11_315_539
    expected = {"decoder.1.weight": (256, 16, 3, 3), "decoder.3.conv.0.weight": (256, 512, 3, 3),
                "decoder.7.conv.weight": (256, 256, 1, 1), "decoder.13.conv.weight": (256, 128, 1, 1),
                "decoder.19.conv.weight": (128, 64, 1, 1), "decoder.22.weight": (3, 64, 3, 3),
                "decoder.22.bias": (3,), "encoder.2.conv.weight": (64, 128, 1, 1), "encoder.17.weight": (16, 64, 3, 3)}
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert not any("skip" in k for k in state) and "decoder.8.bias" not in state  # n_in == n_out; bias=False


def test_streaming_decode_equals_one_shot_and_the_frame_by_frame_reference():
    codec = tiny_codec()
    z = torch.randn(1, 16, 7, 3, 4, dtype=torch.float64)
    whole = codec.decode(z)
    assert whole.shape == (1, 3, 25, 24, 32)  # 4T - 3
    torch.testing.assert_close(whole, reference_decode(codec, z), atol=1e-6, rtol=0)
    for split in ((1, 2, 3, 1), (3, 3, 1), (1,) * 7):
        stream, pieces, at = codec.streaming_decoder(), [], 0
        for t in split:
            pieces.append(stream.decode(z[:, :, at:at + t]))
            at += t
        assert [p.shape[2] for p in pieces] == [4 * split[0] - 3] + [4 * t for t in split[1:]]
        torch.testing.assert_close(torch.cat(pieces, 2), whole, atol=1e-6, rtol=0)
        assert stream.frames_decoded == 25 and stream.latents_decoded == 7


def test_streaming_equals_one_shot_in_float32():
    codec = tiny_codec(dtype=torch.float32)
    z = torch.randn(2, 16, 6, 4, 4)
    stream = codec.streaming_decoder()
    chunked = torch.cat([stream.decode(z[:, :, i:i + 3]) for i in (0, 3)], 2)
    torch.testing.assert_close(chunked, codec.decode(z), atol=1e-5, rtol=0)


def test_a_wrong_memory_rule_is_caught():
    codec = tiny_codec()
    z = torch.randn(1, 16, 4, 3, 3, dtype=torch.float64)
    stream = codec.streaming_decoder()
    stream.decode(z[:, :, :2])
    stream._memory.frames = [None] * len(stream._memory.frames)  # forget the past: a stream restarted mid-way
    assert (stream.decode(z[:, :, 2:]) - codec.decode(z)[:, :, 5:]).abs().max() > 1e-3


def test_frame_counts_match_the_wan_vae_chunk_for_chunk():
    torch.manual_seed(0)
    tiny, wan = tiny_codec(dtype=torch.float32).streaming_decoder(), StreamingDecoder(WanVAE(VAEConfig.tiny()).eval())
    z = torch.randn(1, 16, 10, 2, 2)
    counts = []
    for at, t in ((0, 3), (3, 3), (6, 1), (7, 3)):
        counts.append((tiny.decode(z[:, :, at:at + t]).shape[2], wan.decode(z[:, :, at:at + t]).shape[2]))
    assert counts == [(9, 9), (12, 12), (4, 4), (12, 12)]
    assert tiny.frames_decoded == wan.frames_decoded == video_frames_for(10) == 4 * 10 - 3


def test_raw_convention_decodes_un_normalised_latents():
    norm, raw = tiny_codec("normalised"), tiny_codec("raw")  # same seed: same weights
    z = torch.randn(1, 16, 3, 2, 3, dtype=torch.float64)  # what our stream produces: normalised latents
    torch.testing.assert_close(raw.decode(z), norm.decode(denormalize_latent(z)), atol=1e-6, rtol=0)
    assert (raw.decode(z) - norm.decode(z)).abs().max() > 1e-3
    video = torch.rand(1, 3, 5, 16, 24, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(raw.encode(video), normalize_latent(norm.encode(video)).float(), atol=1e-5, rtol=0)


def test_encode_of_one_image_is_four_copies_and_shapes():
    codec = tiny_codec()
    image = torch.rand(2, 3, 1, 16, 24, dtype=torch.float64) * 2 - 1
    z = codec.encode(image)
    assert z.shape == (2, 16, 1, 2, 3) and z.dtype == torch.float32
    assert codec.encode(torch.rand(1, 3, 9, 16, 16) * 2 - 1).shape == (1, 16, 3, 2, 2)
    with pytest.raises(InputError, match="1\\+4k"):
        codec.encode(torch.zeros(1, 3, 4, 16, 16))


def test_decoder_state_round_trip_is_bitwise():
    codec = tiny_codec(dtype=torch.float32)
    z = torch.randn(1, 16, 6, 3, 3)
    a = codec.streaming_decoder()
    a.decode(z[:, :, :3])
    saved = {k: v.clone() for k, v in a.state_tensors().items()}
    b = TinyStreamingDecoder(codec)
    b.load_state_tensors(saved)
    assert b.frames_decoded == 9 and torch.equal(a.decode(z[:, :, 3:]), b.decode(z[:, :, 3:]))
    assert a.cache_nbytes() > 0
    with pytest.raises(InputError, match="batch/size"):
        a.decode(torch.randn(1, 16, 1, 4, 4))


# ----------------------------------------------------------------------------------------------- loading

def save_tiny(path: Path, latents="normalised", *, encoder=True, dtype=torch.float16, wide_tgrow=False) -> TinyCodec:
    """A tiny-width TAEHV in the released key layout (taew2_1 is stored fp16), written as .safetensors or .pth."""
    codec = tiny_codec(latents, dtype=torch.float32)
    state = {k: v.to(dtype) for k, v in codec.state_dict().items() if encoder or not k.startswith("encoder.")}
    if wide_tgrow:  # a TGrow trained with stride 2: TAEHV keeps the last-timestep rows
        state["decoder.7.conv.weight"] = torch.cat([torch.randn_like(state["decoder.7.conv.weight"]),
                                                    state["decoder.7.conv.weight"]])
    if path.suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    return codec


@pytest.mark.parametrize("name, latents", [("taew2_1.safetensors", "normalised"), ("taew2_1.pth", "normalised"),
                                           ("lighttaew2_1.safetensors", "raw")])
def test_loader_detects_the_file_and_its_latents(tmp_path, name, latents):
    made = save_tiny(tmp_path / name, latents, wide_tgrow=name.endswith(".pth"))
    codec = load_codec(tmp_path / name)  # the same entry as the Wan VAE: told apart by keys
    assert isinstance(codec, TinyCodec) and codec.config.latents == latents
    assert codec.config.decoder_widths == (8, 8, 8, 8) and codec.config.encoder_width == 8
    z = torch.randn(1, 16, 2, 2, 2)
    expected = made.half().float().decode(z)  # the file holds fp16 weights
    torch.testing.assert_close(codec.decode(z), expected, atol=1e-6, rtol=0)
    assert isinstance(load_codec(_wan_file(tmp_path)), WanVAE)


def test_inspect_names_the_tiny_decoder_and_load_vae_points_to_load_codec(tmp_path, capsys):
    from knot_core.cli import main
    from knot_core.vae import load_vae

    save_tiny(tmp_path / "lighttaew2_1.safetensors", "raw", encoder=False)
    assert main(["inspect", str(tmp_path / "lighttaew2_1.safetensors")]) == 0
    shown = capsys.readouterr().out
    assert "TAEHV tiny autoencoder" in shown and "encoder: none" in shown and "decodes: raw" in shown
    with pytest.raises(CheckpointError, match="TAEHV tiny autoencoder .* load it with load_codec"):
        load_vae(tmp_path / "lighttaew2_1.safetensors")


def _wan_file(folder: Path) -> Path:
    path = folder / "wan.safetensors"
    save_file(WanVAE(VAEConfig.tiny()).state_dict(), str(path))
    return path


def test_loader_errors_name_the_problem(tmp_path):
    save_tiny(tmp_path / "my_decoder.safetensors")
    with pytest.raises(CheckpointError, match="name does not say which latents"):
        load_codec(tmp_path / "my_decoder.safetensors")
    assert load_tiny_codec(tmp_path / "my_decoder.safetensors", latents="raw").config.latents == "raw"

    save_tiny(tmp_path / "taehv.safetensors")
    with pytest.raises(CheckpointError, match="Hunyuan Video"):
        load_codec(tmp_path / "taehv.safetensors")

    state = TinyCodec(TinyCodecConfig.tiny()).state_dict()
    state["decoder.1.weight"] = torch.zeros(8, 48, 3, 3)  # Wan 2.2's 48-channel latent space
    save_file(state, str(tmp_path / "taew2_1_but_w22.safetensors"))
    with pytest.raises(CheckpointError, match="48 latent channels"):
        load_codec(tmp_path / "taew2_1_but_w22.safetensors")

    del state["decoder.3.conv.2.weight"]
    state["decoder.1.weight"] = torch.zeros(8, 16, 3, 3)
    save_file(state, str(tmp_path / "taew2_1_cut.safetensors"))
    with pytest.raises(CheckpointError, match="1 missing \\['decoder.3.conv.2.weight'\\]"):
        load_codec(tmp_path / "taew2_1_cut.safetensors")

    torch.save({"decoder.22.bias": torch.zeros(3), "extra": _Opaque()}, tmp_path / "taew2_1_pickled.pth")
    with pytest.raises(CheckpointError, match="not loaded: unpickling can run arbitrary code"):
        load_codec(tmp_path / "taew2_1_pickled.pth")

    with pytest.raises(CheckpointError, match="tiny decoder not found.*vae_approx"):
        load_tiny_codec(tmp_path / "lighttaew2_1.safetensors")

    save_tiny(tmp_path / "lighttaew2_1.safetensors", "raw", encoder=False)
    codec = load_codec(tmp_path / "lighttaew2_1.safetensors")
    assert codec.encoder is None and codec.decode(torch.randn(1, 16, 1, 2, 2)).shape == (1, 3, 1, 16, 16)
    with pytest.raises(CheckpointError, match="holds no encoder"):
        codec.encode(torch.zeros(1, 3, 1, 16, 16))


class _Opaque:
    """A pickled object that is not a tensor: the loader must refuse the file without running it."""

    def __reduce__(self):
        return (pickle.loads, (pickle.dumps(1),))


# ----------------------------------------------------------------------------------------------- render to MP4

def _speech_like_wav(path: Path, seconds: float, rate: int = 16_000) -> Path:
    import wave

    t = torch.arange(int(seconds * rate)) / rate
    wave_i16 = (0.3 * torch.sin(2 * torch.pi * 220 * t) * 32767).to(torch.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(wave_i16.numpy().tobytes())
    return path


def test_render_to_mp4_with_audio_has_the_wan_vae_frame_count_and_resumes(tmp_path):
    from test_render import FRAMES, job, write_tiny_files

    from knot_core.render import render
    from knot_core.video_reader import probe, read_frames

    files = write_tiny_files(tmp_path / "files")
    save_tiny(tmp_path / "files" / "taew2_1.safetensors", dtype=torch.float32)
    tiny_files = {**files, "vae": tmp_path / "files" / "taew2_1.safetensors"}
    audio = _speech_like_wav(tmp_path / "speech.wav", seconds=4.0)
    chunks = {"wan": [], "tiny": []}
    for name, given in (("wan", files), ("tiny", tiny_files)):
        done = render(job(given, tmp_path / f"{name}.mp4", audio=audio), on_chunk=lambda p, n=name: chunks[n].append(p))
        assert (done.frames, done.interrupted) == (FRAMES, False)
    assert [p.frames.shape[0] for p in chunks["tiny"]] == [p.frames.shape[0] for p in chunks["wan"]] == \
        [9, 12, 12, 12, 12]
    assert [p.first_frame for p in chunks["tiny"]] == [p.first_frame for p in chunks["wan"]]
    for name in ("wan", "tiny"):
        info = probe(tmp_path / f"{name}.mp4")
        assert info.frames == FRAMES and info.has_audio and abs(info.audio_duration_s - FRAMES / 16) < 1e-3

    # a stopped render resumes from the tiny decoder's saved memory to the same frames
    out, seen = tmp_path / "cut.mp4", []
    render(job(tiny_files, out, audio=audio, save_every=1), on_chunk=seen.append, should_stop=lambda: len(seen) == 2)
    assert probe(out).frames == 21
    render(job(tiny_files, out, audio=audio, resume=True))
    a, b = list(read_frames(tmp_path / "tiny.mp4")), list(read_frames(out))
    assert len(a) == len(b) == FRAMES and all((x == y).all() for x, y in zip(a, b))
