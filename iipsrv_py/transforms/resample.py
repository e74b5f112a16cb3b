"""Resizing with libvips: an antialiased Lanczos reduction (or nearest neighbour on request).

iipsrv point-samples with bilinear interpolation, which aliases on large reductions; libvips
shrinks by box-filtering first and then applies a Lanczos-3 kernel, and releases the GIL
while doing it.
"""

from __future__ import annotations

import numpy as np
import pyvips

_FORMATS = {np.dtype(np.uint8): "uchar", np.dtype(np.uint16): "ushort", np.dtype(np.float32): "float"}


def to_vips(pixels: np.ndarray) -> pyvips.Image:
    pixels = np.ascontiguousarray(pixels)
    height, width, bands = pixels.shape
    return pyvips.Image.new_from_memory(pixels.data, width, height, bands, _FORMATS[pixels.dtype])


def from_vips(image: pyvips.Image, dtype: np.dtype) -> np.ndarray:
    return np.ndarray(buffer=image.write_to_memory(), dtype=dtype, shape=(image.height, image.width, image.bands))


def resize(pixels: np.ndarray, width: int, height: int, interpolation: int = 1) -> np.ndarray:
    """``pixels`` (H x W x C) resized to exactly ``width`` x ``height``."""
    in_h, in_w = pixels.shape[:2]
    if (in_w, in_h) == (width, height):
        return pixels
    kernel = "nearest" if interpolation == 0 else "lanczos3"
    image = to_vips(pixels).resize(width / in_w, vscale=height / in_h, kernel=kernel)
    if (image.width, image.height) != (width, height):
        # Floating-point scale factors can miss the target by a pixel: pad by repeating the
        # edge, then crop, so the output is always exactly the size that was planned.
        image = image.embed(0, 0, max(width, image.width), max(height, image.height), extend="copy")
        image = image.crop(0, 0, width, height)
    return from_vips(image, pixels.dtype)
