"""JPEG output through libjpeg-turbo (imagecodecs)."""

from __future__ import annotations

import imagecodecs
import numpy as np

from ..model import Quality
from ..settings import Settings
from .bands import packed, planes, without_alpha


def level(quality: Quality, settings: Settings) -> int:
    return settings.jpeg_quality if quality.level is None else min(max(quality.level, 1), 100)


def encode(pixels: np.ndarray, quality: Quality, settings: Settings) -> bytes:
    data = packed(planes(without_alpha(pixels)))
    return bytes(imagecodecs.jpeg8_encode(data, level=level(quality, settings)))
