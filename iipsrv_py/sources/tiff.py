"""Tiled TIFF and BigTIFF pyramids, read with tifffile and decoded with imagecodecs.

Levels come from the SubIFDs of the first page when it has them (OME-TIFF, ``vips --subifd``),
otherwise from the IFD chain.  Candidate pages are kept when they are tiled, have the same
pixel layout as the first page, are smaller than the previous level and have its aspect ratio
(which leaves out thumbnails, labels and macro photographs); they are sorted by size and each
level keeps its real downsample factors.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import tifffile

from ..errors import ImageDecodeError, NotFound, UnsupportedImage
from ..model import ImageInfo, Level
from ..storage.base import Blob
from .base import SinglePage
from .jpegstream import standalone_jpeg

log = logging.getLogger(__name__)

# TIFF tag -> iipsrv metadata key (SPEC section 5).
TAG_KEYS = {
    "Artist": "creator",
    "Copyright": "rights",
    "DateTime": "date",
    "ImageDescription": "description",
    "DocumentName": "title",
    "PageName": "pagename",
    "Software": "software",
    "Make": "make",
    "Model": "model",
    "XMLPacket": "xmp",
}

PHOTOMETRIC_MINISWHITE = 0
PHOTOMETRIC_MINISBLACK = 1
PHOTOMETRIC_RGB = 2
PHOTOMETRIC_YCBCR = 6
COMPRESSION_JPEG = 7
METRES_PER_INCH_FACTOR = 39.37  # iipsrv's conversion (300 dpi -> 11811 px/m)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        for encoding in ("utf-8", "latin-1"):
            try:
                value = value.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
    return str(value).replace("\0", "").strip()


def _sample_values(value: Any, default: float, channels: int) -> tuple[float, ...]:
    """One SMin/SMaxSampleValue per channel.

    The tag's type follows the samples, so for 8-bit images it is often BYTE, which tifffile
    reads as ``bytes``; a count that is neither 1 nor one per channel is ignored.
    """
    if isinstance(value, bytes):
        value = tuple(value)
    try:
        values = np.asarray(default if value is None else value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        values = np.asarray([default])
    if values.size not in (1, channels):
        values = np.asarray([default])
    return tuple(float(v) for v in np.broadcast_to(values, (channels,)))


def _is_pyramid_level(page: tifffile.TiffPage, base: tifffile.TiffPage, previous: tifffile.TiffPage) -> bool:
    if not page.is_tiled or page.imagedepth != 1:
        return False
    if (page.samplesperpixel, page.bitspersample, page.sampleformat, page.planarconfig) != (
        base.samplesperpixel,
        base.bitspersample,
        base.sampleformat,
        base.planarconfig,
    ):
        return False
    w, h = page.imagewidth, page.imagelength
    if w >= previous.imagewidth or h >= previous.imagelength:
        return False  # a stack page or a duplicate, not a reduced resolution
    # Same aspect ratio as the full image, allowing each side a rounding error of a pixel.
    return abs(w * base.imagelength - h * base.imagewidth) <= base.imagewidth + base.imagelength


def _pyramid_pages(tif: tifffile.TiffFile) -> list[tifffile.TiffPage]:
    first = tif.pages.first
    if first.subifds and first.pages is not None:
        candidates = list(first.pages)
    else:
        candidates = [tif.pages[i] for i in range(1, len(tif.pages))]
    levels = [page for page in candidates if isinstance(page, tifffile.TiffPage)]
    pages = [first]
    for page in sorted(levels, key=lambda p: -p.imagewidth * p.imagelength):
        if _is_pyramid_level(page, first, pages[-1]):
            pages.append(page)
    return pages


class TiffSource(SinglePage):
    format_name = "tiff"

    def __init__(self, blob: Blob) -> None:
        self.identity = blob.identity
        self.name = blob.name
        self._blob = blob
        try:
            tif = tifffile.TiffFile(blob.stream())
            tif.pages.useframes = False
            self._pages = _pyramid_pages(tif)
        except UnsupportedImage:
            raise
        except Exception as exc:
            raise UnsupportedImage("not a supported image", f"{self.name}: {type(exc).__name__}: {exc}") from exc
        self._tif = tif
        self.info = self._describe()

    def _describe(self) -> ImageInfo:
        first = self._pages[0]
        if not first.is_tiled:
            raise UnsupportedImage("untiled TIFF images are not supported", f"{self.name}: stripped TIFF")
        if first.dtype != np.uint8 or first.planarconfig != 1:
            raise UnsupportedImage(
                "only 8-bit interleaved TIFF images are supported",
                f"{self.name}: dtype {first.dtype}, planarconfig {first.planarconfig}",
            )
        photometric = int(first.photometric)
        if photometric in (PHOTOMETRIC_MINISBLACK, PHOTOMETRIC_MINISWHITE) and first.samplesperpixel == 1:
            colorspace = "grey"
        elif photometric in (PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR) and first.samplesperpixel == 3:
            colorspace = "srgb"
        else:
            raise UnsupportedImage(
                "unsupported TIFF colour layout",
                f"{self.name}: photometric {photometric}, {first.samplesperpixel} samples",
            )
        # Refuse a compression no installed codec decodes when the file is opened, rather
        # than failing every tile later.
        if int(first.compression) not in tifffile.TIFF.DECOMPRESSORS:
            raise UnsupportedImage("unsupported TIFF compression", f"{self.name}: compression {first.compression}")
        width, height = first.imagewidth, first.imagelength
        levels = tuple(
            Level(p.imagewidth, p.imagelength, p.tilewidth, p.tilelength, width / p.imagewidth, height / p.imagelength)
            for p in self._pages
        )
        channels = first.samplesperpixel
        tags = first.tags
        mins = _sample_values(tags.valueof("SMinSampleValue"), 0.0, channels)
        maxs = _sample_values(tags.valueof("SMaxSampleValue"), 255.0, channels)
        self._minis_white = photometric == PHOTOMETRIC_MINISWHITE
        stored = ""
        if int(first.compression) == COMPRESSION_JPEG and not self._minis_white:
            stored = "jpeg"
        self._rgb_jpeg = photometric == PHOTOMETRIC_RGB
        return ImageInfo(
            width=width,
            height=height,
            levels=levels,
            channels=channels,
            bits_per_sample=8,
            colorspace=colorspace,
            min_values=mins,
            max_values=maxs,
            dpi=self._dpi(first),
            metadata=self._metadata(first),
            format="tiff",
            stored_encoding=stored,
        )

    @staticmethod
    def _dpi(page: tifffile.TiffPage) -> tuple[float, float] | None:
        xres = page.tags.valueof("XResolution")
        yres = page.tags.valueof("YResolution")
        unit = int(page.tags.valueof("ResolutionUnit", 2))
        if not xres or not yres or unit not in (2, 3):
            return None
        try:
            x = xres[0] / xres[1]
            y = yres[0] / yres[1]
        except (TypeError, ZeroDivisionError, IndexError):
            return None
        if x <= 0 or y <= 0:
            return None
        factor = METRES_PER_INCH_FACTOR if unit == 2 else 100.0
        return x * factor, y * factor

    @staticmethod
    def _metadata(page: tifffile.TiffPage) -> tuple[tuple[str, str], ...]:
        found: dict[str, str] = {}
        for tag_name, key in TAG_KEYS.items():
            tag = page.tags.get(tag_name)
            if tag is not None:
                value = _text(tag.value)
                if value:
                    found[key] = value
        return tuple(sorted(found.items()))

    @property
    def icc_profile(self) -> bytes | None:
        profile = self._pages[0].iccprofile
        return bytes(profile) if profile else None

    # -- tiles ------------------------------------------------------------------------------

    def _locate(self, level: int, col: int, row: int) -> tuple[tifffile.TiffPage, int, int, int]:
        if not 0 <= level < len(self._pages):
            raise NotFound("resolution out of range", f"level {level}")
        lvl = self.info.levels[level]
        if not (0 <= col < lvl.tiles_x and 0 <= row < lvl.tiles_y):
            raise NotFound("tile out of range", f"level {level} tile {col},{row}")
        page = self._pages[level]
        index = row * lvl.tiles_x + col
        try:
            return page, index, int(page.dataoffsets[index]), int(page.databytecounts[index])
        except IndexError:
            raise ImageDecodeError("damaged image", f"{self.name}: no offset for tile {index}") from None

    def _read(self, offset: int, count: int, what: str) -> bytes:
        data = self._blob.read_at(offset, count)
        if len(data) != count:
            raise ImageDecodeError("damaged image", f"{self.name}: {what} truncated ({len(data)} of {count} bytes)")
        return data

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        page, index, offset, count = self._locate(level, col, row)
        _, _, w, h = self.info.levels[level].tile_rect(col, row)
        if count == 0:
            # A sparse tile (never written) reads as zeros, as tifffile itself reads it.
            return np.zeros((h, w, self.info.channels), np.uint8)
        data = self._read(offset, count, f"tile {index}")
        try:
            decoded, _, shape = page.decode(data, index, jpegtables=page.jpegtables)
        except Exception as exc:
            raise ImageDecodeError("damaged image", f"{self.name}: tile {index}: {exc}") from exc
        if decoded is None:
            raise ImageDecodeError("damaged image", f"{self.name}: tile {index} decoded to nothing")
        tile = decoded.reshape(shape[1], shape[2], shape[3])[:h, :w]
        if self._minis_white:
            tile = 255 - tile
        return tile

    def raw_tile(self, level: int, col: int, row: int) -> bytes | None:
        if not self.info.stored_encoding:
            return None
        page, index, offset, count = self._locate(level, col, row)
        if count == 0:
            return None
        data = self._read(offset, count, f"tile {index}")
        return standalone_jpeg(data, page.jpegtables, self._rgb_jpeg)
