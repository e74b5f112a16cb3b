"""The interface every image format implements.

A source exposes its pyramid as ``ImageInfo`` and answers for single tiles: decoded pixels
(``read_tile``) and, where the stored encoding can go to a browser unchanged, the stored bytes
as a complete stream (``raw_tile``).  Region assembly, caching and resizing live in the
pipeline, so a format only has to know its own bytes.

Besides pixels, a source names what outputs may carry of it (``encoders/metadata.py``): its ICC
profile, XMP packet and EXIF block, each None when it has none.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import NotFound, ServerError, UnsupportedImage
from ..model import ImageInfo, Level, SourceIdentity

# The most pixels a reader decodes in one piece: one stored tile, one compressed strip (which
# decodes whole), one whole JPEG level, one JPEG 2000 resolution decoded whole, a slide's label
# or macro picture.  2^26 pixels is 8192 x 8192: sixteen times the largest tile pyramid writers
# use (2048 x 2048), and 192 MiB as 8-bit RGB.  A worker serves one request at a time, so this
# bounds what one request can make it allocate beyond its output (planning.py bounds the
# region and the output).  A file declaring larger units is refused before anything is
# allocated: its header is what a decompression bomb looks like.
MAX_DECODE_UNIT_PIXELS = 1 << 26
# The same unit in decoded bytes: 2^26 pixels of 4 bytes (RGBA, or 16-bit grey and alpha).
# Wider samples (16-bit RGBA, float) are allowed proportionally fewer pixels.
MAX_DECODE_UNIT_BYTES = 1 << 28


def check_decode_unit(
    name: str,
    what: str,
    width: int,
    height: int,
    bytes_per_pixel: int = 1,
    refusal: type[ServerError] = UnsupportedImage,
) -> None:
    """Refuse (``refusal``: 415 when a file is opened, 413 when a request needs the unit) a
    decode of ``width`` x ``height`` pixels of ``bytes_per_pixel`` bytes that is larger than
    MAX_DECODE_UNIT_PIXELS / MAX_DECODE_UNIT_BYTES; a unit without pixels is a broken header
    (UnsupportedImage whatever ``refusal`` is)."""
    pixels = width * height
    if width <= 0 or height <= 0:
        raise UnsupportedImage("image has no pixels", f"{name}: {what} is {width}x{height}")
    if pixels > MAX_DECODE_UNIT_PIXELS or pixels * max(1, bytes_per_pixel) > MAX_DECODE_UNIT_BYTES:
        raise refusal(
            "image too large to decode",
            f"{name}: {what} of {width}x{height} pixels, {bytes_per_pixel} bytes each, is over the limit of "
            f"{MAX_DECODE_UNIT_PIXELS} pixels / {MAX_DECODE_UNIT_BYTES} bytes",
        )


def level_of(info: ImageInfo, level: int) -> Level:
    """The level, or NotFound for an index the image does not have."""
    if not 0 <= level < len(info.levels):
        raise NotFound("resolution out of range", f"level {level}")
    return info.levels[level]


def tile_of(info: ImageInfo, level: int, col: int, row: int) -> Level:
    """The level of a tile, or NotFound when the level or the tile is outside the image."""
    lvl = level_of(info, level)
    if not (0 <= col < lvl.tiles_x and 0 <= row < lvl.tiles_y):
        raise NotFound("tile out of range", f"level {level} tile {col},{row}")
    return lvl


def xmp_of(info: ImageInfo) -> bytes | None:
    """The XMP packet a format read into the metadata (TIFF tag 700), as bytes, or None."""
    text = info.meta("xmp")
    return text.encode("utf-8") if text else None


class ImageSource(Protocol):
    info: ImageInfo
    identity: SourceIdentity
    name: str  # file name (no directory) for Content-Disposition

    @property
    def icc_profile(self) -> bytes | None:
        """The embedded ICC profile, or None."""
        ...

    @property
    def xmp(self) -> bytes | None:
        """The XMP packet (XML), or None."""
        ...

    @property
    def exif(self) -> bytes | None:
        """The EXIF block as stored (TIFF-structured, without JPEG's ``Exif\\0\\0``), or None."""
        ...

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        """Pixels of one tile as an H x W x C array, cropped at the image edge.

        ``level`` indexes ``info.levels`` (0 = full size).  Raises NotFound for a tile
        outside the level and ImageDecodeError for stored data that cannot be decoded.
        """
        ...

    def read_samples(self, level: int, col: int, row: int) -> np.ndarray:
        """A tile's samples for the float stage of processing (SPEC section 4): as stored
        (16-bit, 32-bit, float...) when the image has more than 8 bits, so that they are
        normalised by ``info.min_values``/``max_values`` (or MINMAX) without first being
        rounded to 8 bits; ``read_tile``'s pixels otherwise (palette, CIELAB and 8-bit images,
        whose normalising range is 0-255 or their SMin/SMaxSampleValue)."""
        ...

    def raw_tile(self, level: int, col: int, row: int) -> bytes | None:
        """The stored tile as a standalone stream in ``info.stored_encoding``, or None."""
        ...

    def page(self, index: int) -> ImageSource:
        """Page ``index`` of a stack (``info.pages``) as a source of its own; 0 is the image
        itself.  Raises NotFound for a page the image does not have."""
        ...

    def associated(self, name: str) -> ImageSource:
        """An image stored beside the pyramid (``info.associated``), or NotFound."""
        ...

    def view(self, horizontal: int, vertical: int) -> ImageSource:
        """The image IIP's ``SDS=h,v`` selects: page ``h`` of a stack, the member at these angles
        of an image sequence, the image itself otherwise (old clients send ``SDS=0,90`` to every
        image)."""
        ...

    def with_layers(self, layers: int) -> ImageSource:
        """The image decoding at most ``layers`` quality layers (JPEG 2000's LYR, MAX_LAYERS)
        under an identity of its own, so that caches keep it apart; formats without quality
        layers return the image itself."""
        ...

    def close(self) -> None:
        """Release the file the image reads from (the catalog calls it once the image has left
        its cache); the image is not used again."""
        ...


class SinglePage:
    """``page``, ``associated``, ``view`` and ``with_layers`` for a source that is neither a stack
    nor has associated images or quality layers (``view`` also serves stacks, through ``page``)."""

    name: str
    info: ImageInfo

    @property
    def icc_profile(self) -> bytes | None:
        return None

    @property
    def xmp(self) -> bytes | None:
        return xmp_of(self.info)

    @property
    def exif(self) -> bytes | None:
        return None

    def page(self, index: int) -> ImageSource:
        if index != 0:
            raise NotFound("image not found", f"{self.name}: no page {index}")
        return self  # type: ignore[return-value]

    def associated(self, name: str) -> ImageSource:
        raise NotFound("image not found", f"{self.name}: no associated image {name!r}")

    def view(self, horizontal: int, vertical: int) -> ImageSource:
        if horizontal and len(self.info.pages) > 1:
            return self.page(horizontal)
        return self  # type: ignore[return-value]

    def with_layers(self, layers: int) -> ImageSource:
        return self  # type: ignore[return-value]

    def close(self) -> None:
        """Nothing to release: formats that read a file close it themselves."""
