"""The authors' own loops of public causal checkpoints, as named settings of the one engine.

A file's format says how to read its weights (`checkpoint_formats`); a loop says how its authors
sample it: strategy, chunk, window/sink, steps, timestep precision, fps, resolution and the audio
alignment of its front end, plus which `.pt` section their inference script loads. Where the file
itself tells which model it is (LiveTalk's layout, ComfyUI's `causal_ar` metadata) the loader picks
the loop by itself; where several models share one layout (Causal Forcing's `.pt` files are
shape-identical to Self Forcing's) the user names it (`--loop`, the Model Loader's `loop` widget).

Sources (../shared/PEER_FORMATS.md §2, §5): LiveTalk scripts/inference_example.py +
configs/causal_inference.yaml @ 53b2c22; Causal Forcing pipeline/causal_inference.py, inference.py,
configs/causal_forcing_dmd_*.yaml, README "CLI Inference" @ 1fc7bbc; ComfyUI v0.33.0
comfy_extras/nodes_ar_video.py (its AR template runs the frame-wise model).
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import StreamConfig
from .errors import CheckpointError
from .model_file import FORMAT_SAMPLERS, SamplerDefaults

CF_STEPS = (1000, 750, 500, 250)  # warped with shift 5 -> 1000, 937.5, 833.3, 625
# Causal Forcing keeps every frame of a clip in a 32760-token cache: 21 latent frames at 480x832.
# Inside those 21 frames a block attends to everything before it; past them the peer's cache overflows
# (README: "does not natively support videos longer than 81 frames"), and we keep the last 21 frames.
CF_ATTENDED_FRAMES = 21


@dataclass(frozen=True)
class ModelLoop:
    """One public model's sampling recipe. layout: the conditioning layout its DiT must have."""

    name: str
    model: str
    sampler: SamplerDefaults
    layout: str = "noise"
    weights_section: str | None = None  # .pt section its authors load (None: the loader's default, EMA first)


def _cf(chunk_len: int, steps: tuple[int, ...] = CF_STEPS, first: tuple[int, ...] = ()) -> SamplerDefaults:
    stream = StreamConfig.for_strategy("self_forcing", chunk_len=chunk_len, window_len=CF_ATTENDED_FRAMES - chunk_len,
                                       steps=steps, first_chunk_steps=first)
    return SamplerDefaults(stream, fps=16, resolution=(480, 832))


LOOPS: dict[str, ModelLoop] = {loop.name: loop for loop in (
    ModelLoop("livetalk", "LiveTalk-1.3B (GAIR/LiveTalk-1.3B-V0.1 model.safetensors): 3-latent blocks, 4 steps seen "
              "in bf16 [1000, 936, 832, 624], sink of the first 9 latents at absolute positions + 3-latent window, "
              "reference pinned clean at latent 0, 16 fps audio, 512x512",
              SamplerDefaults(StreamConfig.for_strategy(
                  "longlive", chunk_len=3, window_len=3, sink_len=9, sink_positions="absolute", steps=CF_STEPS,
                  timestep_dtype="bfloat16", reference_pin="clean"), fps=16, resolution=(512, 512),
                  audio_alignment="livetalk"), layout="noise_ref_mask"),
    ModelLoop("avatar_forcing", "AvatarForcing (lycui/AvatarForcing model.pt): 4 blocks x 4 latents in flight at "
              "1000/800/400/200, the reference as latent 0, 25 fps (also for a merged AvatarForcing file, which has "
              "LiveTalk's layout)", FORMAT_SAMPLERS["avatarforcing"], layout="noise_ref_mask"),
    ModelLoop("causal_forcing_chunkwise", "Causal Forcing chunk-wise 4-step (zhuhz22/Causal-Forcing "
              "chunkwise/causal_forcing.pt, section 'generator' as its README runs it without --use_ema)",
              _cf(3), weights_section="generator"),
    ModelLoop("causal_forcing_framewise", "Causal Forcing frame-wise 4-step (framewise/causal_forcing.pt with "
              "--use_ema; ComfyUI's causal_forcing-framewise.safetensors)", _cf(1), weights_section="generator_ema"),
    ModelLoop("causal_forcing_pp_2step", "Causal Forcing++ frame-wise 2-step (causal-forcing++/framewise-2step.pt, "
              "--use_ema): steps 1000,500, the first block with the 4-step list",
              _cf(1, (1000, 500), CF_STEPS), weights_section="generator_ema"),
    ModelLoop("causal_forcing_pp_1step", "Causal Forcing++ frame-wise 1-step (causal-forcing++/framewise-1step.pt, "
              "--use_ema): step 1000, the first block with the 4-step list",
              _cf(1, (1000,), CF_STEPS), weights_section="generator_ema"),
)}

# Formats whose files other public models share exactly (same keys, same shapes): the user names the loop.
SAME_LAYOUT: dict[str, tuple[str, ...]] = {
    "forcing_pt": ("causal_forcing_chunkwise", "causal_forcing_framewise", "causal_forcing_pp_2step",
                   "causal_forcing_pp_1step"),
}


def detected_loop(format_name: str, causal: bool | None) -> str | None:
    """The loop a file's own content names: LiveTalk's layout, AvatarForcing's .pt (generator section, PEFT LoRA),
    or ComfyUI's causal_ar metadata (ComfyUI's AR template and its one repackaged file,
    Comfy-Org/Causal-Forcing-Framewise, are the frame-wise model)."""
    if format_name in ("livetalk", "avatarforcing"):
        return {"livetalk": "livetalk", "avatarforcing": "avatar_forcing"}[format_name]
    if format_name in ("comfyui", "wan") and causal:
        return "causal_forcing_framewise"
    return None


def get_loop(name: str, layout: str) -> ModelLoop:
    """A named loop, checked against the DiT's conditioning layout; one clear error otherwise."""
    if name not in LOOPS:
        raise CheckpointError(f"loop={name!r} is not a known model loop; choose one of: {', '.join(LOOPS)} "
                              "(or leave it unset to use what the file recommends)")
    loop = LOOPS[name]
    if loop.layout != layout:
        raise CheckpointError(f"loop={name!r} is for a DiT with the {loop.layout!r} input layout, but this file's DiT "
                              f"has {layout!r}; choose a loop made for this file (or leave it unset)")
    return loop
