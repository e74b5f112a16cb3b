"""IIIF on a slide-like pyramid whose levels step by 4 with odd sizes rounded down
(4099x3071, 1024x767, 256x191, 64x47): info.json announces the real downsamples rounded
(SPEC section 8), and the tile URLs OpenSeadragon computes from them are served from the
stored tiles of the level they name, pixel for pixel (SPEC sections 6 and 7).

OpenSeadragon's IIIF tile source, for scale factor s and tile size T: tile (x, y) is the
region x*T*s, y*T*s, min(T*s, W - x*T*s), min(T*s, H - y*T*s) at size ceil(region / s), with
ceil(W / (T*s)) x ceil(H / (T*s)) tiles.  Expected pixels come from tifffile.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests import helpers
from tests.functional import reference as ref
from tests.functional import tiling
from tests.functional.tiling import STEP4

# A tile the client sizes one pixel larger than the stored tile (the client rounds up, the
# writer rounded down) may be this much further from Pillow's Lanczos reduction of the
# full-size region than Pillow's stretch of the stored tile is (mean absolute difference).
STRETCH_SLACK = 1.5


@pytest.fixture(scope="module")
def app():
    return helpers.make_app(URI_MAP=tiling.URI_MAP)


def scale_factors() -> list[int]:
    width = ref.levels(STEP4)[0].width
    return [round(width / lvl.width) for lvl in ref.levels(STEP4)]


def test_fixture_is_what_its_name_says():
    assert [(lvl.width, lvl.height) for lvl in ref.levels(STEP4)] == [(4099, 3071), (1024, 767), (256, 191), (64, 47)]
    assert {(lvl.tile_width, lvl.tile_height) for lvl in ref.levels(STEP4)} == {(256, 256)}
    assert tiling.is_jpeg_fixture(STEP4)


def test_info_json_scale_factors_are_the_rounded_real_downsamples(app):
    result = helpers.call(app, path=f"/iiif/{STEP4}/info.json")
    assert result.status == 200
    info = json.loads(result.body)
    assert (info["width"], info["height"]) == (4099, 3071)
    assert scale_factors() == [1, 4, 16, 64]
    assert info["tiles"] == [{"width": 256, "height": 256, "scaleFactors": scale_factors()}]
    reduced = [{"width": lvl.width, "height": lvl.height} for lvl in ref.levels(STEP4)[1:]]
    assert info["sizes"] == reduced[::-1]


def openseadragon_tiles(scale: int) -> list[tuple[int, int, tuple[int, int, int, int], tuple[int, int]]]:
    """(x, y, region, size) of every tile OpenSeadragon requests at ``scale``."""
    full = ref.levels(STEP4)[0]
    span = full.tile_width * scale
    tiles = []
    for y in range(math.ceil(full.height / span)):
        for x in range(math.ceil(full.width / span)):
            rx, ry = x * span, y * span
            rw, rh = min(span, full.width - rx), min(span, full.height - ry)
            tiles.append((x, y, (rx, ry, rw, rh), (math.ceil(rw / scale), math.ceil(rh / scale))))
    return tiles


def url(region: tuple[int, int, int, int], size: str, ext: str = "jpg") -> str:
    return f"/iiif/{STEP4}/{','.join(map(str, region))}/{size}/0/default.{ext}"


@pytest.mark.parametrize("scale", [4, 16])
def test_openseadragon_tiles_are_the_stored_tiles(app, scale):
    level = scale_factors().index(scale)
    stored = ref.levels(STEP4)[level]
    full = ref.pixels(STEP4, 0)
    exact = stretched = slivers = 0
    for x, y, region, (ow, oh) in openseadragon_tiles(scale):
        got = tiling.get_image(app, url(region, f"{ow},{oh}", "png"))
        assert got.shape[:2] == (oh, ow), (x, y)
        rx, ry, rw, rh = region
        reference = ref.downscale(np.ascontiguousarray(full[ry : ry + rh, rx : rx + rw]), ow, oh)
        if x >= stored.tiles_x or y >= stored.tiles_y:
            # The few full-size pixels past the last whole stored pixel (4099 = 4 * 1024 + 3).
            assert tiling.diff_stats(got, reference)[0] <= STRETCH_SLACK, (x, y)
            slivers += 1
            continue
        expected = ref.tile_pixels(STEP4, level, x, y)
        index = y * stored.tiles_x + x
        if expected.shape[:2] == (oh, ow):
            assert np.array_equal(got, expected), (x, y)
            # As OpenSeadragon asks, in JPEG: the stored tile as stored (SPEC 7), and the
            # "w," size form names the same tile.
            whole = expected.shape[:2] == (stored.tile_height, stored.tile_width)
            jpeg = helpers.call(app, path=url(region, f"{ow},{oh}")).body
            if whole:
                assert jpeg == tiling.expected_splice(STEP4, level, index)
            assert helpers.call(app, path=url(region, f"{ow},")).body == jpeg
            exact += 1
        else:
            # The client's ceil asks one row more than the writer's floor stored (1023 full
            # rows: 255.75 stored rows): close to the stored tile stretched by that row ...
            baseline = tiling.diff_stats(ref.downscale(np.ascontiguousarray(expected), ow, oh), reference)[0]
            assert tiling.diff_stats(got, reference)[0] <= baseline + STRETCH_SLACK, (x, y)
            # ... and asked at the stored tile's own size, it is the stored tile.
            own = tiling.get_image(app, url(region, f"{expected.shape[1]},{expected.shape[0]}", "png"))
            assert np.array_equal(own, expected), (x, y)
            stretched += 1
    # Every kind of tile occurs at these scales on this fixture.
    assert (exact > 0 or scale == 16) and stretched > 0 and slivers > 0, (exact, stretched, slivers)
