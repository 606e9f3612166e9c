"""Reference framing for portraits: a size check, an off-centre crop, a face-centre guess, and keep-masks.

`image.prepare_reference` crops around the image centre; a portrait whose face is off centre
(a landscape photo going into a portrait video) loses the face. `plan_framing` picks the largest
window of the video's aspect ratio that fits the photo, centred as near a given point as the
borders allow; `Framing.apply` cuts it and hands it to `prepare_reference`. `frame_mask` puts a
keep-mask through the same framing onto the latent grid.

`face_centre` is a heuristic, not a detector (OpenCV 5 ships no Haar cascades, and nothing is
downloaded): pixels in the classic YCrCb skin range (Cr 133..173, Cb 77..127; Chai & Ngan 1999)
are weighted by a broad Gaussian prior around the upper-middle of the frame, where portraits
put the face; the centre is the weighted mean of the largest skin region. It falls back to the
image centre when less than 0.5% of the image looks like skin. It fails on skin-coloured
backgrounds and on several faces; pass an explicit centre then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InputError
from .image import FitMode, prepare_reference, resolution_for

MIN_REFERENCE_SIDE = 64  # pixels; below this there is no face to animate
MAX_REFERENCE_SIDE = 8192  # pixels; the video is at most a few hundred pixels a side, a bigger photo only costs memory
SKIN_CR, SKIN_CB = (133, 173), (77, 127)
MIN_SKIN_FRACTION = 0.005


def check_reference_size(height: int, width: int) -> None:
    if min(height, width) < MIN_REFERENCE_SIDE:
        raise InputError(f"reference image is {width}x{height} px; a portrait needs at least {MIN_REFERENCE_SIDE} px "
                         "on each side (512 px or more recommended): give a larger, face-sized photo")
    if max(height, width) > MAX_REFERENCE_SIDE:
        raise InputError(f"reference image is {width}x{height} px; give at most {MAX_REFERENCE_SIDE} px on a side "
                         "(the video is far smaller): resize the photo first")


def _uint8_hwc(image: Tensor) -> np.ndarray:
    """One IMAGE frame [H, W, 3] float 0..1 -> uint8 array."""
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def face_centre(image: Tensor) -> tuple[float, float]:
    """Guess the face centre of one photo [H, W, 3] (0..1) as (y, x) in 0..1 of the image size."""
    rgb = _uint8_hwc(image)
    h, w = rgb.shape[:2]
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    cr, cb = ycc[..., 1], ycc[..., 2]
    skin = ((cr >= SKIN_CR[0]) & (cr <= SKIN_CR[1]) & (cb >= SKIN_CB[0]) & (cb <= SKIN_CB[1])).astype(np.uint8)
    skin = cv2.morphologyEx(skin, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    if skin.mean() < MIN_SKIN_FRACTION:
        return 0.5, 0.5
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    prior = np.exp(-(((yy / h - 0.4) / 0.35) ** 2 + ((xx / w - 0.5) / 0.35) ** 2))  # portraits: face upper-middle
    count, labels = cv2.connectedComponents(skin)
    scores = [float((prior * (labels == i)).sum()) for i in range(1, count)]
    region = (labels == 1 + int(np.argmax(scores))) * prior
    total = region.sum()
    return float((region * yy).sum() / total / h), float((region * xx).sum() / total / w)


FramingMode = Literal["crop", "face_crop", "pad", "stretch"]
FRAMING_MODES: tuple[str, ...] = ("crop", "face_crop", "pad", "stretch")


@dataclass(frozen=True)
class Framing:
    """Where the video frame was cut from the photo: a window (top, left, h, w), then `mode` to the size."""

    window: tuple[int, int, int, int]
    mode: FitMode
    height: int
    width: int

    def apply(self, image: Tensor) -> Tensor:
        """IMAGE-layout [B, H, W, 3] -> [B, 3, 1, height, width] in [-1, 1]."""
        top, left, h, w = self.window
        return prepare_reference(image[:, top:top + h, left:left + w], self.height, self.width, self.mode)


def plan_framing(image_h: int, image_w: int, height: int, width: int, mode: str,
                 centre: tuple[float, float] = (0.5, 0.5)) -> Framing:
    """crop / face_crop: the largest height:width window around centre; pad / stretch: the whole photo."""
    check_reference_size(image_h, image_w)
    if mode not in FRAMING_MODES:
        raise InputError(f"framing mode {mode!r}; choose one of {', '.join(FRAMING_MODES)}")
    if mode in ("pad", "stretch"):
        return Framing((0, 0, image_h, image_w), mode, height, width)
    return Framing(crop_window(image_h, image_w, height, width, centre), "crop", height, width)


def crop_window(image_h: int, image_w: int, height: int, width: int,
                centre: tuple[float, float]) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the largest window with the aspect height:width, centred near centre."""
    cy, cx = centre
    if not (0.0 <= cy <= 1.0 and 0.0 <= cx <= 1.0):
        raise InputError(f"crop centre (y={cy}, x={cx}); both must be in 0..1 of the image size")
    scale = min(image_h / height, image_w / width)
    ch, cw = min(image_h, max(1, round(height * scale))), min(image_w, max(1, round(width * scale)))
    top = int(np.clip(round(cy * image_h - ch / 2), 0, image_h - ch))
    left = int(np.clip(round(cx * image_w - cw / 2), 0, image_w - cw))
    return top, left, ch, cw


