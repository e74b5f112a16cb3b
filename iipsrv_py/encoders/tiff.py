"""TIFF output (tifffile).

TIFF_COMPRESSION (or the ``comp:`` of ``QLT=comp:q``) chooses the codec inside the TIFF.
Deflate and zstd use TIFF_QUALITY (or QLT) as their level; JPEG and WebP inside a TIFF use
QLT when given, else JPEG_QUALITY / WEBP_QUALITY, since TIFF_QUALITY's default of 1 is a
deflate level and would be an unusable JPEG quality.

The ICC profile (tag 34675), XMP (tag 700) and the resolution (in dots per inch) are written
as tags; EXIF is not (it would need an EXIF IFD of its own).
"""

from __future__ import annotations

import io

import numpy as np
import tifffile

from ..model import Quality
from ..settings import Settings
from . import jpeg, webp
from .bands import packed, planes, without_alpha
from .metadata import NONE, OutputMetadata, for_bands

# TIFF_COMPRESSION numbers (0 none, 1 LZW, 2 deflate, 3 JPEG, 4 WebP, 5 zstd).
BY_NUMBER = {0: "none", 1: "lzw", 2: "deflate", 3: "jpeg", 4: "webp", 5: "zstd"}
XMP_TAG = 700  # XMLPacket, BYTE
_TIFFFILE_NAMES = {"none": None, "lzw": "lzw", "deflate": "zlib", "jpeg": "jpeg", "webp": "webp", "zstd": "zstd"}


def encode(pixels: np.ndarray, quality: Quality, settings: Settings, metadata: OutputMetadata = NONE) -> bytes:
    name = quality.compression or BY_NUMBER[settings.tiff_compression]
    data = planes(pixels)
    args: dict[str, object] = {}
    if name == "jpeg":
        data = planes(without_alpha(pixels))
        args["compressionargs"] = {"level": jpeg.level(quality, settings)}
    elif name == "webp":
        if data.ndim == 2:
            data = np.repeat(data[:, :, None], 3, axis=2)
        # A quality below 1 is lossless, as for WebP output; lossless must be explicit
        # because imagecodecs encodes losslessly when it is left unset.
        q = webp.level(quality, settings)
        args["compressionargs"] = {"level": 100, "lossless": True} if q < 1 else {"level": q, "lossless": False}
    elif name in ("deflate", "zstd"):
        level = settings.tiff_quality if quality.level is None else quality.level
        args["compressionargs"] = {"level": min(max(level, 1), 9 if name == "deflate" else 22)}
    data = packed(data)
    bands = 1 if data.ndim == 2 else data.shape[2]
    metadata = for_bands(metadata, bands)
    if metadata.icc:
        args["iccprofile"] = metadata.icc
    if metadata.dpi is not None:
        args["resolution"] = metadata.dpi
        args["resolutionunit"] = "INCH"
    if metadata.xmp:
        args["extratags"] = [(XMP_TAG, 1, len(metadata.xmp), metadata.xmp, True)]
    out = io.BytesIO()
    tifffile.imwrite(
        out,
        data,
        photometric="minisblack" if bands <= 2 else "rgb",
        compression=_TIFFFILE_NAMES[name],
        extrasamples=("unassalpha",) if bands in (2, 4) else None,
        **args,  # type: ignore[arg-type]
    )
    return out.getvalue()
