"""Encoders on the arrays the pipeline really hands them: crops and views with odd strides.

Each output is decoded again by an independent reader (Pillow, tifffile) and compared with the
pixels that went in (exactly for the lossless formats; within a bound for JPEG, WebP, AVIF).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from iipsrv_py.encoders import ENCODERS
from iipsrv_py.model import Quality
from iipsrv_py.settings import Settings

LOSSLESS = Settings(webp_quality=-1, avif_quality=-1)


def decode(name: str, data: bytes) -> np.ndarray:
    if name == "tiff":
        pixels = tifffile.imread(io.BytesIO(data))
    else:
        pixels = np.asarray(Image.open(io.BytesIO(data)))
    return pixels if pixels.ndim == 3 else pixels[:, :, None]


def expected_bands(name: str, pixels: np.ndarray) -> np.ndarray:
    """What a format can carry, as Pillow reads it back: JPEG drops alpha; WebP has no grey
    mode, and grey AVIF reads back as RGB."""
    bands = pixels.shape[2]
    if name == "jpeg" and bands in (2, 4):
        pixels = pixels[:, :, : bands - 1]
    if name in ("webp", "avif") and pixels.shape[2] in (1, 2):
        grey = np.repeat(pixels[:, :, :1], 3, axis=2)
        pixels = np.concatenate([grey, pixels[:, :, 1:]], axis=2)
    return pixels


@pytest.mark.parametrize("name", sorted(ENCODERS))
@pytest.mark.parametrize("bands", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (9, 13)])
def test_crops_of_any_shape_encode_and_decode_to_their_pixels(name: str, bands: int, shape: tuple[int, int]) -> None:
    if name in ("jpeg", "avif"):
        # Lossy: one colour per band, which survives compression to within a few levels.
        whole = np.broadcast_to(np.array([200, 60, 130, 128][:bands], np.uint8), (20, 20, bands)).copy()
    else:
        whole = np.random.default_rng(bands * 100 + shape[0] * 10 + shape[1]).integers(0, 256, (20, 20, bands))
        whole = whole.astype(np.uint8)
    h, w = shape
    crop = whole[3 : 3 + h, 5 : 5 + w]  # a view with the whole image's strides
    data = ENCODERS[name].encode(crop, Quality(), LOSSLESS)
    got = decode(name, data)
    want = expected_bands(name, crop).astype(np.int16)
    assert got.shape[:2] == (h, w)
    if name in ("png", "tiff", "webp"):  # lossless here
        assert np.array_equal(got[:, :, : want.shape[2]], want), name
    else:
        assert np.abs(got[:, :, : want.shape[2]].astype(np.int16) - want).max() <= 6, name
