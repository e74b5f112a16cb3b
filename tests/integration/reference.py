"""Expected values for the integration tests, in IIP terms (resolution 0 is the smallest level).

Built on the functional tests' reference (tifffile reads the fixtures, Pillow decodes what the
server sent); nothing here imports iipsrv_py.
"""

from __future__ import annotations

import io

import numpy as np
import tifffile
from PIL import Image

from tests import helpers
from tests.functional import reference as base
from tests.functional.reference import StoredLevel as Level
from tests.functional.reference import mean_abs_diff

__all__ = ["Level", "decode", "jpeg_error", "lanczos", "level_pixels", "levels", "mean_abs_diff", "tile_pixels"]

lanczos = base.downscale


def levels(name: str) -> list[Level]:
    """The pyramid, in IIP order: resolution 0 is the smallest level."""
    return list(base.levels(name))[::-1]


def samples_per_pixel(name: str) -> int:
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        return int(tif.pages.first.samplesperpixel)


def level_pixels(name: str, resolution: int) -> np.ndarray:
    """Every pixel of IIP resolution ``resolution``, H x W x C (read-only, cached)."""
    return base.pixels(name, len(base.levels(name)) - 1 - resolution)


def tile_pixels(name: str, resolution: int, index: int) -> np.ndarray:
    x, y, w, h = levels(name)[resolution].tile_box(index)
    return level_pixels(name, resolution)[y : y + h, x : x + w]


def decode(data: bytes, expected_format: str) -> np.ndarray:
    """An image body decoded with Pillow, H x W x C, after checking its format."""
    found = base.image_format(data)
    assert found == expected_format, f"expected {expected_format}, got {found}"
    return base.decode(data)


def jpeg_error(pixels: np.ndarray, quality: int) -> float:
    """How far a plain JPEG encoding of ``pixels`` at ``quality`` (Pillow) decodes from them:
    the tolerance any JPEG of this content needs."""
    image = Image.fromarray(np.ascontiguousarray(pixels if pixels.shape[2] > 1 else pixels[..., 0]))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return mean_abs_diff(decode(out.getvalue(), "JPEG"), pixels)
