"""DeepZoom through the WSGI app (SPEC section 9): the .dzi descriptor, the level pyramid down
to 1x1 with ceil-rounded level sizes, bounds, formats, overlap, and the pixels of stored and
virtual levels.

Expected values come from the Deep Zoom format's own definitions (tests/functional/tiling.py),
tifffile's decoding of the fixtures and Pillow's Lanczos reduction of the full-size pixels.
"""

from __future__ import annotations

import io
import random
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from tests import helpers
from tests.functional import reference as ref
from tests.functional import tiling
from tests.functional.tiling import PROTOCOL_FIXTURES, dz_grid, dz_level_size, dz_max_level, dz_tile

NS = "{" + tiling.DZI_NAMESPACE + "}"
# Virtual levels are assembled whole and compared with a reference reduction up to this width
# (larger ones take seconds each and add nothing the smaller ones do not show).
ASSEMBLE_MAX_WIDTH = 1100


@pytest.fixture(scope="module")
def app():
    return helpers.make_app(URI_MAP=tiling.URI_MAP)


@pytest.fixture(scope="module")
def app_overlap():
    return helpers.make_app(URI_MAP=tiling.URI_MAP, DEEPZOOM_OVERLAP="1")


def tile_path(name: str, level: int, x: int, y: int, ext: str = "jpg") -> str:
    return f"/deepzoom/{name}_files/{level}/{x}_{y}.{ext}"


def geometry(name: str) -> tuple[int, int, int]:
    """(W, H, T): full size, and the DeepZoom tile size = the level-0 tile width (SPEC 9)."""
    full = ref.levels(name)[0]
    return full.width, full.height, full.tile_width


def tile_size(app, path: str) -> tuple[int, int]:
    result = helpers.call(app, path=path)
    assert result.status == 200, (path, result.status, result.body[:200])
    with Image.open(io.BytesIO(result.body)) as image:
        return image.size


def parse_dzi(body: bytes) -> tuple[dict[str, str], dict[str, str]]:
    root = ET.fromstring(body)
    assert root.tag == NS + "Image"
    children = list(root)
    assert len(children) == 1 and children[0].tag == NS + "Size"
    return dict(root.attrib), dict(children[0].attrib)


# -- descriptor -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROTOCOL_FIXTURES)
def test_dzi_descriptor(app, name):
    width, height, tile = geometry(name)
    result = helpers.call(app, path=f"/deepzoom/{name}.dzi")
    assert result.status == 200
    assert "xml" in (result.header("Content-Type") or "")
    image, size = parse_dzi(result.body)
    assert image == {"TileSize": str(tile), "Overlap": "0", "Format": "jpg"}
    assert size == {"Width": str(width), "Height": str(height)}
    # The query form answers the same.
    assert helpers.call(app, f"DeepZoom={name}.dzi").body == result.body


def test_dzi_follows_overlap_and_format_settings():
    app = helpers.make_app(URI_MAP=tiling.URI_MAP, DEEPZOOM_OVERLAP="2", DEEPZOOM_FORMAT="png")
    image, _ = parse_dzi(helpers.call(app, path=f"/deepzoom/{ref.JPEG_TABLES}.dzi").body)
    assert image["Overlap"] == "2" and image["Format"] == "png"


# -- levels ---------------------------------------------------------------------------------


def test_level_formulas_on_known_sizes():
    # The reference helpers themselves, against values worked out by hand.
    assert dz_max_level(3000, 2000) == 12  # 2^11 = 2048 < 3000 <= 4096
    assert dz_max_level(4099, 3071) == 13  # 4099 > 4096
    assert dz_level_size(4099, 3071, 11) == (1025, 768)
    assert dz_level_size(3000, 2000, 8) == (188, 125)
    assert dz_level_size(3000, 2000, 0) == (1, 1)


@pytest.mark.parametrize("overlap", [0, 1])
@pytest.mark.parametrize("name", PROTOCOL_FIXTURES)
def test_every_level_has_ceil_sizes_down_to_1x1(app, app_overlap, name, overlap):
    server = app_overlap if overlap else app
    width, height, tile = geometry(name)
    top = dz_max_level(width, height)
    assert dz_level_size(width, height, top) == (width, height)
    assert dz_level_size(width, height, 0) == (1, 1)
    for level in range(top + 1):
        lw, lh = dz_level_size(width, height, level)
        cols, rows = dz_grid(lw, lh, tile)
        # Across the first row and down the first column, each tile has the size the format
        # defines, and the tiles cover the level once, plus the overlaps they share.
        widths = [tile_size(server, tile_path(name, level, x, 0))[0] for x in range(cols)]
        heights = [tile_size(server, tile_path(name, level, 0, y))[1] for y in range(rows)]
        assert widths == [dz_tile(lw, lh, tile, overlap, x, 0).width for x in range(cols)], level
        assert heights == [dz_tile(lw, lh, tile, overlap, 0, y).height for y in range(rows)], level
        assert sum(widths) - 2 * overlap * (cols - 1) == lw, level
        assert sum(heights) - 2 * overlap * (rows - 1) == lh, level
        # The last tile of the level ends exactly at the level's edge.
        last = dz_tile(lw, lh, tile, overlap, cols - 1, rows - 1)
        assert last.x1 == lw and last.y1 == lh
        assert tile_size(server, tile_path(name, level, cols - 1, rows - 1)) == (last.width, last.height)


