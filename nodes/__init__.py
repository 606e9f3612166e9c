"""ComfyUI nodes of Knot Forcing (classic API): each converts inputs, calls knot_core, converts outputs.

Importing this package touches no ComfyUI module; host services are reached through `host.py`
when a node runs.
"""

from __future__ import annotations

from .demo_nodes import KnotForcingDemoModel, KnotForcingMotionSignal
from .live_nodes import KnotForcingLive
from .model_nodes import (
    KnotForcingEncodeReference,
    KnotForcingModelLoader,
    KnotForcingNoReference,
    KnotForcingVAEFromComfy,
    KnotForcingVAELoader,
)
from .settings_nodes import KnotForcingKnotSettings, KnotForcingRunningAhead
from .signal_nodes import (
    KnotForcingAudioEncoderLoader,
    KnotForcingAudioSignal,
    KnotForcingExpressionSignal,
    KnotForcingPoseSignal,
)
from .stream_nodes import KnotForcingStreamingSampler

NODE_CLASSES = {
    "KnotForcingModelLoader": (KnotForcingModelLoader, "Knot Forcing Model Loader"),
    "KnotForcingVAELoader": (KnotForcingVAELoader, "Knot Forcing VAE Loader"),
    "KnotForcingVAEFromComfy": (KnotForcingVAEFromComfy, "Knot Forcing VAE (from Load VAE)"),
    "KnotForcingEncodeReference": (KnotForcingEncodeReference, "Knot Forcing Encode Reference"),
    "KnotForcingNoReference": (KnotForcingNoReference, "Knot Forcing No Reference (size only)"),
    "KnotForcingKnotSettings": (KnotForcingKnotSettings, "Knot Settings"),
    "KnotForcingRunningAhead": (KnotForcingRunningAhead, "Knot Running Ahead"),
    "KnotForcingAudioEncoderLoader": (KnotForcingAudioEncoderLoader, "Knot Forcing wav2vec2 Loader"),
    "KnotForcingAudioSignal": (KnotForcingAudioSignal, "Knot Audio Signal"),
    "KnotForcingPoseSignal": (KnotForcingPoseSignal, "Knot Pose Signal"),
    "KnotForcingExpressionSignal": (KnotForcingExpressionSignal, "Knot Expression Signal"),
    "KnotForcingStreamingSampler": (KnotForcingStreamingSampler, "Knot Forcing Streaming Sampler"),
    "KnotForcingDemoModel": (KnotForcingDemoModel, "Knot Forcing Demo Model (built in)"),
    "KnotForcingMotionSignal": (KnotForcingMotionSignal, "Knot Motion Signal (demo)"),
    "KnotForcingLive": (KnotForcingLive, "Knot Forcing Live"),
}

NODE_CLASS_MAPPINGS = {name: cls for name, (cls, _) in NODE_CLASSES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {name: title for name, (_, title) in NODE_CLASSES.items()}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
