"""Loaders (DiT, VAE) and the reference encoder."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from knot_core.compilation import COMPILE_MODES
from knot_core.config import DTYPES
from knot_core.errors import CheckpointError, InputError
from knot_core.model_loops import LOOPS

from .folders import named_as_listed
from .host import KNOT_FOLDER, host
from .types import CATEGORY, KNOT_MODEL, KNOT_REFERENCE, KNOT_VAE, LoadedModel, Reference

log = logging.getLogger(__name__)

MODEL_FOLDERS = (KNOT_FOLDER, "diffusion_models")
VAE_DTYPES = {name: DTYPES[name] for name in ("fp32", "bf16", "fp16")}  # fp32 first: the exact default
VAE_APPROX = "vae_approx"  # ComfyUI's folder of tiny decoders (its live previews read lighttaew2_1 there)


def _model_names() -> list[str]:
    return sorted({name for folder in MODEL_FOLDERS for name in host().list_models(folder)})


def _find(folders: tuple[str, ...], name: str, what: str) -> tuple[Path, str]:
    """The listed file `name` and the folder it was found in (models/<folder>, as errors name it)."""
    for folder in folders:
        path = host().model_path(folder, name)
        if path is not None:
            return path, f"models/{folder}"
    places = " or ".join(f"models/{f}" for f in folders)
    raise CheckpointError(f"{what} {name!r} not found in {places}; put the file there and press R (refresh) in "
                          "ComfyUI, or set KNOTFORCING_MODELS_DIR outside ComfyUI (nodes read no other path)")


class KnotForcingModelLoader:
    DESCRIPTION = ("Loads a causal Wan2.1 DiT (Knot Forcing file, ComfyUI causal Wan, Self Forcing / CausVid / "
                   "Rolling Forcing .pt, LongLive, AvatarForcing) and shows what was detected.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (KNOT_MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The DiT and its recommended settings: to Encode Reference and the Streaming Sampler.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (_model_names(), {"tooltip": "From models/knot_forcing or models/diffusion_models. The "
                                                       "format is read from the tensors, never the file name. The "
                                                       "workflow's Note says where each file comes from; "
                                                       "AvatarForcing and pose weights have no public download."}),
            "dtype": (list(DTYPES), {"default": "bf16", "tooltip": "Weight precision; bf16 on GPUs, fp32 on CPU."}),
        }, "optional": {
            "compile": (list(COMPILE_MODES), {"default": "none", "tooltip": (
                "torch.compile the DiT blocks: faster chunks once the first ones have compiled (a minute or "
                "so). Needs Triton on a GPU, a C++ compiler on the CPU.")}),
            "loop": (["auto", *LOOPS], {"default": "auto", "tooltip": (
                "Which public model's own loop to recommend. auto: what the file names (LiveTalk's layout, "
                "ComfyUI's causal_ar file = Causal Forcing frame-wise). Causal Forcing .pt files look exactly like "
                "Self Forcing's: pick causal_forcing_* for them.")}),
        }}

    def load(self, model_name: str, dtype: str, compile: str = "none", loop: str = "auto"):
        from knot_core.checkpoints import load_dit
        from knot_core.compilation import check_compile, compile_model
        from knot_core.summary import format_summary

        check_compile(compile, host().torch_device())
        path, place = _find(MODEL_FOLDERS, model_name, "model file")
        with named_as_listed(path, model_name, place):
            model, info = load_dit(path, dtype=dtype, device=host().torch_device(),
                                   loop=None if loop == "auto" else loop)
        compile_model(model, compile)
        return {"ui": {"text": [format_summary(info)]}, "result": (LoadedModel(model, info),)}


def _vae_names() -> list[str]:
    """models/vae files, then the Wan 2.1 tiny decoders in models/vae_approx (whose names say their latents)."""
    from knot_core.tiny_codec import TINY_NAME_FRAGMENTS

    tiny = [n for n in host().list_models(VAE_APPROX) if any(f in Path(n).name.lower() for f in TINY_NAME_FRAGMENTS)]
    return list(host().list_models("vae")) + sorted(set(tiny) - set(host().list_models("vae")))


class KnotForcingVAELoader:
    DESCRIPTION = ("Loads the Wan2.1 VAE (wan_2.1_vae.safetensors or Wan2.1_VAE.pth) for encoding and streaming "
                   "decode, or a tiny decoder from models/vae_approx (taew2_1, lighttaew2_1): several times faster, "
                   "lower quality; the same frame count, so the audio stays in sync.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (KNOT_VAE,)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The Wan2.1 VAE: to Encode Reference and the Streaming Sampler.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": (_vae_names(), {"tooltip": "From models/vae: wan_2.1_vae.safetensors "
                                                   "(Comfy-Org/Wan_2.1_ComfyUI_repackaged); or from "
                                                   "models/vae_approx: taew2_1 / lighttaew2_1 (keep the published "
                                                   "name: it says which latents the file decodes)."}),
            "dtype": (list(VAE_DTYPES), {"default": "fp32", "tooltip": "fp32 is exact; bf16 halves its memory."}),
        }}

    def load(self, vae_name: str, dtype: str):
        from knot_core.vae import load_codec

        path, place = _find(("vae", VAE_APPROX), vae_name, "VAE file")
        with named_as_listed(path, vae_name, place):
            return (load_codec(path, dtype=VAE_DTYPES[dtype], device=host().torch_device()),)


class KnotForcingVAEFromComfy:
    DESCRIPTION = "Reuses the weights of a VAE loaded by ComfyUI's Load VAE node (it must be the Wan2.1 VAE)."
    CATEGORY = CATEGORY
    RETURN_TYPES = (KNOT_VAE,)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The same weights as the pack's VAE: to Encode Reference and the Streaming Sampler.",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("VAE", {"tooltip": "Output of the core Load VAE node with wan_2.1_vae.safetensors."}),
            "dtype": (list(VAE_DTYPES), {"default": "fp32", "tooltip": "fp32 is exact; bf16 halves its memory."}),
        }}

    def convert(self, vae, dtype: str):
        from knot_core.vae import load_vae

        module = getattr(vae, "first_stage_model", vae)
        state = module.state_dict() if hasattr(module, "state_dict") else module
        if not isinstance(state, Mapping):
            raise InputError(f"got a {type(vae).__name__}; expected ComfyUI's VAE (from Load VAE) or a state dict")
        return (load_vae(state, dtype=VAE_DTYPES[dtype], device=host().torch_device()),)


class KnotForcingEncodeReference:
    DESCRIPTION = ("Encodes the portrait photo at the video size. Size: the photo's aspect kept, area up to the "
                   "model's recommended resolution, sides on multiples of 16 (or width/height if set). Framing: "
                   "crop = cut the largest window of that aspect around (center_x, center_y); face_crop = the same "
                   "around a skin-colour guess of the face (a heuristic, not a detector); pad = fit and extend the "
                   "edges; stretch = resize.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (KNOT_REFERENCE,)
    RETURN_NAMES = ("reference",)
    OUTPUT_TOOLTIPS = ("The photo's latent at the video size: to the Streaming Sampler's reference.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        from knot_core.reference_crop import FRAMING_MODES

        size = {"default": 0, "min": 0, "max": 4096, "step": 16,
                "tooltip": "0 = from the photo's aspect and the model's resolution; else a multiple of 16."}
        centre = {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Crop centre for 'crop' (0..1)."}
        return {"required": {
            "model": (KNOT_MODEL, {"tooltip": "Sets the working resolution (its recommended area)."}),
            "vae": (KNOT_VAE, {"tooltip": "Encodes the photo (Knot Forcing VAE Loader, or the Demo Model's vae)."}),
            "image": ("IMAGE", {"tooltip": "A face-sized portrait (>= 64 px; 512 px or more recommended)."}),
            "framing": (list(FRAMING_MODES), {"default": "crop", "tooltip": (
                "crop: around center_x/y; face_crop: around a skin-colour guess of the face; pad: fit and extend "
                "the edges; stretch: resize.")}),
            "width": ("INT", size), "height": ("INT", size),
            "center_x": ("FLOAT", centre), "center_y": ("FLOAT", centre),
        }, "optional": {
            "keep_mask": ("MASK", {"tooltip": "1 (white) = keep the photo there in every frame, e.g. a static "
                                              "background; framed like the photo."}),
        }}

    def encode(self, model: LoadedModel, vae, image, framing: str, width: int, height: int, center_x: float,
               center_y: float, keep_mask=None):
        from knot_core.reference_crop import frame_reference, reference_size

        if image is None or image.ndim != 4 or image.shape[0] < 1:
            raise InputError("no reference image: connect a Load Image node (IMAGE [B, H, W, 3]) to 'image'")
        if image.shape[0] > 1:
            log.warning("the reference batch has %d images; using the first", image.shape[0])
        h, w = reference_size(image.shape[1], image.shape[2], model.info.sampler.resolution, height, width)
        latent, mask = frame_reference(vae, image, h, w, framing, (center_y, center_x), keep_mask)
        return (Reference(latent, h, w, mask),)


class KnotForcingNoReference:
    DESCRIPTION = ("No photo: only the video size, for text-driven models (Self Forcing family). Models that anchor "
                   "on a reference (Knot Forcing, AvatarForcing) refuse it with a clear message.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (KNOT_REFERENCE,)
    RETURN_NAMES = ("reference",)
    OUTPUT_TOOLTIPS = ("The video size only: to the Streaming Sampler's reference (text-driven models).",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        def side(default: int) -> tuple:
            return ("INT", {"default": default, "min": 16, "max": 4096, "step": 16, "tooltip": "A multiple of 16."})

        return {"required": {"width": side(832), "height": side(480)}}

    def make(self, width: int, height: int):
        if width % 16 or height % 16:
            raise InputError(f"video size {width}x{height}; both sides must be multiples of 16 (VAE stride 8 x DiT "
                             f"patch 2), e.g. {width // 16 * 16}x{height // 16 * 16}")
        return (Reference(None, height, width),)
