"""Driving signals: audio (wav2vec2), pose (POSE_KEYPOINT or pose images), expression (CSV / JSON file).

Each signal node can take the output of another, so one `signals` socket carries every signal of a
render; the video is rendered at the signals' fps.
"""

from __future__ import annotations

from knot_core.errors import InputError

from .folders import named_as_listed
from .host import host
from .types import CATEGORY, KNOT_AUDIO_ENCODER, KNOT_SIGNAL, Signals

FPS = {"default": 25.0, "min": 1.0, "max": 120.0, "step": 1.0,
       "tooltip": "Video frame rate the signal is aligned to; the render uses it (AvatarForcing: 25)."}
END = {"default": "stop", "tooltip": "stop: the signal ends the video (or errors if too short); continue: run on "
                                     "past its end (silence / the last pose held)."}
CHAIN = {"tooltip": "Another signal node's output, to drive with several signals at once."}
EXPRESSION_EXTENSIONS = (".csv", ".json")


def _end_policy() -> tuple:
    from knot_core.signals.base import END_POLICIES  # at INPUT_TYPES time: the pack itself imports no signal code

    return list(END_POLICIES), END


def _chain(signals: Signals | None, signal, audio=None) -> tuple[Signals]:
    return ((signals or Signals()).add(signal, audio),)


def mux_audio(audio: dict) -> tuple:
    """ComfyUI AUDIO -> (waveform [C<=2, N], rate) as knot_core muxes every front end's audio."""
    from knot_core.audio import audio_for_mux, audio_from_comfy

    return audio_for_mux(*audio_from_comfy(audio))


