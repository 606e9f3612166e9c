"""What live audio drives: the signals a live stream adds to the model's inputs, and where the mouth goes.

The demo model is driven by the "motion" signal (knot_core.motion): seeded head motion, blinks and brows keep
the portrait alive with no input at all, and the mouth follows the loudness of the live audio
(`LiveLoudness` -> `LiveMouth`, in the place of the file-based `SpeechMouth`). A model with no driving
adapter streams idle (its audio is still passed through); a model driven by another signal (wav2vec audio
features, pose, expression) has no live feature extractor yet and is refused with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..dit import KnotDiT
from ..errors import InputError
from ..motion import FPS, MotionSequence, MotionSignal
from .audio_input import LiveMouth


@dataclass
class LiveDriving:
    signals: tuple = ()  # driving signals added to the stream's inputs
    mouth: LiveMouth = field(default_factory=LiveMouth)

    def set_mouth(self, frame: int, value: float) -> None:
        self.mouth.set(frame, value)


def live_driving(model: KnotDiT, *, seed: int = 0, motion_amount: float = 0.8, fps: int = FPS) -> LiveDriving:
    """The live driving for this model's adapters (see the module docstring)."""
    wanted = sorted({adapter.signal for adapter in model.driving.values()})
    if not wanted:
        return LiveDriving()
    if wanted != ["motion"]:
        raise InputError(f"this model is driven by {wanted}; live audio can drive the 'motion' signal (the demo "
                         "model) only — render files for this model with `python -m knot_core render`")
    mouth = LiveMouth()
    sequence = MotionSequence(seed, None, fps=fps, amount=motion_amount, mouth=mouth)  # unbounded, lazy
    return LiveDriving((MotionSignal(sequence),), mouth)
