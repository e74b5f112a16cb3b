"""WebP output; a quality below 1 (or -1) means lossless."""

from __future__ import annotations

import imagecodecs
import numpy as np

from ..model import Quality
from ..settings import Settings
from .bands import as_colour, packed


def level(quality: Quality, settings: Settings) -> int:
    return settings.webp_quality if quality.level is None else min(quality.level, 100)


def encode(pixels: np.ndarray, quality: Quality, settings: Settings) -> bytes:
    q = level(quality, settings)
    data = packed(as_colour(pixels))
    if q < 1:
        return bytes(imagecodecs.webp_encode(data, level=100, lossless=True))
    # lossless must be explicit: imagecodecs encodes losslessly when it is left unset.
    return bytes(imagecodecs.webp_encode(data, level=q, lossless=False))
