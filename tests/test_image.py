"""Reference-image preparation: working resolution policy, crop/pad/stretch shapes and content, validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from knot_core.errors import InputError
from knot_core.image import prepare_reference, resolution_for

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.mark.parametrize(("size", "expected"), [
    ((480, 832), (480, 832)),  # already the native size: unchanged
    ((832, 480), (832, 480)),
    ((512, 512), (624, 624)),  # isqrt(399360) = 631 -> 624
    ((333, 517), (496, 784)),
    ((1080, 1920), (464, 832)),
    ((10, 10000), (16, 19968)),
    ((1, 10000), (16, 24960)),  # too thin for the aspect: one 16-pixel block high, the rest of the area wide
    ((10000, 1), (24960, 16)),
])
def test_resolution_for(size, expected):
    h, w = resolution_for(*size)
    assert (h, w) == expected
    assert h % 16 == 0 and w % 16 == 0 and h * w <= 480 * 832


def test_resolution_for_options_and_errors():
    assert resolution_for(512, 512, max_area=256 * 256, multiple=32) == (256, 256)
    with pytest.raises(InputError, match="max_area=100"):
        resolution_for(512, 512, max_area=100)
    with pytest.raises(InputError, match="0x512"):
        resolution_for(0, 512)


def _photo(h: int = 333, w: int = 517) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["crop", "pad", "stretch"])
def test_odd_sizes_give_exact_shapes(mode):
    out = prepare_reference(_photo(), 480, 832, mode)
    assert out.shape == (1, 3, 1, 480, 832) and out.dtype == torch.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    batch = torch.from_numpy(_photo()).float().div(255).expand(2, -1, -1, -1)
    out2 = prepare_reference(batch, 256, 160, mode)
    assert out2.shape == (2, 3, 1, 256, 160)
    # uint8 and the same pixels as ComfyUI float 0..1 give the same result
    assert torch.allclose(prepare_reference(_photo(), 256, 160, mode), out2[:1], atol=1e-6)


def test_crop_keeps_the_centre():
    img = np.zeros((333, 517, 3), dtype=np.uint8)
    img[166 - 20:166 + 21, 258 - 20:258 + 21] = 255  # white square at the centre
    out = prepare_reference(img, 256, 256, "crop")[0, 0, 0]  # red channel [256, 256]
    rows, cols = torch.nonzero(out > 0.0, as_tuple=True)
    # scale 256/333: the 41-px square becomes ~31.5 px, centred at (127.5, 127.5) after the centre crop
    assert abs(rows.float().mean().item() - 127.5) < 1.0 and abs(cols.float().mean().item() - 127.5) < 1.0
    assert 28 <= rows.max().item() - rows.min().item() + 1 <= 35
    assert out[0, 0] == -1.0 and out[-1, -1] == -1.0


def test_pad_extends_the_edge_colour():
    img = np.zeros((333, 517, 3), dtype=np.uint8)
    img[:] = (51, 102, 153)
    img[100:200, 200:300] = 255
    out = prepare_reference(img, 480, 480, "pad")[0, :, 0]  # [3, 480, 480]
    # 517 wide fits 480 wide: 309 rows of image, 85 rows of border above and 86 below
    edge = torch.tensor([51, 102, 153]).float().div(255).mul(2).sub(1).view(3, 1, 1)
    assert torch.allclose(out[:, :85], edge.expand(3, 85, 480), atol=1e-6)
    assert torch.allclose(out[:, -86:], edge.expand(3, 86, 480), atol=1e-6)
    assert out[0, 85 + 309 // 2 - 30: 85 + 309 // 2 + 30].max() > 0.99  # the white block survives


def test_stretch_keeps_corners():
    img = np.zeros((333, 517, 3), dtype=np.uint8)
    img[:40, :40] = 255
    out = prepare_reference(img, 64, 64, "stretch")[0, 0, 0]
    assert out[0, 0] == 1.0 and out[-1, -1] == -1.0


def test_validation_messages():
    with pytest.raises(InputError, match=r"height=500 is not a positive multiple of 16.*nearest valid: 496 or 512"):
        prepare_reference(_photo(), 500, 832)
    with pytest.raises(InputError, match=r"width=8 .*nearest valid: 16"):
        prepare_reference(_photo(), 480, 8)
    with pytest.raises(InputError, match="drop an alpha channel"):
        prepare_reference(np.zeros((32, 32, 4), dtype=np.uint8), 32, 32)
    with pytest.raises(InputError, match="expected 0..1"):
        prepare_reference(torch.full((32, 32, 3), 200.0), 32, 32)
    with pytest.raises(InputError, match="mode='zoom'"):
        prepare_reference(_photo(), 32, 32, "zoom")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="dtype torch.int32"):
        prepare_reference(torch.zeros(32, 32, 3, dtype=torch.int32), 32, 32)


def test_real_portrait_to_latent():
    path = SHARED / "media" / "portrait_astronaut_512.png"
    if not path.is_file():
        pytest.skip(f"shared test media not found at {path} (the ../shared folder is absent)")
    import cv2

    from knot_core.vae import VAEConfig, WanVAE, encode_image

    rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)  # uint8 [H, W, 3]
    h, w = resolution_for(*rgb.shape[:2], max_area=128 * 128)
    ref = prepare_reference(rgb, h, w, "crop")
    assert ref.shape == (1, 3, 1, 128, 128)
    torch.manual_seed(0)
    z = encode_image(WanVAE(VAEConfig.tiny()).eval(), ref)
    assert z.shape == (1, 16, 1, 16, 16) and torch.isfinite(z).all()
