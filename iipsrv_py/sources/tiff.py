"""TIFF and BigTIFF images, read with tifffile and decoded with imagecodecs.

Levels come from the SubIFDs of a page when it has them (OME-TIFF, ``vips --subifd``),
otherwise from the IFD chain after it.  Candidate pages are kept when they are stored like the
first page (tiled or stripped, same pixel layout), are smaller than the previous level and
have its aspect ratio (which leaves out thumbnails, labels and macro photographs); they are
sorted by size and each level keeps its real downsample factors.

Pages of the IFD chain that are as large as the first page and stored like it are the pages of
a stack (``info.pages``), each a source of its own through ``page(n)``.

Samples of any depth and photometric are turned into 8-bit grey/RGB(+alpha) by a
``pixels.Conversion`` decided when the file is opened.  Stripped images are served as virtual
256 x 256 tiles, decoding only the strips a tile covers (uncompressed strips: only its rows),
with a small byte-bounded cache of decoded strips so that the tiles of a strip row share them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import tifffile

from ..cache.lru import LRUCache
from ..errors import ImageDecodeError, NotFound, UnsupportedImage
from ..model import METRES_PER_INCH_FACTOR, ImageInfo, Level, SourceIdentity
from ..storage.base import Blob
from . import pixels
from .base import ImageSource, SinglePage, tile_of
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
PHOTOMETRIC_PALETTE = 3
PHOTOMETRIC_YCBCR = 6
PHOTOMETRIC_CIELAB = 8
COMPRESSION_NONE = 1
COMPRESSION_JPEG = 7
PLANAR_SEPARATE = 2
EXTRASAMPLE_ALPHA = (1, 2)  # associated, unassociated: both kept as stored
# Virtual tiles of a stripped image, and the bytes of decoded strips one source may keep.
STRIP_TILE = 256
STRIP_CACHE_BYTES = 16 * 1024 * 1024
# An uncompressed tile's rows are read in one request when the span between them (the rest of
# each row) is at most this large; otherwise row by row.
ROW_SPAN_BYTES = 4 * 1024 * 1024
# The largest stored segment (a tile, or a compressed strip, which can only be decoded whole)
# a worker will decode: a file declaring larger ones is refused when it is opened instead of
# exhausting the worker's memory on its first tile.
MAX_SEGMENT_BYTES = 256 * 1024 * 1024


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


def _layout_key(page: tifffile.TiffPage) -> tuple[object, ...]:
    return (page.samplesperpixel, page.bitspersample, page.sampleformat, page.planarconfig, page.is_tiled)


def _is_pyramid_level(page: tifffile.TiffPage, base: tifffile.TiffPage, previous: tifffile.TiffPage) -> bool:
    # A stripped page of a tiled image (an SVS thumbnail, label or macro) is never a level.
    if page.imagedepth != 1 or _layout_key(page) != _layout_key(base):
        return False
    w, h = page.imagewidth, page.imagelength
    if w >= previous.imagewidth or h >= previous.imagelength:
        return False  # a stack page or a duplicate, not a reduced resolution
    # Same aspect ratio as the full image, allowing each side a rounding error of a pixel.
    return abs(w * base.imagelength - h * base.imagewidth) <= base.imagewidth + base.imagelength


def _is_stack_page(page: tifffile.TiffPage, first: tifffile.TiffPage) -> bool:
    """A page of the chain as large as the first and stored like it, not marked as a reduced
    resolution: one more image of a stack."""
    return (
        (page.imagewidth, page.imagelength) == (first.imagewidth, first.imagelength)
        and page.imagedepth == 1
        and _layout_key(page) == _layout_key(first)
        and int(page.photometric) == int(first.photometric)
        and not int(page.subfiletype) & 1
    )


def _chain(tif: tifffile.TiffFile) -> list[tifffile.TiffPage]:
    return [page for page in (tif.pages[i] for i in range(len(tif.pages))) if isinstance(page, tifffile.TiffPage)]


def _stack_indices(chain: list[tifffile.TiffPage]) -> list[int]:
    """Positions in the IFD chain of the pages of a stack (just [0] for a single image)."""
    return [0] + [i for i in range(1, len(chain)) if _is_stack_page(chain[i], chain[0])]


def _pyramid_pages(
    tif: tifffile.TiffFile, chain: list[tifffile.TiffPage] | None = None, start: int = 0, end: int | None = None
) -> list[tifffile.TiffPage]:
    """The levels of the image at chain position ``start``: its SubIFDs, or the reduced pages
    of the chain up to ``end`` (the next stack page)."""
    chain = _chain(tif) if chain is None else chain
    base = chain[start]
    candidates: list[Any]
    if base.subifds and base.pages is not None:
        candidates = list(base.pages)
    else:
        candidates = chain[start + 1 : end]
    levels = [page for page in candidates if isinstance(page, tifffile.TiffPage)]
    pages = [base]
    for page in sorted(levels, key=lambda p: -p.imagewidth * p.imagelength):
        if _is_pyramid_level(page, base, pages[-1]):
            pages.append(page)
    return pages


def _page_name(page: tifffile.TiffPage, index: int) -> str:
    for tag in ("PageName", "DocumentName"):
        value = page.tags.valueof(tag)
        if value:
            name = _text(value)
            if name:
                return name
    return f"page {index}"


@dataclass(frozen=True)
class _Layout:
    """What a page's samples mean: which to keep (colour, then alpha) and how they become 8-bit."""

    bands: tuple[int, ...]
    conversion: pixels.Conversion
    colorspace: str
    channels: int