@pytest.mark.parametrize("name", PROTOCOL_FIXTURES)
def test_tiles_outside_the_pyramid_are_404(app, name):
    width, height, tile = geometry(name)
    top = dz_max_level(width, height)
    for level in (0, top // 2, top):
        cols, rows = dz_grid(*dz_level_size(width, height, level), tile)
        assert helpers.call(app, path=tile_path(name, level, cols, 0)).status == 404
        assert helpers.call(app, path=tile_path(name, level, 0, rows)).status == 404
        assert helpers.call(app, path=tile_path(name, level, cols + 1000, rows + 1000)).status == 404
    assert helpers.call(app, path=tile_path(name, top + 1, 0, 0)).status == 404
    assert helpers.call(app, path=tile_path(name, 999, 0, 0)).status == 404


def test_smallest_level_through_the_query_form(app):
    result = helpers.call(app, f"DeepZoom={ref.ODD_LEVELS}_files/0/0_0.png")
    assert result.status == 200 and ref.decode(result.body).shape == (1, 1, 3)


@pytest.mark.parametrize(
    "ext, pillow_format, mime",
    [
        ("jpg", "JPEG", "image/jpeg"),
        ("jpeg", "JPEG", "image/jpeg"),
        ("png", "PNG", "image/png"),
        ("webp", "WEBP", "image/webp"),
    ],
)
def test_extension_selects_the_format(app, ext, pillow_format, mime):
    result = helpers.call(app, path=tile_path(ref.JPEG_TABLES, 10, 1, 1, ext))
    assert result.status == 200
    assert result.header("Content-Type") == mime
    assert ref.image_format(result.body) == pillow_format
    assert ref.decode(result.body).shape == (244, 256, 3)  # level 10 is 750x500: 500 - 256 = 244


@pytest.mark.parametrize("ext", ["gif", "tif", "tiff", "bmp", "avif", "jp2", "txt"])
def test_other_extensions_are_400(app, ext):
    assert helpers.call(app, path=tile_path(ref.JPEG_TABLES, 10, 0, 0, ext)).status == 400


# -- pixels ---------------------------------------------------------------------------------


def coincident_tiles(name: str) -> list[tuple[int, int, int, int, int, int]]:
    """(DeepZoom level, x, y, stored level, col, row) for every DeepZoom tile (no overlap) that
    is exactly one stored tile: same level size, same box."""
    width, height, tile = geometry(name)
    found = []
    for level in range(dz_max_level(width, height) + 1):
        lw, lh = dz_level_size(width, height, level)
        for index, stored in enumerate(ref.levels(name)):
            if (stored.width, stored.height) != (lw, lh):
                continue
            cols, rows = dz_grid(lw, lh, tile)
            for x in range(cols):
                for y in range(rows):
                    box = dz_tile(lw, lh, tile, 0, x, y)
                    if box.x0 % stored.tile_width or box.y0 % stored.tile_height:
                        continue
                    col, row = box.x0 // stored.tile_width, box.y0 // stored.tile_height
                    _, _, sw, sh = stored.tile_box(row * stored.tiles_x + col)
                    if (sw, sh) == (box.width, box.height):
                        found.append((level, x, y, index, col, row))
    return found


def sample(items: list, count: int, seed: int = 9) -> list:
    """Every item when there are few; else the first, the last and a fixed random choice."""
    if len(items) <= count:
        return items
    return [items[0], items[-1], *random.Random(seed).sample(items[1:-1], count - 2)]


@pytest.mark.parametrize("name", PROTOCOL_FIXTURES)
def test_tiles_that_are_stored_tiles_are_the_stored_pixels(app, name):
    tiles = coincident_tiles(name)
    assert tiles, "every protocol fixture has a DeepZoom level that is a stored level"
    for level, x, y, index, col, row in sample(tiles, 24):
        stored = ref.levels(name)[index]
        expected = ref.tile_pixels(name, index, col, row)
        # Lossless output: exactly the pixels tifffile decodes for the stored tile.
        assert np.array_equal(tiling.get_image(app, tile_path(name, level, x, y, "png")), expected)
        whole = (col + 1) * stored.tile_width <= stored.width and (row + 1) * stored.tile_height <= stored.height
        if tiling.is_jpeg_fixture(name) and whole:
            # A whole stored JPEG tile is sent as stored (SPEC 7: passthrough, tables spliced).
            body = helpers.call(app, path=tile_path(name, level, x, y)).body
            assert body == tiling.expected_splice(name, index, row * stored.tiles_x + col)


@pytest.mark.parametrize("name", PROTOCOL_FIXTURES)
def test_virtual_levels_are_close_to_a_reference_reduction(app, name):
    width, height, tile = geometry(name)
    stored_sizes = {(lvl.width, lvl.height) for lvl in ref.levels(name)}
    full = ref.pixels(name, 0)
    checked = 0
    for level in range(dz_max_level(width, height) + 1):
        lw, lh = dz_level_size(width, height, level)
        if (lw, lh) in stored_sizes or lw > ASSEMBLE_MAX_WIDTH:
            continue
        cols, rows = dz_grid(lw, lh, tile)
        got = np.zeros((lh, lw, full.shape[2]), np.uint8)
        for x in range(cols):
            for y in range(rows):
                box = dz_tile(lw, lh, tile, 0, x, y)
                got[box.y0 : box.y1, box.x0 : box.x1] = tiling.get_image(app, tile_path(name, level, x, y, "png"))
        expected = ref.downscale(full, lw, lh)
        mean, _ = tiling.diff_stats(got, expected)
        assert mean <= tiling.virtual_level_budget(name, lw, lh, expected), (level, (lw, lh), mean)
        checked += 1
    assert checked >= 5


# Two tiles of a resampled level come from different windows of the source level, whose
# rounding to whole source pixels moves the resampling grid by a fraction of a pixel: the
# pixels they share, and a tile with and without overlap, then differ a little: observed mean
# up to 3.7 (4x pyramid, level 10, the rows tiles (0,0) and (0,1) share), on the fixture's
# sharp edges.  Wrong pixels would differ far more, and the shared strips must at least be
# closer to each other than to the neighbour's next two columns or rows.
SUBPIXEL_TOLERANCE = 4.0


def overlap_strips(app_overlap, name: str, level: int) -> tuple[np.ndarray, ...]:
    """Tiles (0,0), (1,0), (0,1) of a level with overlap 1, and the strips two of them share:
    level columns [T - 1, T + 1) of the first row, and the same rows of the first column."""
    width, height, tile = geometry(name)
    lw, lh = dz_level_size(width, height, level)
    a, right, below = (dz_tile(lw, lh, tile, 1, x, y) for x, y in ((0, 0), (1, 0), (0, 1)))
    pa, pr, pb = (
        tiling.get_image(app_overlap, tile_path(name, level, x, y, "png")) for x, y in ((0, 0), (1, 0), (0, 1))
    )
    strips = (pa[:, right.x0 - a.x0 :], pr[:, : a.x1 - right.x0], pa[below.y0 - a.y0 :], pb[: a.y1 - below.y0])
    assert strips[0].shape[1] == strips[2].shape[0] == 2
    # The neighbour's next two columns and rows, for a comparison that tells pixels apart.
    return pa, *strips, pr[:, 2:4], pb[2:4]


@pytest.mark.parametrize("name", PROTOCOL_FIXTURES)
def test_overlapping_tiles_repeat_their_neighbours_pixels(app, app_overlap, name):
    width, height, tile = geometry(name)
    stored = [(lvl.width, lvl.height) for lvl in ref.levels(name)]
    checked = 0
    for level in range(dz_max_level(width, height) + 1):
        lw, lh = dz_level_size(width, height, level)
        cols, rows = dz_grid(lw, lh, tile)
        near_stored = any(abs(lw - sw) <= 1 and abs(lh - sh) <= 1 for sw, sh in stored)
        if cols < 2 or rows < 2 or (near_stored and (lw, lh) not in stored):
            continue  # levels one pixel off a stored level: test_overlap_next_to_stored_tiles
        pa, left, right, upper, lower, right_next, lower_next = overlap_strips(app_overlap, name, level)
        core = tiling.get_image(app, tile_path(name, level, 0, 0, "png"))
        if (lw, lh) in stored:
            # A stored level: the shared pixels are identical, and so is the tile's core.
            assert np.array_equal(left, right) and np.array_equal(upper, lower), level
            assert np.array_equal(pa[:tile, :tile], core), level
        else:
            for one, other, beside in ((left, right, right_next), (upper, lower, lower_next)):
                shared = tiling.diff_stats(one, other)[0]
                assert shared <= SUBPIXEL_TOLERANCE and shared < tiling.diff_stats(one, beside)[0], level
            assert tiling.diff_stats(pa[:tile, :tile], core)[0] <= SUBPIXEL_TOLERANCE, level
        checked += 1
    assert checked >= 1


def test_overlap_next_to_stored_tiles(app_overlap):
    """DeepZoom level 11 (1025x768) of the 4x pyramid comes from stored level 1 (1024x767), whose
    pixels are 4.003 full-size pixels apart.  Tiles at the level's own scale read whole stored
    pixels without resampling, so neighbours agree where they overlap."""
    width, height, _ = geometry(tiling.STEP4)
    assert dz_level_size(width, height, 11) == (1025, 768)
    _, left, right, upper, lower, _, _ = overlap_strips(app_overlap, tiling.STEP4, 11)
    assert tiling.diff_stats(left, right)[0] <= SUBPIXEL_TOLERANCE
    assert tiling.diff_stats(upper, lower)[0] <= SUBPIXEL_TOLERANCE
