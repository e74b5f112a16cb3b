"""Output encoders, registered by name.

Every encoder takes an H x W x C uint8 array (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA), an
optional explicit quality (QLT; ``None`` means the format's configured default), the settings
and what the output carries besides pixels (``metadata.OutputMetadata``: ICC, XMP, EXIF,
resolution), of which each writes what its format has a place for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..model import Quality
from ..settings import Settings
from . import avif, jpeg, png, tiff, webp
from .metadata import OutputMetadata


@dataclass(frozen=True)
class Encoder:
    name: str
    mime: str
    extension: str
    encode: Callable[[np.ndarray, Quality, Settings, OutputMetadata], bytes]
    alpha: bool = True  # can carry transparency (rotation corners are transparent then)
    max_side: int = (1 << 31) - 1  # the format's largest width or height


ENCODERS: dict[str, Encoder] = {
    "jpeg": Encoder("jpeg", "image/jpeg", "jpg", jpeg.encode, alpha=False, max_side=65535),
    "png": Encoder("png", "image/png", "png", png.encode),
    "webp": Encoder("webp", "image/webp", "webp", webp.encode, max_side=16383),
    "avif": Encoder("avif", "image/avif", "avif", avif.encode, max_side=65536),
    "tiff": Encoder("tiff", "image/tiff", "tif", tiff.encode),
}


def get(name: str) -> Encoder:
    return ENCODERS[name]
