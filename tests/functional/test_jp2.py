"""JPEG 2000 images through the WSGI app (SPEC sections 4 LYR, 6, 11, 12 MAX_LAYERS).

Expected geometry comes from the codestream's own header, read with glymur: resolution r of a
W-pixel image is ceil(W / 2^r) (ISO/IEC 15444-1 B.5), down to a tile; levels below the
smallest resolution halve it.  Expected pixels come from glymur decoding the same file
(OpenJPEG at that resolution and number of quality layers), and for levels the file does not
store, from Pillow's Lanczos reduction of the smallest stored resolution.
"""

from __future__ import annotations

import functools
import json
import math

import glymur
import numpy as np
import pytest

from tests import helpers
from tests.functional import reference as ref
from tests.functional import tiling

LAYERED = "jp2-rgb-3000x2000-5res-3layer.jp2"  # 3 layers: 200:1, 40:1, lossless
TILED = "j2k-rgb-2000x1500-2res-384tile.j2k"  # raw codestream, 384-px codestream tiles
GREY16 = "jp2-grey16-1000x700-4res.jp2"
RGBA = "jp2-rgba-800x600-4res.jp2"
TRUNCATED = "broken-truncated.jp2"
NOT_JP2 = "not-an-image.jp2"
ALL = (LAYERED, TILED, GREY16, RGBA)
# Mean |difference| of a level made by resizing vs Pillow's Lanczos of it (measured: about 0.2).
VIRTUAL_TOLERANCE = 1.0


@pytest.fixture(scope="module")
def app():
    return helpers.make_app(URI_MAP=tiling.URI_MAP)


@functools.cache
def header(name: str) -> tuple[int, int, int, int, int, int]:
    """(W, H, decomposition levels, codestream tile width, layers, bits) from the file."""
    jp2 = glymur.Jp2k(helpers.fixture(name))
    siz = jp2.codestream.segment[1]
    cod = next(s for s in jp2.codestream.segment if s.marker_id == "COD")
    return siz.xsiz, siz.ysiz, cod.num_res, siz.xtsiz, cod.layers, siz.bitdepth[0]


def tile_size(name: str) -> int:
    """256-px virtual tiles, or the codestream's tiles when it is tiled with 128-1024 px ones."""
    width, _, _, tile, _, _ = header(name)
    return tile if tile < width and 128 <= tile <= 1024 else 256


def stored_sizes(name: str) -> list[tuple[int, int]]:
    """Sizes of the resolutions a server decodes directly: down to the first within a tile."""
    width, height, decompositions, _, _, _ = header(name)
    sizes = []
    for r in range(decompositions + 1):
        sizes.append((math.ceil(width / 2**r), math.ceil(height / 2**r)))
        if max(sizes[-1]) <= tile_size(name):
            break
    return sizes


def level_sizes(name: str) -> list[tuple[int, int]]:
    sizes = stored_sizes(name)
    while max(sizes[-1]) > tile_size(name):
        w, h = sizes[-1]
        sizes.append((math.ceil(w / 2), math.ceil(h / 2)))
    return sizes


@functools.cache
def openjpeg(name: str, r: int, layers: int = 0) -> np.ndarray:
    """Resolution r decoded by glymur with the first ``layers`` quality layers (0 = all)."""
    jp2 = glymur.Jp2k(helpers.fixture(name))
    jp2.layer = layers
    pixels = jp2[:: 2**r, :: 2**r]
    return pixels if pixels.ndim == 3 else pixels[:, :, None]


def level_reference(name: str, level: int) -> np.ndarray:
    stored = stored_sizes(name)
    if level < len(stored):
        return openjpeg(name, level)
    w, h = level_sizes(name)[level]
    return ref.downscale(openjpeg(name, len(stored) - 1), w, h)


def get_image(app, query: str = "", path: str = "/fcgi-bin/iipsrv.fcgi") -> np.ndarray:
    result = helpers.call(app, query, path=path)
    assert result.status == 200, (query, path, result.status, result.body[:200])
    return ref.decode(result.body)


# -- geometry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_iip_objects_describe_the_codestream(app, name):
    width, height, _, _, _, bits = header(name)
    sizes = level_sizes(name)
    tile = tile_size(name)
    result = helpers.call(
        app, f"FIF={name}&OBJ=Max-size&OBJ=Resolution-number&OBJ=Resolutions&OBJ=Tile-size&OBJ=Bits-per-channel"
    )
    assert result.status == 200
    assert ref.lines(result) == [
        f"Max-size:{width} {height}",
        f"Resolution-number:{len(sizes)}",
        "Resolutions:" + ",".join(f"{w} {h}" for w, h in reversed(sizes)),
        f"Tile-size:{tile} {tile}",
        f"Bits-per-channel:{bits}",
    ]


