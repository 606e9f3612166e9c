"""reference_crop: size check, off-centre crop windows, the skin-colour face guess, keep-mask framing."""

from pathlib import Path

import numpy as np
import pytest
import torch

from knot_core.errors import InputError
from knot_core.image import prepare_reference
from knot_core.reference_crop import crop_window, face_centre, frame_mask, plan_framing

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _scene(h: int, w: int, face_yx: tuple[int, int], radius: int) -> torch.Tensor:
    """A blue background with one skin-toned disc: [1, h, w, 3] in 0..1."""
    img = torch.zeros(1, h, w, 3)
    img[..., 2] = 0.7
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img[0][((yy - face_yx[0]) ** 2 + (xx - face_yx[1]) ** 2) < radius ** 2] = torch.tensor([0.87, 0.64, 0.52])
    return img


def test_small_images_are_refused_before_any_work():
    with pytest.raises(InputError, match="reference image is 40x63 px; a portrait needs at least 64 px"):
        plan_framing(63, 40, 32, 32, "crop")


def test_crop_window_has_the_video_aspect_and_stays_inside():
    assert crop_window(200, 400, 64, 32, (0.5, 0.5)) == (0, 150, 200, 100)  # portrait window from a landscape
    assert crop_window(200, 400, 64, 32, (0.5, 0.0)) == (0, 0, 200, 100)  # clamped at the left border
    assert crop_window(200, 400, 64, 32, (0.5, 0.9)) == (0, 300, 200, 100)
    with pytest.raises(InputError, match="crop centre"):
        crop_window(200, 400, 64, 32, (1.5, 0.5))


def test_centred_crop_equals_prepare_reference_crop():
    img = torch.rand(1, 120, 200, 3)
    ours = plan_framing(120, 200, 48, 48, "crop").apply(img)
    theirs = prepare_reference(img, 48, 48, "crop")
    # cropping before the antialiased resize only changes the outermost pixel ring (no neighbours outside)
    assert torch.allclose(ours[..., 1:-1, 1:-1], theirs[..., 1:-1, 1:-1], atol=1e-5)


def test_face_centre_finds_an_off_centre_face():
    cy, cx = face_centre(_scene(200, 400, (80, 320), 30)[0])
    assert abs(cy - 80 / 200) < 0.02 and abs(cx - 320 / 400) < 0.02
    assert face_centre(torch.zeros(100, 100, 3)) == (0.5, 0.5)  # nothing skin-like: the centre


def test_face_crop_keeps_the_face():
    img = _scene(200, 400, (100, 330), 30)
    framing = plan_framing(200, 400, 64, 32, "face_crop", face_centre(img[0]))
    top, left, h, w = framing.window
    assert left <= 330 - 30 and 330 + 30 <= left + w
    pixels = framing.apply(img)  # (1, 3, 1, 64, 32)
    assert pixels.shape == (1, 3, 1, 64, 32)
    assert float(pixels[0, 0, 0].mean()) > float(prepare_reference(img, 64, 32, "crop")[0, 0, 0].mean())


@pytest.mark.skipif(not (SHARED / "media" / "portrait_astronaut_512.png").is_file(),
                    reason="shared test media (../shared/media) not present")
def test_face_centre_on_the_shared_portrait_is_in_the_upper_middle():
    import cv2

    bgr = cv2.imread(str(SHARED / "media" / "portrait_astronaut_512.png"))
    cy, cx = face_centre(torch.from_numpy(bgr[..., ::-1].copy()).float() / 255)
    assert 0.15 < cy < 0.7 and 0.25 < cx < 0.75


@pytest.mark.parametrize("mode", ["crop", "pad", "stretch"])
def test_keep_mask_follows_the_photo_framing(mode):
    mask = torch.zeros(1, 100, 200)
    mask[:, :, :100] = 1  # keep the left half of the photo
    framing = plan_framing(100, 200, 64, 64, mode)
    grid = frame_mask(mask, (100, 200), framing, (8, 8))
    assert grid.shape == (8, 8)
    assert float(grid.min()) >= 0 and float(grid.max()) <= 1
    expected = {"crop": 0.5, "pad": 0.5, "stretch": 0.5}[mode]
    assert abs(float(grid.mean()) - expected) < 0.07
    assert np.allclose(grid[:, 0].numpy(), 1.0, atol=1e-3) and np.allclose(grid[:, -1].numpy(), 0.0, atol=1e-3)
