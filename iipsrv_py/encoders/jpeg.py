"""JPEG output through libjpeg-turbo (imagecodecs); ICC, EXIF, XMP and resolution spliced in."""

from __future__ import annotations

import imagecodecs
import numpy as np

from ..model import Quality
from ..settings import Settings
from .bands import packed, planes, without_alpha
from .metadata import NONE, OutputMetadata, for_bands, jpeg_with_metadata


def level(quality: Quality, settings: Settings) -> int:
    return settings.jpeg_quality if quality.level is None else min(max(quality.level, 1), 100)


def encode(pixels: np.ndarray, quality: Quality, settings: Settings, metadata: OutputMetadata = NONE) -> bytes:
    data = packed(planes(without_alpha(pixels)))
    out = bytes(imagecodecs.jpeg8_encode(data, level=level(quality, settings)))
    return out if metadata == NONE else jpeg_with_metadata(out, for_bands(metadata, 3 if data.ndim == 3 else 1))
