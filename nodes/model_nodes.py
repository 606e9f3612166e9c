"""Loaders (DiT, VAE) and the reference encoder."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from knot_core.compilation import COMPILE_MODES
from knot_core.errors import CheckpointError, InputError

from .host import KNOT_FOLDER, host
from .types import CATEGORY, KNOT_MODEL, KNOT_REFERENCE, KNOT_VAE, LoadedModel, Reference

log = logging.getLogger(__name__)

MODEL_FOLDERS = (KNOT_FOLDER, "diffusion_models")
DTYPES = ("bf16", "fp16", "fp32")
VAE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _model_names() -> list[str]:
    return sorted({name for folder in MODEL_FOLDERS for name in host().list_models(folder)})


def _find(folders: tuple[str, ...], name: str, what: str) -> Path:
    for folder in folders:
        path = host().model_path(folder, name)
        if path is not None:
            return path
    places = " or ".join(f"models/{f}" for f in folders)
    raise CheckpointError(f"{what} {name!r} not found in {places}; put the file there and press R (refresh) in "
                          "ComfyUI, or set KNOTFORCING_MODELS_DIR outside ComfyUI (nodes read no other path)")


class KnotForcingModelLoader:
    DESCRIPTION = ("Loads a causal Wan2.1 DiT (Knot Forcing file, ComfyUI causal Wan, Self Forcing / CausVid / "
                   "Rolling Forcing .pt, LongLive, AvatarForcing) and shows what was detected.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (KNOT_MODEL,)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (_model_names(), {"tooltip": "From models/knot_forcing or models/diffusion_models. The "
                                                       "format is read from the tensors, never the file name."}),
            "dtype": (list(DTYPES), {"default": "bf16", "tooltip": "Weight precision; bf16 on GPUs, fp32 on CPU."}),
        }, "optional": {
            "compile": (list(COMPILE_MODES), {"default": "none", "tooltip": (
                "torch.compile the DiT blocks: faster chunks once the first ones have compiled (a minute or "
                "so). Needs Triton on a GPU, a C++ compiler on the CPU.")}),
        }}

    def load(self, model_name: str, dtype: str, compile: str = "none"):
        from knot_core.checkpoints import load_dit
        from knot_core.compilation import check_compile, compile_model
        from knot_core.summary import format_summary

        check_compile(compile, host().torch_device())
        model, info = load_dit(_find(MODEL_FOLDERS, model_name, "model file"), dtype=dtype,
                               device=host().torch_device())
        compile_model(model, compile)
        return {"ui": {"text": [format_summary(info)]}, "result": (LoadedModel(model, info),)}


class KnotForcingVAELoader:
    DESCRIPTION = "Loads the Wan2.1 VAE (wan_2.1_vae.safetensors or Wan2.1_VAE.pth) for encoding and streaming decode."
    CATEGORY = CATEGORY
    RETURN_TYPES = (KNOT_VAE,)
    RETURN_NAMES = ("vae",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": (host().list_models("vae"), {"tooltip": "From models/vae: wan_2.1_vae.safetensors."}),
            "dtype": (list(VAE_DTYPES), {"default": "fp32", "tooltip": "fp32 is exact; bf16 halves its memory."}),
        }}

    def load(self, vae_name: str, dtype: str):
        from knot_core.vae import load_vae

        return (load_vae(_find(("vae",), vae_name, "VAE file"), dtype=VAE_DTYPES[dtype],
                         device=host().torch_device()),)


class KnotForcingVAEFromComfy:
    DESCRIPTION = "Reuses the weights of a VAE loaded by ComfyUI's Load VAE node (it must be the Wan2.1 VAE)."
    CATEGORY = CATEGORY
    RETURN_TYPES = (KNOT_VAE,)
    RETURN_NAMES = ("vae",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("VAE", {"tooltip": "Output of the core Load VAE node with wan_2.1_vae.safetensors."}),
            "dtype": (list(VAE_DTYPES), {"default": "fp32"}),
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
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        from knot_core.reference_crop import FRAMING_MODES

        size = {"default": 0, "min": 0, "max": 4096, "step": 16,
                "tooltip": "0 = from the photo's aspect and the model's resolution; else a multiple of 16."}
        centre = {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Crop centre for 'crop' (0..1)."}
        return {"required": {
            "model": (KNOT_MODEL, {"tooltip": "Sets the working resolution (its recommended area)."}),
            "vae": (KNOT_VAE,),
            "image": ("IMAGE", {"tooltip": "A face-sized portrait (>= 64 px; 512 px or more recommended)."}),
            "framing": (list(FRAMING_MODES), {"default": "crop"}),
            "width": ("INT", size), "height": ("INT", size),
            "center_x": ("FLOAT", centre), "center_y": ("FLOAT", centre),
        }, "optional": {
            "keep_mask": ("MASK", {"tooltip": "1 (white) = keep the photo there in every frame, e.g. a static "
                                              "background; framed like the photo."}),
        }}

    def encode(self, model: LoadedModel, vae, image, framing: str, width: int, height: int, center_x: float,
               center_y: float, keep_mask=None):
        from knot_core.image import resolution_for
        from knot_core.reference_crop import face_centre, frame_mask, plan_framing
        from knot_core.vae import encode_image

        if image is None or image.ndim != 4 or image.shape[0] < 1:
            raise InputError("no reference image: connect a Load Image node (IMAGE [B, H, W, 3]) to 'image'")
        if image.shape[0] > 1:
            log.warning("the reference batch has %d images; using the first", image.shape[0])
        photo, (ih, iw) = image[:1], image.shape[1:3]
        rh, rw = model.info.sampler.resolution
        auto_h, auto_w = resolution_for(ih, iw, max_area=rh * rw)
        h, w = height or auto_h, width or auto_w
        centre = face_centre(photo[0]) if framing == "face_crop" else (center_y, center_x)
        plan = plan_framing(ih, iw, h, w, framing, centre)
        pixels = plan.apply(photo).to(device=vae.device, dtype=vae.dtype)  # (1, 3, 1, h, w)
        latent = encode_image(vae, pixels).float()  # (1, 16, 1, h/8, w/8)
        mask = None if keep_mask is None else frame_mask(keep_mask, (ih, iw), plan, tuple(latent.shape[-2:]))
        return (Reference(latent, h, w, mask),)


class KnotForcingNoReference:
    DESCRIPTION = ("No photo: only the video size, for text-driven models (Self Forcing family). Models that anchor "
                   "on a reference (Knot Forcing, AvatarForcing) refuse it with a clear message.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (KNOT_REFERENCE,)
    RETURN_NAMES = ("reference",)
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
