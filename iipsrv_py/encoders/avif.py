"""AVIF output; a quality below 1 (or -1) means lossless.  AVIF_CODEC picks the encoder.

No metadata is written: imagecodecs' libavif binding takes no ICC profile, EXIF or XMP, and
AVIF has no field for a resolution.  The output's colours are sRGB, as the browser assumes.
"""

from __future__ import annotations

import imagecodecs
import numpy as np

from ..model import Quality
from ..settings import Settings
from .bands import packed, planes
from .metadata import NONE, OutputMetadata

# iipsrv's AVIF_CODEC: 0 auto, 1 aom, 2 rav1e.
_CODECS = {0: None, 1: "aom", 2: "rav1e"}


def encode(pixels: np.ndarray, quality: Quality, settings: Settings, metadata: OutputMetadata = NONE) -> bytes:
    q = settings.avif_quality if quality.level is None else min(quality.level, 100)
    level = 100 if q < 1 else q
    data = packed(planes(pixels))
    codec = _CODECS.get(settings.avif_codec)
    try:
        return bytes(imagecodecs.avif_encode(data, level=level, speed=8, codec=codec))
    except imagecodecs.AvifError:
        if codec is None:
            raise
        # The chosen codec is not compiled into this build: fall back to the default.
        return bytes(imagecodecs.avif_encode(data, level=level, speed=8))
