"""Zoomify through the WSGI app (SPEC section 10): ImageProperties.xml with the tile total over
every Zoomify level, tiles of every level, bounds, and the tile group that is not checked.

Zoomify levels are computed here from the format's definition (halve rounding down until the
image fits in one tile, tests/functional/tiling.py); pixels come from tifffile and Pillow.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from tests import helpers
from tests.functional import reference as ref
from tests.functional import tiling
from tests.functional.tiling import PROTOCOL_FIXTURES, ceil_div, zoomify_level_sizes, zoomify_numtiles

ASSEMBLE_MAX_WIDTH = 1100  # levels assembled whole for the pixel comparison


@pytest.fixture(scope="module")
def app():
    return helpers.make_app(URI_MAP=tiling.URI_MAP)


def geometry(name: str) -> tuple[int, int, int]:
    """(W, H, T): full size and the Zoomify tile size = the level-0 tile width."""
    full = ref.levels(name)[0]
    return full.width, full.height, full.tile_width


def tile_path(name: str, z: int, x: int, y: int, ext: str = "jpg", group: int = 0) -> str:
    return f"/zoomify/{name}/TileGroup{group}/{z}-{x}-{y}.{ext}"


def test_level_formulas_on_known_sizes():
    # The reference helpers themselves, against values worked out by hand.
    assert zoomify_level_sizes(3000, 2000, 256) == [(187, 125), (375, 250), (750, 500), (1500, 1000), (3000, 2000)]
    # 1 + 2*1 + 3*2 + 6*4 + 12*8 tiles
    assert zoomify_numtiles(3000, 2000, 256) == 1 + 2 + 6 + 24 + 96
    assert zoomify_level_sizes(4099, 3071, 256)[:2] == [(256, 191), (512, 383)]


@pytest.mark.parametrize("name", PROTOCOL_FIXTURES)
def test_image_properties(app, name):
    width, height, tile = geometry(name)
    result = helpers.call(app, path=f"/zoomify/{name}/ImageProperties.xml")
    assert result.status == 200
    assert "xml" in (result.header("Content-Type") or "")
    root = ET.fromstring(result.body)
    assert root.tag == "IMAGE_PROPERTIES" and len(root) == 0
    assert root.attrib == {
        "WIDTH": str(width),
        "HEIGHT": str(height),
        "NUMTILES": str(zoomify_numtiles(width, height, tile)),
        "NUMIMAGES": "1",
        "VERSION": "1.8",
        "TILESIZE": str(tile),
    }
    assert helpers.call(app, f"Zoomify={name}/ImageProperties.xml").body == result.body


@pytest.mark.parametrize("name", PROTOCOL_FIXTURES)
def test_every_level_has_its_tiles_and_nothing_beyond(app, name):
    width, height, tile = geometry(name)
    sizes = zoomify_level_sizes(width, height, tile)
    assert max(sizes[0]) <= tile and sizes[-1] == (width, height)
    for z, (lw, lh) in enumerate(sizes):
        cols, rows = ceil_div(lw, tile), ceil_div(lh, tile)
        for x, y in {(0, 0), (cols - 1, 0), (0, rows - 1), (cols - 1, rows - 1)}:
            got = tiling.get_image(app, tile_path(name, z, x, y))
            assert got.shape[:2] == (min(tile, lh - y * tile), min(tile, lw - x * tile)), (z, x, y)
        assert helpers.call(app, path=tile_path(name, z, cols, 0)).status == 404
        assert helpers.call(app, path=tile_path(name, z, 0, rows)).status == 404
    assert helpers.call(app, path=tile_path(name, len(sizes), 0, 0)).status == 404
    assert helpers.call(app, path=tile_path(name, 999, 0, 0)).status == 404


@pytest.mark.parametrize("name", PROTOCOL_FIXTURES)
def test_full_size_tiles_are_the_stored_pixels(app, name):
    width, height, tile = geometry(name)
    top = len(zoomify_level_sizes(width, height, tile)) - 1
    full = ref.pixels(name, 0)
    stored = ref.levels(name)[0]
    cols, rows = ceil_div(width, tile), ceil_div(height, tile)
    for x, y in {(0, 0), (1, 1), (cols - 1, 0), (0, rows - 1), (cols - 1, rows - 1)}:
        expected = full[y * tile : (y + 1) * tile, x * tile : (x + 1) * tile]
        assert np.array_equal(tiling.get_image(app, tile_path(name, top, x, y, "png")), expected), (x, y)
        whole = (x + 1) * tile <= width and (y + 1) * tile <= height
        if tiling.is_jpeg_fixture(name) and whole and stored.tile_height == tile:
            # A whole stored JPEG tile goes out as stored (SPEC 7).
            body = helpers.call(app, path=tile_path(name, top, x, y)).body
            assert body == tiling.expected_splice(name, 0, y * stored.tiles_x + x)


@pytest.mark.parametrize("name", PROTOCOL_FIXTURES)
def test_lower_levels_are_stored_levels_or_close_to_a_reference(app, name):
    width, height, tile = geometry(name)
    sizes = zoomify_level_sizes(width, height, tile)
    stored = {(lvl.width, lvl.height): i for i, lvl in enumerate(ref.levels(name))}
    full = ref.pixels(name, 0)
    for z, (lw, lh) in enumerate(sizes[:-1]):
        if lw > ASSEMBLE_MAX_WIDTH:
            continue
        got = np.zeros((lh, lw, full.shape[2]), np.uint8)
        for x in range(ceil_div(lw, tile)):
            for y in range(ceil_div(lh, tile)):
                part = tiling.get_image(app, tile_path(name, z, x, y, "png"))
                got[y * tile : (y + 1) * tile, x * tile : (x + 1) * tile] = part
        if (lw, lh) in stored:
            # Zoomify rounds down, as the fixtures' writers do: the level is a stored one.
            assert np.array_equal(got, ref.pixels(name, stored[(lw, lh)])), z
        else:
            expected = ref.downscale(full, lw, lh)
            mean, _ = tiling.diff_stats(got, expected)
            assert mean <= tiling.virtual_level_budget(name, lw, lh, expected), (z, (lw, lh), mean)


@pytest.mark.parametrize("group", [1, 7, 123456])
def test_tile_group_is_not_checked(app, group):
    name = ref.JPEG_TABLES
    expected = helpers.call(app, path=tile_path(name, 3, 1, 1))
    result = helpers.call(app, path=tile_path(name, 3, 1, 1, group=group))
    assert result.status == 200 and result.body == expected.body


def test_png_tiles(app):
    result = helpers.call(app, path=tile_path(ref.ODD_LEVELS, 0, 0, 0, "png"))
    assert result.status == 200 and result.header("Content-Type") == "image/png"
    assert ref.image_format(result.body) == "PNG"
