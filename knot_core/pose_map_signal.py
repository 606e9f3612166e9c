"""Pose driving signal from rendered pose images (an IMAGE batch of OpenPose/DWPose maps), not keypoints.

For pipelines that only have the drawn maps (a ControlNet preprocessor's image output, a folder of
pose renders): each map is area-averaged to a grid x grid RGB thumbnail, and one video frame's row
is that thumbnail [3, grid, grid]. A `CrossAttentionAdapter(signal="pose", feature_dim=3*grid*grid)`
consumes it. The keypoint path (`signals.pose.PoseSignal`) keeps the geometry exactly; use this
one only when no keypoints exist.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InputError
from .signals.base import DrivingSignal, EndPolicy

DEFAULT_GRID = 16


class PoseMapSignal(DrivingSignal):
    """Rows [3, grid, grid] per video frame; with end_policy 'continue' the last map is held."""

    name = "pose"

    def __init__(self, maps: Tensor, fps: float, *, grid: int = DEFAULT_GRID, end_policy: EndPolicy = "stop") -> None:
        if maps.ndim != 4 or maps.shape[-1] != 3 or maps.shape[0] < 1:
            raise InputError(f"pose maps of shape {tuple(maps.shape)}; need an IMAGE batch [T, H, W, 3] with T >= 1 "
                             "(one rendered pose per video frame)")
        if not 1 <= grid <= min(maps.shape[1:3]):
            raise InputError(f"grid={grid}; need 1 <= grid <= the maps' shorter side ({min(maps.shape[1:3])} px)")
        super().__init__(fps, maps.shape[0], end_policy)
        x = maps.detach().float().clamp(0, 1).permute(0, 3, 1, 2)  # [T, 3, H, W]
        self.rows = F.adaptive_avg_pool2d(x, grid).cpu()  # [T, 3, grid, grid]

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.rows.shape[1:])

    def video_features(self, start: int, count: int) -> Tensor:
        index = torch.arange(start, start + count).clamp(max=self.rows.shape[0] - 1)
        return self.rows[index]  # [count, 3, grid, grid]
