"""Band layouts that individual output formats accept."""

from __future__ import annotations

import numpy as np


def without_alpha(pixels: np.ndarray) -> np.ndarray:
    """Grey or RGB: formats without transparency drop the alpha band."""
    bands = pixels.shape[2]
    if bands == 2:
        return pixels[:, :, :1]
    if bands == 4:
        return pixels[:, :, :3]
    return pixels


def as_colour(pixels: np.ndarray) -> np.ndarray:
    """RGB or RGBA: formats without a grey mode get the grey band three times."""
    bands = pixels.shape[2]
    if bands == 1:
        return np.repeat(pixels, 3, axis=2)
    if bands == 2:
        return np.concatenate([np.repeat(pixels[:, :, :1], 3, axis=2), pixels[:, :, 1:]], axis=2)
    return pixels


def planes(pixels: np.ndarray) -> np.ndarray:
    """H x W for one band (codecs reject a trailing axis of 1), else unchanged."""
    return pixels[:, :, 0] if pixels.shape[2] == 1 else pixels


def packed(pixels: np.ndarray) -> np.ndarray:
    """The pixels in one C-ordered block with plain strides, copied only when they are not.

    Codecs check the strides, and numpy calls an array with a side of one pixel contiguous
    whatever its strides are (a 1x1 crop of a grey+alpha image keeps its 2-sample stride), so
    ``np.ascontiguousarray`` is not enough.
    """
    expected, step = [], pixels.itemsize
    for size in reversed(pixels.shape):
        expected.append(step)
        step *= size
    if pixels.strides == tuple(reversed(expected)):
        return pixels
    return pixels.copy(order="C")
