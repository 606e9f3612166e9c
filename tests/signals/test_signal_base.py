"""The latent-frame mapping and the multi-signal set shared by every driving signal."""

from __future__ import annotations

import pytest
import torch

from knot_core.errors import InputError
from knot_core.signals.base import DrivingSignal, SignalSet, wan_video_frames_of_latent


class Ramp(DrivingSignal):
    """Row of video frame i = [i] (a real, minimal signal to check the mapping)."""

    def __init__(self, name: str, fps: float, frames: int | None, end_policy="stop") -> None:
        self.name = name
        super().__init__(fps, frames, end_policy)

    @property
    def row_shape(self):
        return (1,)

    def video_features(self, start, count):
        return torch.arange(start, start + count, dtype=torch.float32)[:, None]


def test_wan_mapping():
    assert wan_video_frames_of_latent(0) == [0, 0, 0, 0]
    assert wan_video_frames_of_latent(1) == [1, 2, 3, 4]
    assert wan_video_frames_of_latent(5) == [17, 18, 19, 20]


@pytest.mark.parametrize("frames,latents", [(1, 1), (4, 1), (5, 2), (8, 2), (9, 3), (81, 21)])
def test_available_latent_frames(frames, latents):
    assert Ramp("pose", 16, frames).available_latent_frames() == latents
    assert Ramp("pose", 16, frames, end_policy="continue").available_latent_frames() is None


def test_latent_rows_and_errors():
    signal = Ramp("pose", 16, 20)
    rows = signal.latent_features(2, 3)
    assert rows.shape == (3, 4, 1)
    assert rows[:, :, 0].tolist() == [[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]
    with pytest.raises(InputError, match="need start >= 0 and count >= 1"):
        signal.latent_features(-1, 2)
    with pytest.raises(InputError, match="ends at latent frame 5 .*asked for"):
        signal.latent_features(4, 2)
    with pytest.raises(InputError, match="has 0 frames"):
        Ramp("pose", 16, 0)


def test_signal_set():
    a, b = Ramp("pose", 25, 40), Ramp("expression", 25, None)
    signals = SignalSet([a, b])
    assert signals.available_latent_frames() == 10
    out = signals.latent_features(1, 2)
    assert set(out) == {"pose", "expression"} and torch.equal(out["pose"], out["expression"])
    with pytest.raises(InputError, match="two 'pose' signals"):
        SignalSet([a, Ramp("pose", 25, 10)])
    with pytest.raises(InputError, match=r"different frame rates \[16.0, 25.0\]"):
        SignalSet([a, Ramp("expression", 16, 10)])
