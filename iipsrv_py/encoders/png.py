"""PNG output (imagecodecs' libpng); QLT/PNG_QUALITY is the zlib level 0-9.  ICC (iCCP), EXIF
(eXIf), XMP (iTXt) and resolution (pHYs) are spliced in as chunks."""

from __future__ import annotations

import imagecodecs
import numpy as np

from ..model import Quality
from ..settings import Settings
from .bands import packed, planes
from .metadata import NONE, OutputMetadata, for_bands, png_with_metadata


def encode(pixels: np.ndarray, quality: Quality, settings: Settings, metadata: OutputMetadata = NONE) -> bytes:
    level = settings.png_quality if quality.level is None else min(max(quality.level, 0), 9)
    out = bytes(imagecodecs.png_encode(packed(planes(pixels)), level=level))
    return out if metadata == NONE else png_with_metadata(out, for_bands(metadata, pixels.shape[2]))
