"""Expected values computed independently of the server: tifffile reads the fixture files,
Pillow decodes what the server sent."""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import tifffile
from PIL import Image

from tests import helpers


@dataclass(frozen=True)
class Level:
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


def _level_pages(tif: tifffile.TiffFile) -> list[Any]:
    """Resolution levels, largest first: SubIFDs of the first page, else every page."""
    first = tif.pages.first
    pages: list[Any] = [first, *(first.pages or [])] if first.subifds else list(tif.pages)
    return sorted(pages, key=lambda page: -page.imagewidth * page.imagelength)


def levels(name: str) -> list[Level]:
    """The pyramid, in IIP order: resolution 0 is the smallest level."""
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        found = [Level(p.imagewidth, p.imagelength, p.tilewidth, p.tilelength) for p in _level_pages(tif)]
    return found[::-1]


def samples_per_pixel(name: str) -> int:
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        return int(tif.pages.first.samplesperpixel)


@functools.lru_cache(maxsize=8)
def level_pixels(name: str, resolution: int) -> np.ndarray:
    """Every pixel of IIP resolution ``resolution``, H x W x C (read-only, cached)."""
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        pages = _level_pages(tif)
        pixels = pages[len(pages) - 1 - resolution].asarray()
    pixels = pixels if pixels.ndim == 3 else pixels[..., np.newaxis]
    pixels.flags.writeable = False
    return pixels


def tile_pixels(name: str, resolution: int, index: int) -> np.ndarray:
    x, y, w, h = levels(name)[resolution].tile_box(index)
    return level_pixels(name, resolution)[y : y + h, x : x + w]


def decode(data: bytes, expected_format: str) -> np.ndarray:
    """An image body decoded with Pillow, H x W x C."""
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == expected_format, f"expected {expected_format}, got {image.format}"
        pixels = np.asarray(image)
    return pixels if pixels.ndim == 3 else pixels[..., np.newaxis]


def lanczos(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    image = Image.fromarray(pixels if pixels.shape[2] > 1 else pixels[..., 0])
    out = np.asarray(image.resize((width, height), Image.Resampling.LANCZOS))
    return out if out.ndim == 3 else out[..., np.newaxis]


def jpeg_error(pixels: np.ndarray, quality: int) -> float:
    """How far a plain JPEG encoding of ``pixels`` at ``quality`` (Pillow) decodes from them:
    the tolerance any JPEG of this content needs."""
    image = Image.fromarray(np.ascontiguousarray(pixels if pixels.shape[2] > 1 else pixels[..., 0]))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return mean_abs_diff(decode(out.getvalue(), "JPEG"), pixels)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, f"shapes differ: {a.shape} != {b.shape}"
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))
