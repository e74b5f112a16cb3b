"""Expected values computed independently of the server: tifffile reads the fixtures, Pillow
decodes responses and makes reference downscales, and the IIP error format is checked from
SPEC section 3.  Nothing here imports iipsrv_py."""

from __future__ import annotations

import functools
import io
import re
from dataclasses import dataclass

import numpy as np
import tifffile
from PIL import Image

from tests import helpers

# Fixture names used across the functional tests.
JPEG_TABLES = "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif"
JPEG_SUBIFD = "tif-rgb-3000x2000-5lvl-256tile-jpeg-subifd.tif"
DEFLATE = "tif-rgb-3000x2000-5lvl-256tile-deflate.tif"
NON_SQUARE = "tif-rgb-1500x1000-3lvl-512x256tile-jpeg.tif"
ODD_LEVELS = "tif-rgb-3000x2000-4lvl-div3-256tile-lzw.tif"
GREY = "tif-grey-2000x1500-4lvl-256tile-none.tif"
BIGTIFF = "tif-rgb-1200x800-3lvl-128tile-jpeg-bigtiff.tif"
SAMPLE_RANGE = "tif-rgb-600x400-2lvl-256tile-none-sminmax-10x5dpcm.tif"
RGB_JPEG = "tif-rgb-1024x768-2lvl-256tile-jpeg-rgb-no-app14.tif"
BROKEN_TRUNCATED = "broken-truncated.tif"
BROKEN_HEADER = "broken-header.tif"
BROKEN_TILE = "broken-tile-1024x1024-256tile-jpeg.tif"
NOT_AN_IMAGE = "not-an-image.tif"

JPEG_PYRAMIDS = (JPEG_TABLES, JPEG_SUBIFD, NON_SQUARE, BIGTIFF, RGB_JPEG)
LOSSLESS_PYRAMIDS = (DEFLATE, ODD_LEVELS, GREY, SAMPLE_RANGE)


@dataclass(frozen=True)
class StoredLevel:
    width: int
    height: int
    tile_width: int
    tile_height: int

    @property
    def tiles_x(self) -> int:
        return -(-self.width // self.tile_width)

    @property
    def tiles_y(self) -> int:
        return -(-self.height // self.tile_height)

    def tile_box(self, index: int) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of tile ``index`` (row-major), cropped at the image edge."""
        col, row = index % self.tiles_x, index // self.tiles_x
        x, y = col * self.tile_width, row * self.tile_height
        return x, y, min(self.tile_width, self.width - x), min(self.tile_height, self.height - y)


def _pages(tif: tifffile.TiffFile) -> list[tifffile.TiffPage]:
    """The pyramid as the file stores it: SubIFDs of page 0, or the IFD chain."""
    first = tif.pages[0]
    pages = [first, *first.pages] if first.subifds else list(tif.pages)
    return sorted(pages, key=lambda p: -p.imagewidth)


@functools.cache
def levels(name: str) -> tuple[StoredLevel, ...]:
    """Levels full size first, as tifffile reads them."""
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        return tuple(StoredLevel(p.imagewidth, p.imagelength, p.tilewidth, p.tilelength) for p in _pages(tif))


@functools.lru_cache(maxsize=16)
def pixels(name: str, level: int = 0) -> np.ndarray:
    """Decoded pixels of a level (0 = full size) as H x W x C, read by tifffile."""
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        array = _pages(tif)[level].asarray()
    array.setflags(write=False)
    return array if array.ndim == 3 else array[:, :, None]


def stored_tile(name: str, level: int, index: int) -> bytes:
    """The bytes of one tile exactly as stored in the file."""
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        page = _pages(tif)[level]
        tif.filehandle.seek(page.dataoffsets[index])
        return tif.filehandle.read(page.databytecounts[index])


def decode_stored_tile(name: str, index: int) -> np.ndarray:
    """One tile of the first page decoded by tifffile alone (for files too broken for asarray),
    cropped at the image edge."""
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        page = tif.pages[0]
        tif.filehandle.seek(page.dataoffsets[index])
        data = tif.filehandle.read(page.databytecounts[index])
        decoded, _, shape = page.decode(data, index, jpegtables=page.jpegtables)
        across = -(-page.imagewidth // page.tilewidth)
        x, y = (index % across) * page.tilewidth, (index // across) * page.tilelength
        return decoded.reshape(shape[1:])[: page.imagelength - y, : page.imagewidth - x]


def photometric(name: str) -> int:
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        return int(tif.pages[0].photometric)


def jpeg_tables(name: str, level: int) -> bytes:
    """The JPEGTables tag of a level (b"" when the tiles are complete JPEG streams)."""
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        return bytes(_pages(tif)[level].jpegtables or b"")


def tile_pixels(name: str, level: int, col: int, row: int) -> np.ndarray:
    """The pixels a tile covers, cut out of the whole decoded level (cropped at the edge)."""
    lvl = levels(name)[level]
    x, y = col * lvl.tile_width, row * lvl.tile_height
    return pixels(name, level)[y : y + lvl.tile_height, x : x + lvl.tile_width]


def decode(body: bytes) -> np.ndarray:
    """A response image decoded by Pillow, as H x W x C uint8."""
    with Image.open(io.BytesIO(body)) as image:
        array = np.asarray(image)
    return array if array.ndim == 3 else array[:, :, None]


def image_format(body: bytes) -> str:
    with Image.open(io.BytesIO(body)) as image:
        return str(image.format)


def downscale(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """Reference reduction: Pillow's Lanczos filter on the full-resolution pixels."""
    mode = "L" if array.shape[2] == 1 else "RGB"
    image = Image.fromarray(array[:, :, 0] if mode == "L" else array, mode)
    out = np.asarray(image.resize((width, height), Image.Resampling.LANCZOS))
    return out if out.ndim == 3 else out[:, :, None]


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


IIP_ERROR = re.compile(rb"\AError/(\d+):(.*)\r\n\Z", re.DOTALL)


def iip_error(result: helpers.Result) -> str:
    """The ``<code> <arg>`` of an IIP error response, after checking its whole form (SPEC 3)."""
    assert result.status == 400, (result.status, result.body[:200])
    assert result.header("Content-Type") == "application/vnd.netfpx"
    assert result.header("Cache-Control") == "no-cache"
    match = IIP_ERROR.match(result.body)
    assert match, result.body
    payload = match.group(2)
    assert int(match.group(1)) == len(payload), "Error/<len> must be the byte length of '<code> <arg>'"
    return payload.decode("utf-8")


def lines(result: helpers.Result) -> list[str]:
    """Body lines of an OBJ response; each must end in CRLF."""
    text = result.body.decode("utf-8")
    assert text.endswith("\r\n") or text == "", repr(text)
    return text.split("\r\n")[:-1]
