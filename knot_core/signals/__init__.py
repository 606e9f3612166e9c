"""Driving signals (speech audio, pose, expression) aligned to the latent frames of the Wan2.1 VAE.

`audio_features` needs the optional `transformers` package only when a wav2vec2 model is loaded.
"""

from .audio_features import AudioSignal, Wav2Vec2Features, load_wav2vec2
from .base import DrivingSignal, SignalSet, wan_video_frames_of_latent
from .expression import ExpressionSequence, ExpressionSignal, load_expression
from .pose import PoseSequence, PoseSignal, load_openpose_folder, parse_pose_frames, render_pose_maps, retarget, smooth

__all__ = ["AudioSignal", "DrivingSignal", "ExpressionSequence", "ExpressionSignal", "PoseSequence", "PoseSignal",
           "SignalSet", "Wav2Vec2Features", "load_expression", "load_openpose_folder", "load_wav2vec2",
           "parse_pose_frames", "render_pose_maps", "retarget", "smooth", "wan_video_frames_of_latent"]
