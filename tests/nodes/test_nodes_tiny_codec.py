"""The VAE Loader node offers the Wan 2.1 tiny decoders from models/vae_approx, and the sampler renders with them
(live preview and MP4) at the Wan VAE's frame count."""

from __future__ import annotations

import torch
from conftest import portrait
from safetensors.torch import save_file

from knot_core.tiny_codec import TinyCodec, TinyCodecConfig
from knot_core.video_reader import probe
from nodes import NODE_CLASS_MAPPINGS

N = NODE_CLASS_MAPPINGS


def test_vae_loader_lists_vae_approx_tiny_decoders_and_renders_with_them(models_dir, recording_host):
    approx = models_dir / "vae_approx"
    approx.mkdir()
    torch.manual_seed(0)
    save_file(TinyCodec(TinyCodecConfig.tiny()).half().state_dict(), str(approx / "taew2_1.safetensors"))
    save_file(TinyCodec(TinyCodecConfig.tiny()).state_dict(), str(approx / "lighttaew2_1.safetensors"))
    save_file({"decoder.0.weight": torch.zeros(1)}, str(approx / "taesd_decoder.safetensors"))  # an image TAESD

    names = N["KnotForcingVAELoader"].INPUT_TYPES()["required"]["vae_name"][0]
    assert names == ["tiny_vae.safetensors", "lighttaew2_1.safetensors", "taew2_1.safetensors"]
    light = N["KnotForcingVAELoader"]().load("lighttaew2_1.safetensors", "fp32")[0]
    assert isinstance(light, TinyCodec) and light.config.latents == "raw"
    vae = N["KnotForcingVAELoader"]().load("taew2_1.safetensors", "fp32")[0]
    assert isinstance(vae, TinyCodec) and vae.config.latents == "normalised"

    model = N["KnotForcingModelLoader"]().load("tiny.safetensors", "fp32")["result"][0]
    ref = N["KnotForcingEncodeReference"]().encode(model, vae, portrait(), framing="crop", width=0, height=0,
                                                   center_x=0.5, center_y=0.5)[0]
    assert tuple(ref.latent.shape) == (1, 16, 1, 4, 4)
    path, _, images = N["KnotForcingStreamingSampler"]().render(
        model, vae, ref, seed=7, length=1.0, length_unit="seconds", filename_prefix="test/tiny",
        max_image_frames=64, unique_id="5")["result"]
    assert probe(path).frames == 16 and tuple(images.shape) == (16, 32, 32, 3)  # as with the Wan VAE (its test)
    events = [d for e, d in recording_host.events if e == "knotforcing.chunk"]
    assert [d["frame_count"] for d in events] == [9, 7] and all(d["frames"] for d in events)  # the live preview
