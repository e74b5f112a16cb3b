"""Plain JPEG files, served as a pyramid of virtual tiles.

A JPEG has no tiles and no stored levels, but libjpeg can decode it at 1/2, 1/4 and 1/8 of
its size by DCT scaling, doing only that fraction of the work: those are the levels below full
size (``ceil(W / s)`` pixels, as libjpeg computes them), and further levels halve the 1/8 one
down to a tile by resizing.  A level is decoded whole on first use (Pillow's ``draft`` picks the
DCT scale) and kept in the worker cache (MAX_IMAGE_CACHE_SIZE) when it fits in a quarter of it,
so that a viewer walking the tiles of a level decodes it once; a level too large for the budget
is decoded again for each tile that is not cached yet, so large JPEGs want a larger budget.

Limits and choices:

* at most ``base.MAX_DECODE_UNIT_PIXELS`` pixels (a full decode has to fit in memory): larger
  files (or a header claiming more, as a decompression bomb does) are refused with 415 when
  opened, before anything is decoded;
* 8-bit greyscale and YCbCr/RGB; CMYK and YCCK JPEGs are refused (415): converting them
  needs their ICC profile, which a tile server should not guess;
* the EXIF orientation is ignored, as iipsrv does: pixels are served as stored, so tile
  coordinates always match the stored width and height;
* the embedded ICC profile is exposed as ``icc_profile``; EXIF and comment text as metadata.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image

from ..cache.store import WorkerCache
from ..errors import ImageDecodeError, ServerError, UnsupportedImage
from ..model import METRES_PER_INCH_FACTOR
from ..storage.base import Blob
from .base import check_decode_unit
from .memory import TILE, ArraySource, halving_sizes

log = logging.getLogger(__name__)

DCT_SCALES = (2, 4, 8)

# EXIF tag -> iipsrv metadata key (as the TIFF tags of the same numbers, SPEC section 5).
EXIF_KEYS = {
    0x013B: "creator",  # Artist
    0x8298: "rights",  # Copyright
    0x0132: "date",  # DateTime
    0x010E: "description",  # ImageDescription
    0x0131: "software",
    0x010F: "make",
    0x0110: "model",
}


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).replace("\0", "").strip()


class JpegSource(ArraySource):
    format_name = "jpeg"

    def __init__(self, blob: Blob, cache: WorkerCache | None = None) -> None:
        self._blob = blob
        name = blob.name
        try:
            # Only the header is read here (Pillow decodes lazily); pixels come from a whole
            # read of the file when a level is first needed.
            with Image.open(blob.stream()) as im:
                if im.format != "JPEG":
                    raise UnsupportedImage("not a supported image", f"{name}: {im.format}")
                mode, (width, height) = im.mode, im.size
                icc = im.info.get("icc_profile")
                xmp, exif = im.info.get("xmp"), im.info.get("exif")
                dpi = im.info.get("dpi")
                metadata = self._metadata(im)
        except ServerError:  # ours, storage errors included (502/504 from an object store)
            raise
        except Image.DecompressionBombError as exc:  # Pillow's own limit, above ours: the same refusal
            raise UnsupportedImage("image too large to decode", f"{name}: {exc}") from exc
        except Exception as exc:  # Pillow: a header it cannot read
            raise UnsupportedImage("not a supported image", f"{name}: {type(exc).__name__}: {exc}") from exc
        if mode not in ("L", "RGB"):
            raise UnsupportedImage("only greyscale and RGB JPEG images are supported", f"{name}: mode {mode}")
        check_decode_unit(name, "JPEG image", width, height, 1 if mode == "L" else 3)
        sizes = [(width, height)]
        self._scales = [1]
        for scale in DCT_SCALES:
            if max(sizes[-1]) <= TILE:
                break
            sizes.append((-(-width // scale), -(-height // scale)))
            self._scales.append(scale)
        sizes += halving_sizes(*sizes[-1])[1:]
        self._icc = bytes(icc) if icc else None
        self._xmp = bytes(xmp) if isinstance(xmp, (bytes, bytearray)) and xmp else None
        # Pillow keeps the APP1 payload: the block itself follows the "Exif\0\0" marker.
        exif = bytes(exif) if isinstance(exif, (bytes, bytearray)) else b""
        self._exif = exif[6:] if exif.startswith(b"Exif\0\0") and len(exif) > 6 else None
        fields: dict[str, object] = {"format": "jpeg", "metadata": metadata, "dpi": None}
        if isinstance(dpi, tuple) and len(dpi) == 2 and dpi[0] and dpi[1] and dpi[0] > 0 and dpi[1] > 0:
            fields["dpi"] = (float(dpi[0]) * METRES_PER_INCH_FACTOR, float(dpi[1]) * METRES_PER_INCH_FACTOR)
        super().__init__(blob.identity, name, sizes, self._dct_level, 1 if mode == "L" else 3, fields, cache=cache)

    @staticmethod
    def _bytes(blob: Blob) -> bytes:
        data = blob.read_at(0, blob.identity.size)
        if len(data) != blob.identity.size:
            raise ImageDecodeError("damaged image", f"{blob.name}: read {len(data)} of {blob.identity.size} bytes")
        return data

    @staticmethod
    def _metadata(im: Image.Image) -> tuple[tuple[str, str], ...]:
        found: dict[str, str] = {}
        comment = _text(im.info.get("comment", b""))
        if comment:
            found["comment"] = comment
        try:
            exif = im.getexif()
        except Exception:  # a damaged EXIF block only costs the metadata
            log.info("unreadable EXIF data", exc_info=True)
            return tuple(sorted(found.items()))
        for tag, key in EXIF_KEYS.items():
            value = _text(exif.get(tag, ""))
            if value:
                found[key] = value
        return tuple(sorted(found.items()))

    @property
    def icc_profile(self) -> bytes | None:
        return self._icc

    @property
    def xmp(self) -> bytes | None:
        return self._xmp

    @property
    def exif(self) -> bytes | None:
        return self._exif

    def close(self) -> None:
        self._blob.close()

    def _dct_level(self, level: int) -> np.ndarray | None:
        """Level ``level`` decoded whole by DCT scaling; None for the levels made by resizing."""
        if level >= len(self._scales):
            return None
        scale = self._scales[level]
        expected = self.info.levels[level]
        try:
            with Image.open(io.BytesIO(self._bytes(self._blob))) as im:
                if scale > 1:
                    # Pillow picks the largest DCT scale whose output is at least this size;
                    # floor sizes make that exactly ``scale`` (the output is ceil(W / scale)).
                    im.draft(im.mode, (im.width // scale, im.height // scale))
                im.load()
                pixels = np.asarray(im)
        except ServerError:
            raise
        except Exception as exc:
            raise ImageDecodeError("damaged image", f"{self.name}: 1/{scale} decode: {exc}") from exc
        if pixels.shape[:2] != (expected.height, expected.width):
            raise ImageDecodeError(
                "damaged image",
                f"{self.name}: 1/{scale} decode is {pixels.shape[1]}x{pixels.shape[0]}, "
                f"expected {expected.width}x{expected.height}",
            )
        return pixels
