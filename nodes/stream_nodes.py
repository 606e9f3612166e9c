"""The Streaming Sampler: sockets -> knot_core.render_path (prepare, stream, decode) -> an MP4, chunk by chunk."""

from __future__ import annotations

import logging

from knot_core.errors import InputError
from knot_core.render_plan import LENGTH_UNITS

from .host import host
from .preview import ChunkReporter
from .types import (
    CATEGORY,
    KNOT_MODEL,
    KNOT_REFERENCE,
    KNOT_SETTINGS,
    KNOT_SIGNAL,
    KNOT_VAE,
    KnotSettings,
    LoadedModel,
    Signals,
)

log = logging.getLogger(__name__)


def text_embedding(conditioning, model: LoadedModel):
    """CONDITIONING [[tensor [1, L, dim], {...}], ...] -> [1, L, dim] checked against the model (None: none)."""
    from knot_core.checkpoints import check_text

    info = model.info
    if conditioning is None:
        return check_text(info, None) if model.takes_text else None  # check_text warns about the missing prompt
    try:
        text = conditioning[0][0]
    except (TypeError, IndexError, KeyError) as err:
        raise InputError(f"text: got {type(conditioning).__name__}; connect CLIPTextEncode's CONDITIONING "
                         "(CLIPLoader type 'wan', umT5-XXL)") from err
    return check_text(info, text[:1].float())


class KnotForcingStreamingSampler:
    DESCRIPTION = ("Generates the video chunk by chunk and writes each chunk to an MP4 in the output folder as it is "
                   "made (driving audio muxed). Interrupt stops after the current chunk and keeps a playable file.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "VIDEO", "IMAGE")
    RETURN_NAMES = ("path", "video", "images")
    OUTPUT_TOOLTIPS = ("The MP4's path on the server.", "The MP4 as a VIDEO, for the core video nodes.",
                       "Every frame as IMAGE up to max_image_frames; else the last frame only.")
    OUTPUT_NODE = True
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (KNOT_MODEL, {"tooltip": "From the Model Loader (or the Demo Model)."}),
            "vae": (KNOT_VAE, {"tooltip": "Decodes each chunk as it is made (the Wan2.1 VAE, or the demo codec)."}),
            "reference": (KNOT_REFERENCE, {"tooltip": "Encode Reference (a photo) or No Reference (a size)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**63 - 1, "control_after_generate": True,
                             "tooltip": "Seeds the noise; the same seed and inputs give the same video."}),
            "length": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 1e6, "step": 0.5,
                                 "tooltip": "In length_unit; ignored for 'signal'."}),
            "length_unit": (list(LENGTH_UNITS), {"default": "seconds",
                                                 "tooltip": "signal = until the driving signal ends."}),
            "filename_prefix": ("STRING", {"default": "KnotForcing/portrait",
                                           "tooltip": "Relative to ComfyUI's output folder."}),
            "max_image_frames": ("INT", {"default": 256, "min": 0, "max": 100000,
                                         "tooltip": "Return every frame as IMAGE only up to this many frames; "
                                                    "longer videos return the last frame (use the file)."}),
        }, "optional": {
            "settings": (KNOT_SETTINGS, {"tooltip": "Knot Settings / Running Ahead; unconnected = the model's."}),
            "text": ("CONDITIONING", {"tooltip": "CLIPTextEncode with CLIPLoader type 'wan' (umT5-XXL)."}),
            "signals": (KNOT_SIGNAL, {"tooltip": "Audio / Pose / Expression Signal; the video takes its fps."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def render(self, model, vae, reference, seed: int, length: float, length_unit: str, filename_prefix: str,
               max_image_frames: int, settings: KnotSettings | None = None, text=None, signals: Signals | None = None,
               unique_id: str | None = None):
        from knot_core.engine.stream import StreamInputs
        from knot_core.file_sink import FileOutput, write_file
        from knot_core.render_path import prepare, torch_threads
        from knot_core.render_plan import Length

        if reference is None:
            raise InputError("no reference: connect Encode Reference (a portrait photo) to 'reference'")
        h, signals = host(), signals or Signals()
        cfg = (settings or KnotSettings()).resolve(model.info.stream_config())
        inputs = StreamInputs(reference.latent_size, reference.latent, text_embedding(text, model),
                              reference.keep_mask, signals.items)
        plan = prepare(model.model, vae, cfg, inputs, fps=signals.fps or model.info.sampler.fps,
                       length=Length(length, length_unit), seed=seed, audio=signals.audio)
        frames = plan.num_frames
        path, subfolder = h.output_file(filename_prefix, "mp4")
        report = ChunkReporter(h, unique_id, chunks=plan.chunks, fps=float(plan.fps), knot_len=cfg.knot_len,
                               keep_frames=frames <= max_image_frames)
        try:
            with torch_threads(model.threads):
                result = write_file(plan, FileOutput(path), should_stop=h.interrupted, on_chunk=report)
        except BaseException as exc:  # the node must not stay on a stale chunk: say how it ended, and where the file is
            report.finish(path.name, subfolder, "cancelled" if isinstance(exc, h.interrupt_errors) else "failed")
            raise
        finally:
            h.free_memory()  # the stream's caches are gone; give their memory back to the host
        report.finish(path.name, subfolder, "cancelled" if result.interrupted else "done", result.frames)
        if result.interrupted:
            h.raise_if_interrupted()
        return {"ui": _ui(result, path, subfolder, frames, report.kept is not None),
                "result": (str(path), h.video_output(path), report.images())}


def _ui(result, path, subfolder: str, frames: int, kept: bool) -> dict:
    lines = [f"{result.frames} frames, {result.chunks} chunks in {result.seconds:.1f} s "
             f"({result.fps_achieved:.1f} fps) -> {path}"]
    if not kept:
        lines.append(f"{frames} frames is more than max_image_frames: 'images' holds the last frame only; use the "
                     "file (path / video outputs)")
    return {"text": lines, "images": [{"filename": path.name, "subfolder": subfolder, "type": "output"}],
            "animated": (True,)}