class SignalNode:
    """What every driving-signal node shares: it outputs the (chained) signals of a stream."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (KNOT_SIGNAL,)
    RETURN_NAMES = ("signals",)
    OUTPUT_TOOLTIPS = ("The driving signals so far: to the Streaming Sampler, or to another signal node to add one.",)
    FUNCTION = "build"


class KnotForcingAudioEncoderLoader:
    DESCRIPTION = "Loads wav2vec2-base-960h (Hugging Face folder or model.safetensors) from models/audio_encoders."
    CATEGORY = CATEGORY
    RETURN_TYPES = (KNOT_AUDIO_ENCODER,)
    RETURN_NAMES = ("audio_encoder",)
    OUTPUT_TOOLTIPS = ("wav2vec2: to the Audio Signal.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"encoder_name": (host().list_models("audio_encoders"), {
            "tooltip": "wav2vec2-base-960h/model.safetensors from facebook/wav2vec2-base-960h (config.json beside "
                       "it is used if present)."})}}

    def load(self, encoder_name: str):
        from knot_core.signals import Wav2Vec2Features, load_wav2vec2

        path = host().model_path("audio_encoders", encoder_name)
        if path is None:
            raise InputError(f"audio encoder {encoder_name!r} not found in models/audio_encoders; put "
                             "wav2vec2-base-960h there (its model.safetensors and config.json)")
        with named_as_listed(path, encoder_name, "models/audio_encoders"):
            return (Wav2Vec2Features(load_wav2vec2(path, device=host().torch_device())),)


class KnotForcingAudioSignal(SignalNode):
    DESCRIPTION = ("Speech -> wav2vec2 features per video frame (AvatarForcing's front end: 16 kHz mono, normalised, "
                   "features at the video fps), computed window by window; the audio is also muxed into the MP4.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "audio": ("AUDIO", {"tooltip": "From the core Load Audio node."}),
            "audio_encoder": (KNOT_AUDIO_ENCODER, {"tooltip": "From the Knot Forcing wav2vec2 Loader."}),
            "fps": ("FLOAT", FPS), "end_policy": _end_policy(),
        }, "optional": {"signals": (KNOT_SIGNAL, CHAIN), "alignment": (["avatarforcing", "livetalk"], {
            "default": "avatarforcing", "tooltip": "The model's audio front end: avatarforcing (25 fps, a zero row "
                                                   "for latent 0) or livetalk (16 fps, latent 0 = frame 0 x4). The "
                                                   "Model Loader shows its model's audio_alignment."})}}

    def build(self, audio, audio_encoder, fps: float, end_policy: str, signals: Signals | None = None,
              alignment: str = "avatarforcing"):
        from knot_core.signals import AudioSignal

        signal = AudioSignal.from_comfy(audio, audio_encoder, fps=fps, end_policy=end_policy, alignment=alignment)
        return _chain(signals, signal, mux_audio(audio))


class KnotForcingPoseSignal(SignalNode):
    DESCRIPTION = ("Pose from DWPose/OpenPose keypoints (POSE_KEYPOINT: the geometry, optionally smoothed) or, "
                   "when only drawings exist, from an IMAGE batch of pose maps (area-averaged thumbnails).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "fps": ("FLOAT", FPS), "end_policy": _end_policy(),
            "max_people": ("INT", {"default": 1, "min": 1, "max": 8, "tooltip": "Largest people kept per frame."}),
            "smooth_sigma": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.5,
                                       "tooltip": "Temporal Gaussian smoothing of keypoints, in frames (0 = off)."}),
        }, "optional": {
            "pose_keypoint": ("POSE_KEYPOINT", {"tooltip": "DWPose Estimator's keypoints (comfyui_controlnet_aux)."}),
            "pose_images": ("IMAGE", {"tooltip": "Rendered pose maps, one per video frame (used without keypoints)."}),
            "signals": (KNOT_SIGNAL, CHAIN),
        }}

    def build(self, fps: float, end_policy: str, max_people: int, smooth_sigma: float, pose_keypoint=None,
              pose_images=None, signals: Signals | None = None):
        from knot_core.pose_map_signal import PoseMapSignal
        from knot_core.signals import PoseSignal, parse_pose_frames, smooth

        if pose_keypoint is not None:
            seq = parse_pose_frames(list(pose_keypoint), max_people=max_people)
            signal = PoseSignal(smooth(seq, smooth_sigma) if smooth_sigma > 0 else seq, fps, end_policy)
        elif pose_images is not None:
            signal = PoseMapSignal(pose_images, fps, end_policy=end_policy)
        else:
            raise InputError("Pose Signal has no input: connect pose_keypoint (DWPose Estimator's POSE_KEYPOINT) or "
                             "pose_images (an IMAGE batch of pose maps)")
        return _chain(signals, signal)


class KnotForcingExpressionSignal(SignalNode):
    DESCRIPTION = ("Expression coefficients from a file: a Live Link Face ARKit-52 CSV, a numeric CSV or a JSON "
                   "array, resampled to the video fps.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "file": (host().list_inputs(EXPRESSION_EXTENSIONS), {
                "tooltip": "A .csv or .json file in ComfyUI's input folder: put it there (or upload it) and press R "
                           "to refresh this list. Files anywhere else are never read."}),
            "source_fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 240.0, "step": 1.0,
                                     "tooltip": "Rate of the file's rows; 0 = from the file (Live Link Face: 60)."}),
            "fps": ("FLOAT", FPS), "end_policy": _end_policy(),
        }, "optional": {"signals": (KNOT_SIGNAL, CHAIN)}}

    def build(self, file: str, source_fps: float, fps: float, end_policy: str, signals: Signals | None = None):
        from knot_core.signals import ExpressionSignal, load_expression

        path = host().input_file(file, EXPRESSION_EXTENSIONS, "expression file")
        try:
            seq = load_expression(path, source_fps=source_fps or None)
        except (ValueError, UnicodeDecodeError, OSError):  # their messages may quote the file: none is passed on
            raise InputError(f"expression file {file!r} in the input folder is not an expression table: need a Live "
                             "Link Face CSV, a numeric CSV (one row of numbers per frame; set source_fps) or a JSON "
                             "list of per-frame number lists. The node never shows file content; the command line "
                             "(--expression) names the line at fault") from None
        return _chain(signals, ExpressionSignal(seq, fps, end_policy))
