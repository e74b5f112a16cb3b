"""WebP output; a quality below 1 (or -1) means lossless.  ICC, EXIF and XMP go into the RIFF
container (VP8X layout); WebP has no field for a resolution."""

from __future__ import annotations

import imagecodecs
import numpy as np

from ..model import Quality
from ..settings import Settings
from .bands import as_colour, packed
from .metadata import NONE, OutputMetadata, for_bands, webp_with_metadata


def level(quality: Quality, settings: Settings) -> int:
    return settings.webp_quality if quality.level is None else min(quality.level, 100)


def encode(pixels: np.ndarray, quality: Quality, settings: Settings, metadata: OutputMetadata = NONE) -> bytes:
    q = level(quality, settings)
    data = packed(as_colour(pixels))
    if q < 1:
        out = bytes(imagecodecs.webp_encode(data, level=100, lossless=True))
    else:
        # lossless must be explicit: imagecodecs encodes losslessly when it is left unset.
        out = bytes(imagecodecs.webp_encode(data, level=q, lossless=False))
    return out if metadata == NONE else webp_with_metadata(out, for_bands(metadata, data.shape[2]))