def _alpha_band(page: tifffile.TiffPage) -> tuple[int, ...]:
    colour = page.samplesperpixel - len(page.extrasamples)
    for i, kind in enumerate(page.extrasamples):
        if int(kind) in EXTRASAMPLE_ALPHA:
            return (colour + i,)
    return ()


def _layout(page: tifffile.TiffPage, name: str) -> _Layout:
    photometric = int(page.photometric)
    spp = page.samplesperpixel
    if photometric == PHOTOMETRIC_PALETTE and page.colormap is not None:
        return _Layout((0,), pixels.for_palette(page.colormap), "srgb", 3)
    if photometric == PHOTOMETRIC_CIELAB and spp >= 3:
        return _Layout((0, 1, 2), pixels.for_cielab(page.bitspersample), "cielab", 3)
    if photometric in (PHOTOMETRIC_MINISBLACK, PHOTOMETRIC_MINISWHITE):
        colour: tuple[int, ...] = (0,)
        colorspace = "grey"
    elif photometric in (PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR) and spp >= 3:
        if photometric == PHOTOMETRIC_YCBCR and int(page.compression) != COMPRESSION_JPEG:
            raise UnsupportedImage("unsupported TIFF colour layout", f"{name}: YCbCr without JPEG")
        colour, colorspace = (0, 1, 2), "srgb"
    else:
        raise UnsupportedImage("unsupported TIFF colour layout", f"{name}: photometric {photometric}, {spp} samples")
    bands = colour + _alpha_band(page)
    dtype = np.dtype(page.dtype)
    minimum = maximum = None
    tags = page.tags
    if tags.get("SMinSampleValue") is not None and tags.get("SMaxSampleValue") is not None:
        low, high = pixels.sample_range(dtype, page.bitspersample)
        lows = _sample_values(tags.valueof("SMinSampleValue"), low, spp)
        highs = _sample_values(tags.valueof("SMaxSampleValue"), high, spp)
        minimum, maximum = tuple(lows[b] for b in bands), tuple(highs[b] for b in bands)
    conversion = pixels.for_samples(
        dtype, len(bands), minimum, maximum, photometric == PHOTOMETRIC_MINISWHITE, page.bitspersample
    )
    return _Layout(bands, conversion, colorspace, len(bands))


