"""Mirroring and rotation by any angle (clockwise, as IIP and IIIF both mean it)."""

from __future__ import annotations

import numpy as np

from .resample import from_vips, to_vips


def _fresh(view: np.ndarray) -> np.ndarray:
    """A new array with ordinary strides.  Encoders (imagecodecs) refuse negative strides, and
    np.ascontiguousarray would keep them for arrays with a side of 1 pixel, which numpy
    already counts as contiguous."""
    return view.copy(order="C")


def mirror(pixels: np.ndarray) -> np.ndarray:
    return _fresh(pixels[:, ::-1])


def rotate(pixels: np.ndarray, degrees: float, transparent: bool) -> np.ndarray:
    """``pixels`` turned clockwise by ``degrees``.

    Right angles are exact array rotations.  Other angles give the bounding box of the turned
    image; the corners it uncovers are transparent when the output format has alpha
    (``transparent``), white otherwise.
    """
    angle = degrees % 360
    if angle == 0:
        return pixels
    if angle % 90 == 0:
        return _fresh(np.rot90(pixels, k=-int(angle // 90)))
    bands = pixels.shape[2]
    top = int(np.iinfo(pixels.dtype).max)  # white and opaque: 255, or 65535 for 16-bit output
    if transparent and bands in (1, 3):
        alpha = np.full((*pixels.shape[:2], 1), top, pixels.dtype)
        pixels = np.concatenate([pixels, alpha], axis=2)
        bands += 1
    has_alpha = bands in (2, 4)
    background = [top] * (bands - 1) + ([0] if has_alpha else [top])
    image = to_vips(pixels).rotate(angle, background=background)
    return from_vips(image, pixels.dtype)
