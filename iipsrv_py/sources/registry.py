"""Choosing a reader by the content of a file, never by its name."""

from __future__ import annotations

from ..errors import UnsupportedImage
from ..storage.base import Blob
from .base import ImageSource
from .tiff import TiffSource

TIFF_MAGICS = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def open_source(blob: Blob) -> ImageSource:
    head = blob.read_at(0, 16)
    if head[:4] in TIFF_MAGICS:
        return TiffSource(blob)
    raise UnsupportedImage("not a supported image", f"{blob.name}: unrecognised signature {head[:8].hex()}")
