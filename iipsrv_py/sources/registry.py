"""Choosing a reader by the content of a file, never by its name."""

from __future__ import annotations

from ..cache.store import WorkerCache
from ..errors import UnsupportedImage
from ..storage.base import Blob
from .base import ImageSource
from .jp2 import Jp2Source  # loads glymur only when the first JPEG 2000 image is opened
from .jpeg import JpegSource
from .svs import Aperio, is_aperio
from .tiff import PlainTiff, TiffFlavour, TiffSource, open_structure, refused_unless_readable

TIFF_MAGICS = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
JP2_SIGNATURE = b"\0\0\0\x0cjP  \r\n\x87\n"  # the JPEG 2000 signature box
J2K_MAGIC = b"\xff\x4f\xff\x51"  # SOC then SIZ: a raw codestream
JPEG_MAGIC = b"\xff\xd8\xff"


def open_source(blob: Blob, cache: WorkerCache | None = None) -> ImageSource:
    """The reader for a file's content; ``cache`` is the worker cache, where readers keep what
    they decode beyond single tiles (whole levels), within its budget."""
    head = blob.read_at(0, 16)
    if head[:4] in TIFF_MAGICS:
        return open_tiff(blob, cache)
    if head[:12] == JP2_SIGNATURE or head[:4] == J2K_MAGIC:
        return Jp2Source(blob, cache)
    if head[:3] == JPEG_MAGIC:
        return JpegSource(blob, cache)
    raise UnsupportedImage("not a supported image", f"{blob.name}: unrecognised signature {head[:8].hex()}")


def open_tiff(blob: Blob, cache: WorkerCache | None = None) -> ImageSource:
    """A TIFF file's first image, with the flavour its first page declares (Aperio SVS, or
    none); UnsupportedImage when it cannot be served."""
    structure = open_structure(blob, cache)
    with refused_unless_readable(blob.name):
        flavour: TiffFlavour = Aperio(structure) if is_aperio(structure.first) else PlainTiff(blob.name)
        return TiffSource(structure, 0, flavour)
