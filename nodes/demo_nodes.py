"""The embedded demo model (knot_core.demo) as nodes: runs in ComfyUI with no model files and no downloads.

`Demo Model` gives the shipped 4-layer DiT, its small codec (in the VAE socket: it has the Wan2.1 VAE's
latent layout and the render path's codec interface) and the procedural portrait's reference latent;
`Motion Signal` gives the seeded head / blink / brow motion it was trained on, the mouth optionally
driven by the loudness of an AUDIO.
"""

from __future__ import annotations

from .signal_nodes import SignalNode, mux_audio
from .types import CATEGORY, KNOT_MODEL, KNOT_REFERENCE, KNOT_VAE, LoadedModel, Reference, Signals

SEED_MAX = 2**31 - 1  # numpy seeds the portrait and the motion; ComfyUI's 2**63 widget range is not needed


class KnotForcingDemoModel:
    DESCRIPTION = ("The demo model that ships inside the pack (no downloads): a small Knot Forcing DiT trained on "
                   "procedural 96x96 portraits, its codec (in the vae socket) and the reference of one portrait. "
                   "Drive it with Motion Signal. Runs on the CPU in about real time.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (KNOT_MODEL, KNOT_VAE, KNOT_REFERENCE, "IMAGE")
    RETURN_NAMES = ("model", "vae", "reference", "portrait")
    OUTPUT_TOOLTIPS = ("The demo DiT: to the Streaming Sampler.", "Its codec (goes in any vae socket).",
                       "The portrait's reference: to the Streaming Sampler.", "The portrait as an IMAGE, to look at.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        from knot_core.demo import DEMO_PORTRAIT_SEED

        return {"required": {"portrait_seed": ("INT", {
            "default": DEMO_PORTRAIT_SEED, "min": 0, "max": SEED_MAX,
            "tooltip": "Which procedural face (identity, colours, hair, background) the video animates."})}}

    def load(self, portrait_seed: int):
        import torch

        from knot_core.demo import demo_reference, demo_size, load_demo
        from knot_core.faces import DrivingFrame, render

        model, info, codec = load_demo()  # float32 on the CPU: the model is tiny, the CPU runs it in real time
        size = demo_size(info)
        portrait, latent = demo_reference(codec, portrait_seed, size)  # latent (1, 16, 1, h, w)
        image = torch.from_numpy(render(portrait, DrivingFrame(), size)).float()[None] / 255  # (1, H, W, 3)
        reference = Reference(latent, size, size)
        # one thread: at 128 wide, OpenMP hand-offs cost more than the math (1.5 s vs 87 s for 10 s of video)
        return (LoadedModel(model, info, threads=1, takes_text=False), codec, reference, image)


class KnotForcingMotionSignal(SignalNode):
    DESCRIPTION = ("The demo model's driving signal ('motion'): seeded smooth head motion, blinks and brows, and a "
                   "talking mouth. With audio connected, the mouth follows the audio's loudness, the audio is muxed "
                   "into the MP4, and the signal ends where the audio ends (length_unit 'signal' follows it; a longer "
                   "length runs on with the mouth closed, as the command line's demo); without audio it never ends "
                   "(give the length in seconds or frames).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                             "tooltip": "Seeds the motion."}),
            "amount": ("FLOAT", {"default": 0.8, "min": 0.0, "max": 1.0, "step": 0.05,
                                 "tooltip": "Head motion amplitude; 0 = still head (the training range is 0..1)."}),
        }, "optional": {"audio": ("AUDIO", {"tooltip": "Speech from the core Load Audio node (optional)."})}}

    def build(self, seed: int, amount: float, audio=None):
        from knot_core.audio import audio_from_comfy
        from knot_core.motion import MotionSequence, MotionSignal, loudness_of

        if audio is None:
            return (Signals().add(MotionSignal(MotionSequence(seed, None, amount=amount))),)
        wave, rate = audio_from_comfy(audio)  # (C, N)
        envelope = loudness_of(wave.float().mean(0).cpu().numpy(), rate)  # (frames,) mouth opening at 25 fps
        return (Signals().add(MotionSignal.speaking(seed, envelope, amount), mux_audio(audio)),)
