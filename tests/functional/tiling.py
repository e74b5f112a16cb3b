"""DeepZoom, Zoomify and OpenSeadragon-IIIF tile geometry, computed from the protocols' own
definitions (SPEC sections 8-10, the Deep Zoom file format, Zoomify's converter and
OpenSeadragon's tile sources), never from iipsrv_py.  Also the pixel statistics the protocol
tests share."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests import helpers
from tests.functional import reference as ref

# A slide-like pyramid: levels step by 4, odd sizes rounded down (built by make_test_images.py).
STEP4 = "tif-rgb-4099x3071-4lvl-step4-256tile-jpeg.tif"
# The fixtures every protocol test covers: shared JPEG tables, levels divided by 3, tiles that
# are not square, and steps of 4.
PROTOCOL_FIXTURES = (ref.JPEG_TABLES, ref.ODD_LEVELS, ref.NON_SQUARE, STEP4)

DZI_NAMESPACE = "http://schemas.microsoft.com/deepzoom/2008"
URI_MAP = "deepzoom=>DeepZoom zoomify=>Zoomify iiif=>IIIF"


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# -- DeepZoom -------------------------------------------------------------------------------


def dz_max_level(width: int, height: int) -> int:
    """The full-size DeepZoom level: ceil(log2(max(W, H)))."""
    return math.ceil(math.log2(max(width, height)))


def dz_level_size(width: int, height: int, level: int) -> tuple[int, int]:
    """DeepZoom level ``level``: ceil(W / 2^k) x ceil(H / 2^k), k levels below the top."""
    k = dz_max_level(width, height) - level
    return ceil_div(width, 2**k), ceil_div(height, 2**k)


@dataclass(frozen=True)
class DzTile:
    """Tile (x, y) of a DeepZoom level: its box in the level's pixels, overlap included."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def dz_grid(level_w: int, level_h: int, tile: int) -> tuple[int, int]:
    return ceil_div(level_w, tile), ceil_div(level_h, tile)


def dz_tile(level_w: int, level_h: int, tile: int, overlap: int, x: int, y: int) -> DzTile:
    """Deep Zoom format: tile x spans [xT, (x+1)T) plus ``overlap`` pixels on every side that
    has a neighbour, clipped at the level's edge."""
    return DzTile(
        max(0, x * tile - overlap),
        max(0, y * tile - overlap),
        min(level_w, (x + 1) * tile + overlap),
        min(level_h, (y + 1) * tile + overlap),
    )


# -- Zoomify --------------------------------------------------------------------------------


def zoomify_level_sizes(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    """Zoomify levels, level 0 (fits in one tile) first: halve rounding down from the full
    size while either side is larger than a tile (Zoomify's converter, OpenSeadragon)."""
    sizes = [(width, height)]
    while sizes[-1][0] > tile or sizes[-1][1] > tile:
        w, h = sizes[-1]
        sizes.append((w // 2, h // 2))
    return sizes[::-1]


def zoomify_numtiles(width: int, height: int, tile: int) -> int:
    return sum(ceil_div(w, tile) * ceil_div(h, tile) for w, h in zoomify_level_sizes(width, height, tile))


# -- pixels ---------------------------------------------------------------------------------


def abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def diff_stats(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean, 99th percentile) of the absolute difference per sample."""
    diff = abs_diff(a, b)
    return float(diff.mean()), float(np.percentile(diff, 99))


def expected_splice(name: str, level: int, index: int) -> bytes:
    """A stored JPEG tile as passthrough must send it: shared tables spliced in (SPEC 7)."""
    stored = ref.stored_tile(name, level, index)
    tables = ref.jpeg_tables(name, level)
    return tables[:-2] + stored[2:] if tables else stored


def is_jpeg_fixture(name: str) -> bool:
    return name.endswith(("-jpeg.tif", "-jpeg-tables.tif"))


def get_image(app: object, path: str) -> np.ndarray:
    result = helpers.call(app, path=path)
    assert result.status == 200, (path, result.status, result.body[:200])
    return ref.decode(result.body)


# -- virtual levels -------------------------------------------------------------------------

# A server reduction may be this much further (mean absolute difference per sample, 0-255)
# from Pillow's Lanczos reduction of the full-size pixels than the worst of the reductions a
# correct server could make: Pillow's Lanczos reduction of any stored level it may be made
# from, or a box filter (SPEC section 6 accepts either).  The slack covers libvips against
# Pillow (different Lanczos implementations; a tile is resampled from its own window).
VIRTUAL_LEVEL_SLACK = 1.5
# Levels under TINY pixels a side average a large share of the image in each pixel, where the
# filters' weighting dominates: libvips' reduction of a whole level to 1x1 lands a few grey
# levels off its mean (observed up to 2.7 beyond the box and Lanczos references).
TINY = 8
TINY_SLACK = 3.0


def source_levels(name: str, width: int, height: int) -> list[int]:
    """Stored levels (0 = full size) a level of ``width`` x ``height`` may be made from: any
    with at least that many pixels, counting one pixel of rounding (stored levels are W / f
    rounded down, DeepZoom and IIIF sizes rounded up)."""
    return [i for i, lvl in enumerate(ref.levels(name)) if lvl.width >= width - 1 and lvl.height >= height - 1]


def box_reduction(array: np.ndarray, width: int, height: int) -> np.ndarray:
    mode = "L" if array.shape[2] == 1 else "RGB"
    image = Image.fromarray(array[:, :, 0] if mode == "L" else array, mode)
    out = np.asarray(image.resize((width, height), Image.Resampling.BOX))
    return out if out.ndim == 3 else out[:, :, None]


def virtual_level_budget(name: str, width: int, height: int, reference: np.ndarray) -> float:
    """The largest mean difference to ``reference`` (Pillow's Lanczos reduction of the full-size
    pixels to ``width`` x ``height``) a server reduction may show; see VIRTUAL_LEVEL_SLACK."""
    errors = [
        diff_stats(ref.downscale(ref.pixels(name, i), width, height), reference)[0]
        for i in source_levels(name, width, height)
    ]
    errors.append(diff_stats(box_reduction(ref.pixels(name, 0), width, height), reference)[0])
    return max(errors) + (TINY_SLACK if min(width, height) < TINY else VIRTUAL_LEVEL_SLACK)