def test_levels_below_the_smallest_resolution_are_added():
    # The tiled fixture has one decomposition: 2000 and 1000 px are decoded, 500 and 250 made.
    assert stored_sizes(TILED) == [(2000, 1500), (1000, 750)]
    assert level_sizes(TILED) == [(2000, 1500), (1000, 750), (500, 375), (250, 188)]
    assert tile_size(TILED) == 384


@pytest.mark.parametrize("name", (LAYERED, TILED))
def test_iiif_info_lists_every_level(app, name):
    result = helpers.call(app, path=f"/iiif/{name}/info.json")
    assert result.status == 200
    doc = json.loads(result.body)
    width, height = level_sizes(name)[0]
    tile = tile_size(name)
    assert (doc["width"], doc["height"]) == (width, height)
    assert doc["sizes"] == [{"width": w, "height": h} for w, h in reversed(level_sizes(name)[1:])]
    factors = sorted(round(width / w) for w, _ in level_sizes(name))
    assert doc["tiles"] == [{"width": tile, "height": tile, "scaleFactors": factors}]


# -- pixels -----------------------------------------------------------------------------------


def iiif_tile_path(name: str, level: int, col: int, row: int) -> tuple[str, tuple[int, int, int, int]]:
    """IIIF URL of tile (col, row) of a level, as a viewer computes it, and its box in the level."""
    width, height = level_sizes(name)[0]
    lw, lh = level_sizes(name)[level]
    tile = tile_size(name)
    scale = round(width / lw)
    x, y = col * tile * scale, row * tile * scale
    w, h = min(tile * scale, width - x), min(tile * scale, height - y)
    tw, th = min(tile, lw - col * tile), min(tile, lh - row * tile)
    return f"/iiif/{name}/{x},{y},{w},{h}/{tw},{th}/0/default.png", (col * tile, row * tile, tw, th)