class TiffSource(SinglePage):
    format_name = "tiff"

    @staticmethod
    def parse(blob: Blob) -> tifffile.TiffFile:
        """The file's TIFF structure (first page parsed), or UnsupportedImage."""
        try:
            tif = tifffile.TiffFile(blob.stream())
            tif.pages.first  # noqa: B018 - a file without a readable first page fails here
        except Exception as exc:
            raise UnsupportedImage("not a supported image", f"{blob.name}: {type(exc).__name__}: {exc}") from exc
        tif.pages.useframes = False
        return tif

    def __init__(self, blob: Blob, tif: tifffile.TiffFile | None = None) -> None:
        """``tif``: the file already parsed by ``parse`` (the registry looks at it to choose
        the reader), else it is parsed here."""
        if tif is None:
            tif = self.parse(blob)
        try:
            chain = _chain(tif)
            stack = _stack_indices(chain)
            pages = _pyramid_pages(tif, chain, 0, stack[1] if len(stack) > 1 else None)
        except UnsupportedImage:
            raise
        except Exception as exc:
            raise UnsupportedImage("not a supported image", f"{blob.name}: {type(exc).__name__}: {exc}") from exc
        self._bind(blob, blob.identity, tif, chain, stack, pages)

    def _bind(
        self,
        blob: Blob,
        identity: SourceIdentity,
        tif: tifffile.TiffFile,
        chain: list[tifffile.TiffPage],
        stack: list[int],
        pages: list[tifffile.TiffPage],
    ) -> None:
        """Set up an image (or one page of a stack) of a parsed file and describe it."""
        self.identity = identity
        self.name = blob.name
        self._blob = blob
        self._tif = tif
        self._chain = chain
        self._stack = stack
        self._pages = pages
        self._page_sources: dict[int, TiffSource] = {}
        self._strips: LRUCache[np.ndarray] = LRUCache(max_bytes=STRIP_CACHE_BYTES)
        self.info = self._describe()

    def _describe(self) -> ImageInfo:
        first = self._pages[0]
        layout = _layout(first, self.name)
        self._layout = layout
        # Refuse a compression no installed codec decodes when the file is opened, rather
        # than failing every tile later.
        if int(first.compression) not in tifffile.TIFF.DECOMPRESSORS:
            raise UnsupportedImage("unsupported TIFF compression", f"{self.name}: compression {first.compression}")
        width, height = first.imagewidth, first.imagelength
        for page in self._pages:
            self._check_segment_size(page)
        levels = tuple(self._level(p, width, height) for p in self._pages)
        conversion = layout.conversion
        if conversion.kind == pixels.COPY:
            # 8-bit samples are shown as stored; the tags are reported for MINMAX (iipsrv).
            tags = first.tags
            spp = first.samplesperpixel
            lows = _sample_values(tags.valueof("SMinSampleValue"), 0.0, spp)
            highs = _sample_values(tags.valueof("SMaxSampleValue"), 255.0, spp)
            mins, maxs = tuple(lows[b] for b in layout.bands), tuple(highs[b] for b in layout.bands)
        else:
            mins, maxs = conversion.minimum, conversion.maximum
        self._minis_white = int(first.photometric) == PHOTOMETRIC_MINISWHITE
        self._rgb_jpeg = int(first.photometric) == PHOTOMETRIC_RGB
        return ImageInfo(
            width=width,
            height=height,
            levels=levels,
            channels=layout.channels,
            bits_per_sample=int(first.bitspersample),
            colorspace=layout.colorspace,
            min_values=mins,
            max_values=maxs,
            dpi=self._dpi(first),
            metadata=self._metadata(first),
            format="tiff",
            stored_encoding="jpeg" if self._passes_through(first, layout) else "",
            pages=self._page_names(),
        )

    def _check_segment_size(self, page: tifffile.TiffPage) -> None:
        if page.is_tiled:
            w, h = page.tilewidth, page.tilelength
        elif int(page.compression) == COMPRESSION_NONE:
            return  # uncompressed strips are read row by row, never whole
        else:
            w, h = page.imagewidth, min(page.rowsperstrip or page.imagelength, page.imagelength)
        samples = 1 if page.planarconfig == PLANAR_SEPARATE else page.samplesperpixel
        size = w * h * samples * max(1, page.bitspersample // 8)
        if size > MAX_SEGMENT_BYTES:
            raise UnsupportedImage(
                "image segments too large to decode",
                f"{self.name}: a {w}x{h} segment of {size} bytes (limit {MAX_SEGMENT_BYTES})",
            )

    @staticmethod
    def _level(page: tifffile.TiffPage, width: int, height: int) -> Level:
        w, h = page.imagewidth, page.imagelength
        if page.is_tiled:
            tw, th = page.tilewidth, page.tilelength
        else:
            tw = th = STRIP_TILE
        return Level(w, h, tw, th, width / w, height / h)

    @staticmethod
    def _passes_through(page: tifffile.TiffPage, layout: _Layout) -> bool:
        """Stored tiles a browser shows as they are: 8-bit grey or colour JPEG, nothing to
        convert, crop out or invert."""
        return (
            page.is_tiled
            and int(page.compression) == COMPRESSION_JPEG
            and layout.conversion.kind == pixels.COPY
            and not layout.conversion.invert
            and page.planarconfig != PLANAR_SEPARATE
            and page.samplesperpixel == layout.channels
            and layout.channels in (1, 3)
        )

    def _page_names(self) -> tuple[str, ...]:
        if len(self._stack) < 2:
            return ()
        return tuple(_page_name(self._chain[i], n) for n, i in enumerate(self._stack))

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

    def close(self) -> None:
        self._blob.close()

    # -- stack pages ------------------------------------------------------------------------

    def page(self, index: int) -> ImageSource:
        if index == 0:
            return self
        if not 0 < index < len(self._stack):
            raise NotFound("image not found", f"{self.name}: no page {index}")
        source = self._page_sources.get(index)
        if source is None:
            source = self._page_sources[index] = self._open_page(index)
        return source

    def _open_page(self, index: int) -> TiffSource:
        """Stack page ``index`` as a plain TIFF source sharing this file's parsed structure."""
        start = self._stack[index]
        end = self._stack[index + 1] if index + 1 < len(self._stack) else None
        try:
            pages = _pyramid_pages(self._tif, self._chain, start, end)
        except Exception as exc:
            raise ImageDecodeError("damaged image", f"{self.name}: page {index}: {exc}") from exc
        source = TiffSource.__new__(TiffSource)
        source._bind(self._blob, self.identity.part(f"page{index}"), self._tif, self._chain, [start], pages)
        return source

    # -- tiles ------------------------------------------------------------------------------

    def _locate(self, level: int, col: int, row: int) -> tuple[tifffile.TiffPage, int, int, int]:
        page, index = self._tile_index(level, col, row)
        try:
            return page, index, int(page.dataoffsets[index]), int(page.databytecounts[index])
        except IndexError:
            raise ImageDecodeError("damaged image", f"{self.name}: no offset for tile {index}") from None

    def _tile_index(self, level: int, col: int, row: int) -> tuple[tifffile.TiffPage, int]:
        lvl = tile_of(self.info, level, col, row)
        return self._pages[level], row * lvl.tiles_x + col

    def _read(self, offset: int, count: int, what: str) -> bytes:
        data = self._blob.read_at(offset, count)
        if len(data) != count:
            raise ImageDecodeError("damaged image", f"{self.name}: {what} truncated ({len(data)} of {count} bytes)")
        return data

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        page, index = self._tile_index(level, col, row)
        x, y, w, h = self.info.levels[level].tile_rect(col, row)
        if page.is_tiled:
            samples = self._stored_samples(page, index)[:h, :w]
        else:
            samples = self._strip_samples(level, page, x, y, w, h)
        return pixels.to_uint8(samples, self._layout.conversion)

    def raw_tile(self, level: int, col: int, row: int) -> bytes | None:
        if not self.info.stored_encoding:
            return None
        page, index, offset, count = self._locate(level, col, row)
        if count == 0 or int(page.compression) != COMPRESSION_JPEG:
            return None  # a sparse tile, or a level stored otherwise than the first (SVS: JPEG 2000)
        data = self._read(offset, count, f"tile {index}")
        return standalone_jpeg(data, page.jpegtables, self._rgb_jpeg)

    def _planes(self, page: tifffile.TiffPage) -> tuple[int, int]:
        """(segments per plane, planes to decode) of a page: separate planes store each
        sample's segments one plane after another."""
        if page.planarconfig == PLANAR_SEPARATE:
            return len(page.dataoffsets) // page.samplesperpixel, page.samplesperpixel
        return len(page.dataoffsets), 1

    def _stored_samples(self, page: tifffile.TiffPage, index: int) -> np.ndarray:
        """Tile or strip ``index`` of a page, its kept bands decoded (from each plane's own
        segment when the planes are stored separately)."""
        per_plane, planes = self._planes(page)
        if planes == 1:
            return self._keep_bands(self._segment(page, index))
        bands = self._layout.bands
        return np.concatenate([self._segment(page, b * per_plane + index) for b in bands], axis=2)

    def _keep_bands(self, samples: np.ndarray) -> np.ndarray:
        bands = self._layout.bands
        if bands == tuple(range(samples.shape[2])):
            return samples
        return samples[:, :, list(bands)]

    def _segment_shape(self, page: tifffile.TiffPage, index: int) -> tuple[int, int, int]:
        samples = 1 if page.planarconfig == PLANAR_SEPARATE else page.samplesperpixel
        if page.is_tiled:
            return page.tilelength, page.tilewidth, samples
        rows = self._rows_per_strip(page)
        strip = index % self._planes(page)[0]
        return min(rows, page.imagelength - strip * rows), page.imagewidth, samples

    def _segment(self, page: tifffile.TiffPage, index: int) -> np.ndarray:
        """One stored tile or strip decoded to rows x columns x samples (native type)."""
        try:
            offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        except IndexError:
            raise ImageDecodeError("damaged image", f"{self.name}: no offset for segment {index}") from None
        if count == 0:
            # A sparse tile (never written) reads as zeros, as tifffile itself reads it.
            return np.zeros(self._segment_shape(page, index), page.dtype)
        data = self._read(offset, count, f"segment {index}")
        try:
            decoded, _, shape = page.decode(data, index, jpegtables=page.jpegtables)
        except Exception as exc:
            raise ImageDecodeError("damaged image", f"{self.name}: segment {index}: {exc}") from exc
        if decoded is None:
            raise ImageDecodeError("damaged image", f"{self.name}: segment {index} decoded to nothing")
        return decoded.reshape(shape[1], shape[2], shape[3])

    # -- stripped images ----------------------------------------------------------------------

    @staticmethod
    def _rows_per_strip(page: tifffile.TiffPage) -> int:
        rows = int(page.rowsperstrip or 0)
        return min(rows, page.imagelength) if rows > 0 else page.imagelength

    def _strip_samples(self, level: int, page: tifffile.TiffPage, x: int, y: int, w: int, h: int) -> np.ndarray:
        """The native samples of a virtual tile of a stripped page."""
        if self._rows_readable(page):
            return self._raw_rows(page, x, y, w, h)
        rows = self._rows_per_strip(page)
        parts = []
        for strip in range(y // rows, (y + h - 1) // rows + 1):
            top = strip * rows
            band = self._strip(level, page, strip)
            parts.append(band[max(y, top) - top : min(y + h, top + rows) - top, x : x + w])
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    def _strip(self, level: int, page: tifffile.TiffPage, strip: int) -> np.ndarray:
        """One strip of a page, its kept bands decoded (and cached: a strip serves a whole row
        of tiles)."""
        key = (level, strip)
        cached = self._strips.get(key)
        if cached is not None:
            return cached
        band = self._stored_samples(page, strip)
        self._strips.put(key, band, band.nbytes)
        return band

    @staticmethod
    def _rows_readable(page: tifffile.TiffPage) -> bool:
        """Uncompressed whole-byte samples: a tile's rows can be read straight from the file,
        however tall the strips (many files are one uncompressed strip)."""
        return (
            int(page.compression) == COMPRESSION_NONE
            and page.bitspersample % 8 == 0
            and int(page.fillorder) == 1
            and np.dtype(page.dtype) != np.bool_
        )

    def _raw_rows(self, page: tifffile.TiffPage, x: int, y: int, w: int, h: int) -> np.ndarray:
        per_plane, planes = self._planes(page)
        dtype = np.dtype(page.dtype).newbyteorder(self._tif.byteorder)
        per_pixel = page.samplesperpixel // planes
        if planes == 1:
            samples = self._plane_rows(page, 0, dtype, per_pixel, x, y, w, h)
            samples = self._keep_bands(samples)
        else:
            samples = np.concatenate(
                [self._plane_rows(page, b * per_plane, dtype, per_pixel, x, y, w, h) for b in self._layout.bands],
                axis=2,
            )
        return samples.astype(dtype.newbyteorder("="), copy=False)

    def _plane_rows(
        self, page: tifffile.TiffPage, first: int, dtype: np.dtype, per_pixel: int, x: int, y: int, w: int, h: int
    ) -> np.ndarray:
        """Rows ``y .. y+h`` and columns ``x .. x+w`` of one plane of uncompressed strips
        (``first``: index of the plane's first strip)."""
        rows = self._rows_per_strip(page)
        pixel_bytes = per_pixel * dtype.itemsize
        row_bytes = page.imagewidth * pixel_bytes
        out = np.empty((h, w, per_pixel), dtype)
        r = y
        while r < y + h:
            strip, within = divmod(r, rows)
            count = min(y + h, (strip + 1) * rows) - r
            index = first + strip
            if index >= len(page.dataoffsets):
                raise ImageDecodeError("damaged image", f"{self.name}: no offset for strip {index}")
            if int(page.databytecounts[index]) == 0:
                out[r - y : r - y + count] = 0  # a sparse strip, as tifffile reads it
                r += count
                continue
            base = int(page.dataoffsets[index]) + within * row_bytes + x * pixel_bytes
            span = (count - 1) * row_bytes + w * pixel_bytes
            if span <= max(ROW_SPAN_BYTES, count * w * pixel_bytes):
                block = np.frombuffer(
                    self._read(base, span, f"strip {index}") + bytes(row_bytes - w * pixel_bytes), dtype
                )
                block = block.reshape(count, page.imagewidth, per_pixel)[:, :w]
                out[r - y : r - y + count] = block
            else:
                for i in range(count):
                    data = self._read(base + i * row_bytes, w * pixel_bytes, f"strip {index}")
                    out[r - y + i] = np.frombuffer(data, dtype).reshape(w, per_pixel)
            r += count
        return out