def reference_size(image_h: int, image_w: int, resolution: tuple[int, int], height: int = 0,
                   width: int = 0) -> tuple[int, int]:
    """The video size for a photo: (height, width) if given, else the photo's aspect within the model's
    recommended pixel area (`resolution` = (h, w)), sides on multiples of 16."""
    if height and width:
        return height, width
    auto_h, auto_w = resolution_for(image_h, image_w, max_area=resolution[0] * resolution[1])
    return height or auto_h, width or auto_w


def frame_reference(codec, image: Tensor, height: int, width: int, framing: str = "crop",
                    centre: tuple[float, float] = (0.5, 0.5), keep_mask: Tensor | None = None
                    ) -> tuple[Tensor, Tensor | None]:
    """The one reference policy of the node and the CLI: photo [B, H, W, 3] in 0..1 (the first is used) ->
    (latent (1, 16, 1, h, w), keep-mask on the latent grid or None). face_crop centres on `face_centre`."""
    from .vae import encode_image

    photo, (ih, iw) = image[:1], tuple(image.shape[1:3])
    if framing == "face_crop":
        centre = face_centre(photo[0])
    plan = plan_framing(ih, iw, height, width, framing, centre)
    pixels = plan.apply(photo).to(device=codec.device, dtype=codec.dtype)  # (1, 3, 1, h, w)
    latent = encode_image(codec, pixels).float()  # (1, 16, 1, h/8, w/8)
    mask = None if keep_mask is None else frame_mask(keep_mask, (ih, iw), plan, tuple(latent.shape[-2:]))
    return latent, mask


def frame_mask(mask: Tensor, image_hw: tuple[int, int], framing: Framing, latent_hw: tuple[int, int]) -> Tensor:
    """MASK [B, H, W] / [H, W] (1 = keep the reference there) -> latent grid (h, w) in 0..1.

    The mask goes through the photo's own framing (so it stays on the same pixels), then is
    area-averaged to the latent grid.
    """
    m = mask[0] if mask.ndim == 3 else mask
    if m.ndim != 2:
        raise InputError(f"mask shape {tuple(mask.shape)}; expected a ComfyUI MASK [B, H, W] or [H, W]")
    m = m.detach().float().clamp(0, 1)[None, None]  # (1, 1, H, W)
    if tuple(m.shape[-2:]) != tuple(image_hw):
        m = F.interpolate(m, size=image_hw, mode="bilinear", align_corners=False)
    pixels = framing.apply(m[0].permute(1, 2, 0).expand(-1, -1, 3)[None])  # (1, 3, 1, H', W') in [-1, 1]
    keep = (pixels[:, :1, 0] + 1) / 2  # (1, 1, H', W')
    return F.interpolate(keep, size=latent_hw, mode="area")[0, 0]  # (h, w)