@pytest.mark.parametrize("name", ALL)
def test_iiif_tiles_of_stored_resolutions_are_openjpegs_pixels(app, name):
    tile = tile_size(name)
    for level, (lw, lh) in enumerate(stored_sizes(name)):
        last = (math.ceil(lw / tile) - 1, math.ceil(lh / tile) - 1)
        for col, row in {(0, 0), last, (last[0] // 2, last[1])}:
            path, (x, y, w, h) = iiif_tile_path(name, level, col, row)
            got = get_image(app, path=path)
            expected = openjpeg(name, level)[y : y + h, x : x + w]
            if name == GREY16:
                expected = np.floor(expected.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
            assert got.shape == expected.shape, path
            assert np.array_equal(got, expected), (path, ref.mean_abs_diff(got, expected))


def test_iiif_tiles_of_made_levels_match_a_lanczos_reduction(app):
    for level in range(len(stored_sizes(TILED)), len(level_sizes(TILED))):
        path, (x, y, w, h) = iiif_tile_path(TILED, level, 0, 0)
        got = get_image(app, path=path)
        expected = level_reference(TILED, level)[y : y + h, x : x + w]
        assert ref.mean_abs_diff(got, expected) <= VIRTUAL_TOLERANCE, path


def test_deepzoom_tiles_are_openjpegs_pixels():
    app = helpers.make_app(URI_MAP=tiling.URI_MAP, DEEPZOOM_OVERLAP="1")
    width, height = level_sizes(LAYERED)[0]
    top = tiling.dz_max_level(width, height)
    tile = tile_size(LAYERED)
    for r in range(len(stored_sizes(LAYERED))):
        lw, lh = tiling.dz_level_size(width, height, top - r)
        assert (lw, lh) == stored_sizes(LAYERED)[r]
        cols, rows = tiling.dz_grid(lw, lh, tile)
        for x, y in {(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2)}:
            box = tiling.dz_tile(lw, lh, tile, 1, x, y)
            got = get_image(app, path=f"/deepzoom/{LAYERED}_files/{top - r}/{x}_{y}.png")
            expected = openjpeg(LAYERED, r)[box.y0 : box.y1, box.x0 : box.x1]
            assert np.array_equal(got, expected), (r, x, y)


def test_a_region_at_another_scale_matches_a_lanczos_reduction(app):
    # 0.3 of the width at 500 px: read from the 1500-px resolution, then resized.
    got = get_image(app, f"FIF={LAYERED}&RGN=0.2,0.25,0.3,0.4&WID=500&CVT=png")
    full = openjpeg(LAYERED, 0)
    region = full[500:1300, 600:1500]
    expected = ref.downscale(region, got.shape[1], got.shape[0])
    assert got.shape[1] == 500
    assert ref.mean_abs_diff(got, expected) <= 1.0


def test_rgba_keeps_its_alpha_in_png(app):
    got = get_image(app, f"FIF={RGBA}&PTL=0,0")  # the whole smallest level, 200 x 150
    assert np.array_equal(got, openjpeg(RGBA, 2))


# -- quality layers ---------------------------------------------------------------------------


def layers_view(app, layers: str = "") -> np.ndarray:
    """The 750 x 500 resolution (r = 2) as PNG, optionally with LYR."""
    lyr = f"LYR={layers}&" if layers else ""
    return get_image(app, f"FIF={LAYERED}&{lyr}WID=750&CVT=png")


def test_lyr_decodes_that_many_layers(app):
    assert header(LAYERED)[4] == 3
    lossless = openjpeg(LAYERED, 2)
    one, two, every = layers_view(app, "1"), layers_view(app, "2"), layers_view(app)
    assert np.array_equal(one, openjpeg(LAYERED, 2, 1))
    assert np.array_equal(two, openjpeg(LAYERED, 2, 2))
    assert np.array_equal(every, lossless)
    # Fewer layers: lossier (at this resolution about 1.3 and 0.1 per sample against lossless).
    assert ref.mean_abs_diff(one, lossless) > 1.0
    assert ref.mean_abs_diff(one, lossless) > ref.mean_abs_diff(two, lossless) > 0
    # 0 and more layers than the file has mean all of them.
    assert np.array_equal(layers_view(app, "0"), lossless)
    assert np.array_equal(layers_view(app, "7"), lossless)


def test_layer_views_do_not_share_cached_tiles(app):
    query = f"FIF={LAYERED}&PTL=2,3"  # a tile of the 750-px level
    full = get_image(app, query)
    one = get_image(app, f"FIF={LAYERED}&LYR=1&PTL=2,3")
    assert not np.array_equal(full, one)
    assert np.array_equal(get_image(app, query), full)
    # ETags differ too, so a browser never takes one for the other.
    assert helpers.call(app, query).header("ETag") != helpers.call(app, f"FIF={LAYERED}&LYR=1&PTL=2,3").header("ETag")


def test_max_layers_caps_every_request():
    capped = helpers.make_app(URI_MAP=tiling.URI_MAP, MAX_LAYERS="1")
    one = openjpeg(LAYERED, 2, 1)
    assert np.array_equal(layers_view(capped), one)
    assert np.array_equal(layers_view(capped, "3"), one)
    iiif = get_image(capped, path=f"/iiif/{LAYERED}/full/750,/0/default.png")
    assert np.array_equal(iiif, one)
    two = helpers.make_app(MAX_LAYERS="2")
    assert np.array_equal(layers_view(two, "1"), one)
    assert np.array_equal(layers_view(two), openjpeg(LAYERED, 2, 2))


@pytest.mark.parametrize("value", ["-1", "x", "1,2"])
def test_malformed_lyr_is_an_iip_error(app, value):
    assert ref.iip_error(helpers.call(app, f"FIF={LAYERED}&LYR={value}&WID=100&CVT=jpeg")).startswith("2 1")


# -- damaged files ----------------------------------------------------------------------------


def test_truncated_codestream_is_a_server_error_and_the_worker_goes_on(app):
    assert helpers.call(app, f"FIF={TRUNCATED}&OBJ=Max-size").status in (200, 415)
    for query in (f"FIF={TRUNCATED}&PTL=2,0", f"FIF={TRUNCATED}&WID=300&CVT=png"):
        assert helpers.call(app, query).status in (415, 500)
    assert np.array_equal(get_image(app, f"FIF={RGBA}&PTL=0,0"), openjpeg(RGBA, 2))


def test_a_text_file_named_jp2_is_unsupported(app):
    assert helpers.call(app, path=f"/iiif/{NOT_JP2}/info.json").status == 415
    assert helpers.call(app, f"FIF={NOT_JP2}&WID=100&CVT=jpeg").status == 415
