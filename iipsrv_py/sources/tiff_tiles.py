"""Decoding the tiles and strips of a TIFF image's levels, given what ``describe`` decided.

A level's IFD is parsed in full by tifffile (its offset arrays, JPEG tables and decoder) when a
tile of that level is first needed, and kept: opening the image read only its summary.  Stored
segments are read with positional reads of the blob and decoded by tifffile's page decoder
(imagecodecs underneath).

Stripped images are served as virtual 256 x 256 tiles, decoding only the strips a tile covers
(uncompressed strips: only its rows), with a small byte-bounded cache of decoded strips so that
the tiles of a strip row share them.
"""

from __future__ import annotations

import numpy as np
import tifffile

from ..errors import ImageDecodeError, ServerError
from ..model import Level
from . import pixels
from .base import MAX_DECODE_UNIT_BYTES
from .jpegstream import standalone_jpeg
from .stream_headers import check_stream
from .tiff_describe import COMPRESSION_JPEG, COMPRESSION_NONE, PLANAR_SEPARATE, Decoding
from .tiff_structure import TiffStructure

# An uncompressed tile's rows are read in one request when the span between them (the rest of
# each row) is at most this large; otherwise row by row.
ROW_SPAN_BYTES = 4 * 1024 * 1024


class TileReader:
    """The tiles of one image's levels (``decoding.levels``), as 8-bit pixels or as stored."""

    def __init__(self, structure: TiffStructure, decoding: Decoding, base: tifffile.TiffPage, token: str) -> None:
        """``base``: the full-size level's page, already parsed (it described the image);
        ``token``: the image's identity token, which keys its decoded strips in the worker cache."""
        self._structure = structure
        self._blob = structure.blob
        self._name = structure.name
        self._decoding = decoding
        self._pages: dict[int, tifffile.TiffPage] = {0: base}
        self._token = token

    def read_tile(self, level: int, lvl: Level, col: int, row: int, native: bool = False) -> np.ndarray:
        """The 8-bit pixels of tile (col, row) of ``level`` (``lvl`` its geometry), cropped at
        the image edge; with ``native``, the kept samples as stored when they are scaled to 8
        bits (``ImageSource.read_samples``)."""
        page = self.page(level)
        x, y, w, h = lvl.tile_rect(col, row)
        if page.is_tiled:
            samples = self._stored_samples(page, row * lvl.tiles_x + col)[:h, :w]
        else:
            samples = self._strip_samples(level, page, x, y, w, h)
        native_form = pixels.native(samples, self._decoding.conversion) if native else None
        if native_form is not None:
            return native_form
        out = pixels.to_uint8(samples, self._decoding.conversion)
        finish = self._decoding.finish_of(level)
        return out if finish is None else finish(out)

    def raw_jpeg(self, level: int, index: int) -> bytes | None:
        """Stored tile ``index`` of ``level`` as a standalone JPEG stream, or None when it is
        sparse or the level is not stored as JPEG (an SVS level may be JPEG 2000)."""
        page = self.page(level)
        if int(page.compression) != COMPRESSION_JPEG:
            return None
        offset, count = self._location(page, index)
        if count == 0:
            return None
        data = self._read(offset, count, f"tile {index}")
        # Sent as stored, never decoded here: its header is checked all the same, so that a
        # damaged or oversized frame does not reach a browser either.
        check_segment_stream(self._name, f"tile {index}", data, page)
        return standalone_jpeg(data, page.jpegtables, self._decoding.rgb_jpeg)

    @property
    def base(self) -> tifffile.TiffPage:
        return self._pages[0]

    def page(self, level: int) -> tifffile.TiffPage:
        """The parsed page of a level: parsed on first use and kept."""
        page = self._pages.get(level)
        if page is None:
            ifd = self._decoding.levels[level]
            try:
                page = self._structure.full_page(ifd)
            except ServerError:  # storage errors (502/504 from an object store) stay what they are
                raise
            except Exception as exc:
                raise ImageDecodeError("damaged image", f"{self._name}: level {level} IFD: {exc}") from exc
            self._pages[level] = page
        return page

    # -- stored segments ----------------------------------------------------------------------

    def _location(self, page: tifffile.TiffPage, index: int) -> tuple[int, int]:
        try:
            return int(page.dataoffsets[index]), int(page.databytecounts[index])
        except IndexError:
            raise ImageDecodeError("damaged image", f"{self._name}: no offset for segment {index}") from None

    def _read(self, offset: int, count: int, what: str) -> bytes:
        # Offsets and byte counts are whatever the file says: a segment past the end of the
        # file is refused before a buffer of its count is allocated for the read.
        size = self._structure.identity.size
        if offset < 0 or count < 0 or offset + count > size:
            raise ImageDecodeError("damaged image", f"{self._name}: {what} at {offset}+{count} outside the file")
        data = self._blob.read_at(offset, count)
        if len(data) != count:
            raise ImageDecodeError("damaged image", f"{self._name}: {what} truncated ({len(data)} of {count} bytes)")
        return data

    @staticmethod
    def _planes(page: tifffile.TiffPage) -> tuple[int, int]:
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
        bands = self._decoding.bands
        return np.concatenate([self._segment(page, b * per_plane + index) for b in bands], axis=2)

    def _keep_bands(self, samples: np.ndarray) -> np.ndarray:
        bands = self._decoding.bands
        if bands == tuple(range(samples.shape[2])):
            return samples
        return samples[:, :, list(bands)]

    def _segment_shape(self, page: tifffile.TiffPage, index: int) -> tuple[int, int, int]:
        samples = 1 if page.planarconfig == PLANAR_SEPARATE else page.samplesperpixel
        if page.is_tiled:
            return page.tilelength, page.tilewidth, samples
        rows = _rows_per_strip(page)
        strip = index % self._planes(page)[0]
        return min(rows, page.imagelength - strip * rows), page.imagewidth, samples

    def _segment(self, page: tifffile.TiffPage, index: int) -> np.ndarray:
        """One stored tile or strip decoded to rows x columns x samples (native type)."""
        offset, count = self._location(page, index)
        if count == 0:
            # A sparse tile (never written) reads as zeros, as tifffile itself reads it.
            return np.zeros(self._segment_shape(page, index), page.dtype)
        if count > 2 * MAX_DECODE_UNIT_BYTES:
            # More bytes than any segment a worker decodes could take, compressed or not.
            raise ImageDecodeError("damaged image", f"{self._name}: segment {index} of {count} bytes")
        data = self._read(offset, count, f"segment {index}")
        check_segment_stream(self._name, f"segment {index}", data, page)
        try:
            decoded, _, shape = page.decode(data, index, jpegtables=page.jpegtables)
        except ServerError:  # tifffile may read lazily loaded tag values (JPEGTables) here
            raise
        except Exception as exc:
            raise ImageDecodeError("damaged image", f"{self._name}: segment {index}: {exc}") from exc
        if decoded is None:
            raise ImageDecodeError("damaged image", f"{self._name}: segment {index} decoded to nothing")
        return decoded.reshape(shape[1], shape[2], shape[3])

    # -- stripped images ----------------------------------------------------------------------

    def _strip_samples(self, level: int, page: tifffile.TiffPage, x: int, y: int, w: int, h: int) -> np.ndarray:
        """The native samples of a virtual tile of a stripped page."""
        if _rows_readable(page):
            return self._raw_rows(page, x, y, w, h)
        rows = _rows_per_strip(page)
        parts = []
        for strip in range(y // rows, (y + h - 1) // rows + 1):
            top = strip * rows
            band = self._strip(level, page, strip)
            parts.append(band[max(y, top) - top : min(y + h, top + rows) - top, x : x + w])
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    def _strip(self, level: int, page: tifffile.TiffPage, strip: int) -> np.ndarray:
        """One strip of a page, its kept bands decoded.  Kept in the worker cache, within its
        budget: a strip serves a whole row of tiles."""
        key = ("strip", self._token, level, strip)
        cached = self._structure.cache.get(key)
        if isinstance(cached, np.ndarray):
            return cached
        band = self._stored_samples(page, strip)
        self._structure.cache.put(key, band, band.nbytes)
        return band

    def _raw_rows(self, page: tifffile.TiffPage, x: int, y: int, w: int, h: int) -> np.ndarray:
        per_plane, planes = self._planes(page)
        dtype = np.dtype(page.dtype).newbyteorder(self._structure.tif.byteorder)
        per_pixel = page.samplesperpixel // planes
        if planes == 1:
            samples = self._plane_rows(page, 0, dtype, per_pixel, x, y, w, h)
            samples = self._keep_bands(samples)
        else:
            samples = np.concatenate(
                [self._plane_rows(page, b * per_plane, dtype, per_pixel, x, y, w, h) for b in self._decoding.bands],
                axis=2,
            )
        return samples.astype(dtype.newbyteorder("="), copy=False)

    def _plane_rows(
        self, page: tifffile.TiffPage, first: int, dtype: np.dtype, per_pixel: int, x: int, y: int, w: int, h: int
    ) -> np.ndarray:
        """Rows ``y .. y+h`` and columns ``x .. x+w`` of one plane of uncompressed strips
        (``first``: index of the plane's first strip)."""
        rows = _rows_per_strip(page)
        pixel_bytes = per_pixel * dtype.itemsize
        row_bytes = page.imagewidth * pixel_bytes
        out = np.empty((h, w, per_pixel), dtype)
        r = y
        while r < y + h:
            strip, within = divmod(r, rows)
            count = min(y + h, (strip + 1) * rows) - r
            index = first + strip
            if index >= len(page.dataoffsets):
                raise ImageDecodeError("damaged image", f"{self._name}: no offset for strip {index}")
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


def check_segment_stream(name: str, what: str, data: bytes, page: tifffile.TiffPage) -> None:
    """``stream_headers.check_stream`` for a stored segment of ``page``: the size its own
    compressed header declares against the page's tile or strip size."""
    check_stream(name, what, data, _nominal_size(page), _bytes_per_pixel(page))


def _nominal_size(page: tifffile.TiffPage) -> tuple[int, int]:
    """(width, height) of a page's tiles, or of its strips before the last one is cut short."""
    if page.is_tiled:
        return int(page.tilewidth), int(page.tilelength)
    return int(page.imagewidth), _rows_per_strip(page)


def _bytes_per_pixel(page: tifffile.TiffPage) -> int:
    samples = 1 if page.planarconfig == PLANAR_SEPARATE else int(page.samplesperpixel)
    return samples * max(1, np.dtype(page.dtype).itemsize)


def _rows_per_strip(page: tifffile.TiffPage) -> int:
    rows = int(page.rowsperstrip or 0)
    return min(rows, page.imagelength) if rows > 0 else page.imagelength


def _rows_readable(page: tifffile.TiffPage) -> bool:
    """Uncompressed whole-byte samples: a tile's rows can be read straight from the file,
    however tall the strips (many files are one uncompressed strip)."""
    return (
        int(page.compression) == COMPRESSION_NONE
        and page.bitspersample % 8 == 0
        and int(page.fillorder) == 1
        and np.dtype(page.dtype) != np.bool_
    )
