"""PNG output (imagecodecs' libpng); QLT/PNG_QUALITY is the zlib level 0-9."""

from __future__ import annotations

import imagecodecs
import numpy as np

from ..model import Quality
from ..settings import Settings
from .bands import packed, planes


def encode(pixels: np.ndarray, quality: Quality, settings: Settings) -> bytes:
    level = settings.png_quality if quality.level is None else min(max(quality.level, 0), 9)
    return bytes(imagecodecs.png_encode(packed(planes(pixels)), level=level))
