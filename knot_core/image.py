"""Reference-image preparation: a photo (ComfyUI IMAGE or a uint8 array) → the VAE's input at the video size.

Policy:
- `resolution_for` picks the working size as AvatarForcing (and Wan2.1 I2V) does: keep the photo's aspect
  ratio, make the area as large as possible but <= max_area (480×832 by default), each side a multiple of
  16 (VAE stride 8 × DiT patch 2). Each side is floored separately, computed in exact integer arithmetic.
- `prepare_reference` brings the photo to exactly height × width: "crop" scales it to cover the frame and
  cuts the centre (nothing distorted, edges lost); "pad" fits it inside and extends the edge pixels
  (nothing lost, flat borders); "stretch" resizes to the size (aspect distorted). Resizing is bilinear with
  antialiasing (torch.nn.functional.interpolate), so downscaled photos do not alias.
Output: [B, 3, 1, height, width] float32 in [-1, 1], the layout `encode_image` takes.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InputError

FitMode = Literal["crop", "pad", "stretch"]
FIT_MODES: tuple[str, ...] = ("crop", "pad", "stretch")
SIZE_MULTIPLE = 16  # VAE stride 8 × DiT patch 2
DEFAULT_MAX_AREA = 480 * 832


def resolution_for(image_h: int, image_w: int, max_area: int = DEFAULT_MAX_AREA,
                   multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """(height, width) keeping the image's aspect, area <= max_area, both multiples of `multiple`."""
    if min(image_h, image_w) < 1 or multiple < 1:
        raise InputError(f"image size {image_h}x{image_w} with multiple={multiple}; all must be >= 1")
    if max_area < multiple * multiple:
        raise InputError(f"max_area={max_area} is smaller than one {multiple}x{multiple} block; "
                         f"use max_area >= {multiple * multiple}")
    # floor(sqrt(floor(x))) == floor(sqrt(x)), so isqrt gives the exact float answer without rounding slips
    h = math.isqrt(max_area * image_h // image_w) // multiple * multiple
    w = math.isqrt(max_area * image_w // image_h) // multiple * multiple
    # Very thin images: keep one block on the short side and give the long side what the area allows.
    if h < multiple:
        h, w = multiple, max_area // multiple // multiple * multiple
    elif w < multiple:
        h, w = max_area // multiple // multiple * multiple, multiple
    return h, w


def prepare_reference(image: Tensor | np.ndarray, height: int, width: int, mode: FitMode = "crop") -> Tensor:
    """Photo [H, W, 3] / [B, H, W, 3] (float 0..1 as ComfyUI IMAGE, or uint8) → [B, 3, 1, height, width] in [-1, 1]."""
    _check_size("height", height)
    _check_size("width", width)
    if mode not in FIT_MODES:
        raise InputError(f"mode={mode!r}; allowed: {', '.join(FIT_MODES)}")
    x = _as_bchw(image)  # [B, 3, H, W] float32 in 0..1
    if mode == "stretch":
        y = _resize(x, height, width)
    elif mode == "crop":
        y = _cover_and_crop(x, height, width)
    else:
        y = _fit_and_pad(x, height, width)
    return (y.clamp(0.0, 1.0) * 2.0 - 1.0).unsqueeze(2)  # [B, 3, 1, height, width]


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < SIZE_MULTIPLE or value % SIZE_MULTIPLE:
        below = value // SIZE_MULTIPLE * SIZE_MULTIPLE if isinstance(value, int) else 0
        options = [v for v in (below, below + SIZE_MULTIPLE) if v >= SIZE_MULTIPLE]
        raise InputError(f"{name}={value!r} is not a positive multiple of {SIZE_MULTIPLE} (the VAE stride 8 × the "
                         f"DiT patch 2); nearest valid: {' or '.join(map(str, options))}")


def _as_bchw(image: Tensor | np.ndarray) -> Tensor:
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, Tensor):
        raise InputError(f"image of type {type(image).__name__}; expected a torch.Tensor or numpy array "
                         "[H, W, 3] / [B, H, W, 3]")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] != 3 or image.shape[1] < 1 or image.shape[2] < 1:
        raise InputError(f"image shape {tuple(image.shape)}; expected [H, W, 3] or [B, H, W, 3] RGB "
                         "(ComfyUI IMAGE layout; drop an alpha channel first)")
    if image.dtype == torch.uint8:
        x = image.float() / 255.0
    elif image.dtype.is_floating_point:
        x = image.float()
        if not torch.isfinite(x).all():
            raise InputError("image holds NaN or infinite pixel values; give a finite image in 0..1 (check the node "
                             "that made it)")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise InputError(f"float image values span [{lo:.3g}, {hi:.3g}]; expected 0..1 "
                             "(divide 0..255 pixels by 255, or pass uint8)")
    else:
        raise InputError(f"image dtype {image.dtype}; expected uint8 or a float dtype in 0..1")
    return x.permute(0, 3, 1, 2).contiguous()  # [B, 3, H, W]


def _resize(x: Tensor, height: int, width: int) -> Tensor:
    if x.shape[-2:] == (height, width):
        return x
    return F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)


def _cover_and_crop(x: Tensor, height: int, width: int) -> Tensor:
    h, w = x.shape[-2:]
    scale = max(height / h, width / w)
    rh, rw = max(height, round(h * scale)), max(width, round(w * scale))
    top, left = (rh - height) // 2, (rw - width) // 2
    return _resize(x, rh, rw)[:, :, top:top + height, left:left + width]


def _fit_and_pad(x: Tensor, height: int, width: int) -> Tensor:
    h, w = x.shape[-2:]
    scale = min(height / h, width / w)
    rh, rw = min(height, max(1, round(h * scale))), min(width, max(1, round(w * scale)))
    top, left = (height - rh) // 2, (width - rw) // 2
    y = _resize(x, rh, rw)
    return F.pad(y, (left, width - rw - left, top, height - rh - top), mode="replicate")
