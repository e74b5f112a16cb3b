"""Resizing with libvips: an antialiased Lanczos reduction (or nearest neighbour on request).

iipsrv point-samples with bilinear interpolation, which aliases on large reductions; libvips
shrinks by box-filtering first and then applies a Lanczos-3 kernel, and releases the GIL
while doing it.
"""

from __future__ import annotations

import numpy as np
import pyvips

_FORMATS = {np.dtype(np.uint8): "uchar", np.dtype(np.uint16): "ushort", np.dtype(np.float32): "float"}

# libvips keeps recent operations and their results (up to 100 MB by default) to answer a
# repeated one.  Every image here is new (made from a numpy array), so nothing could ever be
# answered from it, and it would hold memory outside the worker's one cache budget.
pyvips.cache_set_max(0)


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
    image = to_vips(pixels)
    if width < in_w or height < in_h:
        image = image.resize(min(width / in_w, 1.0), vscale=min(height / in_h, 1.0), kernel=kernel)
    if width > image.width or height > image.height:
        image = _upsize(image, width, height, interpolation)
    if (image.width, image.height) != (width, height):
        # Floating-point scale factors can miss the target by a pixel: pad by repeating the
        # edge, then crop, so the output is always exactly the size that was planned.
        image = image.embed(0, 0, max(width, image.width), max(height, image.height), extend="copy")
        image = image.crop(0, 0, width, height)
    return from_vips(image, pixels.dtype)


def _upsize(image: pyvips.Image, width: int, height: int, interpolation: int) -> pyvips.Image:
    """Enlarge with output pixel centres mapped onto input pixel centres.

    ``vips_resize`` samples an enlargement half a pixel off (libvips issues 943 and 4841), which
    on the slight stretches a level one pixel short of a DeepZoom or IIIF size needs shifts
    and blurs every pixel; ``affine`` with both offsets at half a pixel does not.
    """
    interpolate = pyvips.Interpolate.new("nearest" if interpolation == 0 else "bicubic")
    return image.affine(
        [width / image.width, 0, 0, height / image.height],
        interpolate=interpolate,
        idx=0.5,
        idy=0.5,
        odx=-0.5,
        ody=-0.5,
        oarea=[0, 0, width, height],
        extend="copy",
    )
