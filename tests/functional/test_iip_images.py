"""IIP image responses through the WSGI app: tiles (SPEC sections 4 and 7), CVT views
(SPEC section 6), HTTP behaviour (SPEC sections 2 and 3) and freshness after a file changes.

Expected pixels come from tifffile decoding the fixture; reference downscales from Pillow's
Lanczos filter on the full-resolution pixels; sizes from the SPEC's formulas.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from email.utils import formatdate, parsedate_to_datetime
from importlib.metadata import version

import numpy as np
import pytest
import tifffile
from PIL import Image

from tests import helpers
from tests.functional import reference as ref
from tests.functional.reference import (
    BIGTIFF,
    DEFLATE,
    GREY,
    JPEG_PYRAMIDS,
    JPEG_SUBIFD,
    JPEG_TABLES,
    LOSSLESS_PYRAMIDS,
    NON_SQUARE,
    ODD_LEVELS,
    RGB_JPEG,
)

CORS_BLOCK = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "GET, POST, OPTIONS",
    "access-control-allow-headers": "Accept, Content-Type, X-Requested-With, If-Modified-Since",
    "access-control-max-age": "86400",
}
# JPEG APP14 "Adobe" segment (length 14, version 100, flags 0 0, transform 0 = RGB, no
# transform), from the Adobe DCT filter specification (Technical Note #5116).
ADOBE_RGB_APP14 = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
PHOTOMETRIC_RGB = 2
# Pixel tolerances (mean absolute difference per sample, 0-255 scale).
RESAMPLE_TOLERANCE = 1.0  # lossless output of a server downscale vs Pillow's Lanczos reference
JPEG_SLACK = 1.0  # a server JPEG may be this much worse than Pillow's JPEG of the reference at equal quality
DEFAULT_JPEG_QUALITY = 75  # SPEC section 12


@pytest.fixture(scope="module")
def app():
    return helpers.make_app()


def get(app, query: str, **kwargs) -> helpers.Result:
    return helpers.call(app, query, **kwargs)


def image(app, query: str) -> np.ndarray:
    result = get(app, query)
    assert result.status == 200, (query, result.status, result.body[:200])
    return ref.decode(result.body)


def pillow_jpeg_roundtrip(array: np.ndarray, quality: int) -> np.ndarray:
    """What a plain JPEG encoder makes of the reference: the yardstick for JPEG tolerance."""
    mode = "L" if array.shape[2] == 1 else "RGB"
    out = io.BytesIO()
    Image.fromarray(array[:, :, 0] if mode == "L" else array, mode).save(out, "JPEG", quality=quality)
    return ref.decode(out.getvalue())


def assert_jpeg_close(got: np.ndarray, expected: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY) -> None:
    budget = ref.mean_abs_diff(pillow_jpeg_roundtrip(expected, quality), expected) + JPEG_SLACK
    assert ref.mean_abs_diff(got, expected) <= budget


def res_of(name: str, level: int) -> int:
    """IIP resolution number of a stored level (IIP: 0 = smallest; levels: 0 = full size)."""
    return len(ref.levels(name)) - 1 - level


# -- tiles ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", JPEG_PYRAMIDS)
@pytest.mark.parametrize("level", [0, 1])
def test_interior_jpeg_tile_is_the_stored_tile(app, name, level):
    lvl = ref.levels(name)[level]
    col, row = (1 if lvl.tiles_x >= 3 else 0), (1 if lvl.tiles_y >= 3 else 0)
    # An interior tile: whole, so nothing needs cropping.
    assert (col + 1) * lvl.tile_width <= lvl.width and (row + 1) * lvl.tile_height <= lvl.height
    index = row * lvl.tiles_x + col
    result = get(app, f"FIF={name}&JTL={res_of(name, level)},{index}")
    assert result.status == 200
    assert result.header("Content-Type") == "image/jpeg"
    # SPEC 7: shared JPEGTables are spliced in (tables without EOI + tile without SOI) ...
    stored = ref.stored_tile(name, level, index)
    tables = ref.jpeg_tables(name, level)
    expected = tables[:-2] + stored[2:] if tables else stored
    if ref.photometric(name) == PHOTOMETRIC_RGB:
        # ... and an RGB stream without a colour transform is marked as such.
        expected = expected[:2] + ADOBE_RGB_APP14 + expected[2:]
    assert result.body == expected
    # ... and the tile decodes to exactly the pixels tifffile decodes for it.
    assert np.array_equal(ref.decode(result.body), ref.tile_pixels(name, level, col, row))


def test_rgb_jpeg_tiles_are_marked_so_every_decoder_sees_rgb(app):
    stored = ref.stored_tile(RGB_JPEG, 0, 5)
    expected = ref.tile_pixels(RGB_JPEG, 0, 1, 1)
    # The fixture is what it claims: read alone, the stored stream decodes to wrong colours.
    assert b"Adobe" not in stored and ref.mean_abs_diff(ref.decode(stored), expected) > 20
    result = get(app, f"FIF={RGB_JPEG}&JTL=1,5")
    assert result.body[2 : 2 + len(ADOBE_RGB_APP14)] == ADOBE_RGB_APP14
    assert np.array_equal(ref.decode(result.body), expected)
    # A re-encoded tile (QLT rules out passthrough) comes out in the right colours too.
    assert_jpeg_close(ref.decode(get(app, f"FIF={RGB_JPEG}&QLT=90&JTL=1,5").body), expected, 90)


def test_fixture_with_shared_tables_has_them():
    assert ref.jpeg_tables(JPEG_TABLES, 0)
    assert not ref.jpeg_tables(JPEG_SUBIFD, 0)


@pytest.mark.parametrize("name", [*JPEG_PYRAMIDS, *LOSSLESS_PYRAMIDS])
def test_resolution_numbers_count_from_the_smallest_level(app, name):
    stored = ref.levels(name)
    for res in range(len(stored)):
        level = stored[len(stored) - 1 - res]
        got = image(app, f"FIF={name}&PTL={res},0")
        assert got.shape[:2] == (min(level.tile_height, level.height), min(level.tile_width, level.width))
        assert np.array_equal(got, ref.tile_pixels(name, len(stored) - 1 - res, 0, 0))


@pytest.mark.parametrize("name", [*JPEG_PYRAMIDS, *LOSSLESS_PYRAMIDS])
def test_tiles_are_numbered_row_major_and_edge_tiles_cropped(app, name):
    level = 0
    lvl = ref.levels(name)[level]
    res = res_of(name, level)
    picks = {
        (lvl.tiles_x - 1, 0),  # right edge
        (0, lvl.tiles_y - 1),  # bottom edge
        (lvl.tiles_x - 1, lvl.tiles_y - 1),  # corner
        (min(2, lvl.tiles_x - 1), min(1, lvl.tiles_y - 1)),
    }
    for col, row in sorted(picks):
        got = image(app, f"FIF={name}&PTL={res},{row * lvl.tiles_x + col}")
        expected = ref.tile_pixels(name, level, col, row)
        # Edge tiles are cropped to the image, never padded to the tile size.
        assert got.shape[:2] == (
            min(lvl.tile_height, lvl.height - row * lvl.tile_height),
            min(lvl.tile_width, lvl.width - col * lvl.tile_width),
        )
        assert np.array_equal(got, expected), (col, row)


def test_edge_tile_of_3000x2000_is_184x208(app):
    # 3000 = 11 * 256 + 184 and 2000 = 7 * 256 + 208: the last tile is 184 x 208.
    got = image(app, f"FIF={JPEG_TABLES}&JTL=4,{12 * 8 - 1}")
    assert got.shape == (208, 184, 3)
    assert_jpeg_close(got, ref.tile_pixels(JPEG_TABLES, 0, 11, 7))


def test_non_square_tiles_use_width_and_height(app):
    # 1500 x 1000 in 512 x 256 tiles: 3 columns, 4 rows; tile 4 is column 1, row 1.
    lvl = ref.levels(NON_SQUARE)[0]
    assert (lvl.tile_width, lvl.tile_height, lvl.tiles_x, lvl.tiles_y) == (512, 256, 3, 4)
    got = image(app, f"FIF={NON_SQUARE}&JTL=2,4")
    assert np.array_equal(got, ref.tile_pixels(NON_SQUARE, 0, 1, 1))
    edge = image(app, f"FIF={NON_SQUARE}&JTL=2,11")
    assert edge.shape == (1000 - 3 * 256, 1500 - 2 * 512, 3)
    assert_jpeg_close(edge, ref.tile_pixels(NON_SQUARE, 0, 2, 3))


def test_levels_that_do_not_halve(app):
    # Levels 3000x2000, 1000x667, 333x222, 111x74: res 1 is 333x222 in two columns (256 + 77).
    assert [(lv.width, lv.height) for lv in ref.levels(ODD_LEVELS)] == [
        (3000, 2000),
        (1000, 667),
        (333, 222),
        (111, 74),
    ]
    right = image(app, f"FIF={ODD_LEVELS}&PTL=1,1")
    assert right.shape == (222, 77, 3)
    assert np.array_equal(right, ref.pixels(ODD_LEVELS, 2)[:, 256:])
    smallest = image(app, f"FIF={ODD_LEVELS}&PTL=0,0")
    assert np.array_equal(smallest, ref.pixels(ODD_LEVELS, 3))
    assert get(app, f"FIF={ODD_LEVELS}&PTL=1,2").status == 404  # there is no second row


@pytest.mark.parametrize("name", [DEFLATE, GREY, ODD_LEVELS])
def test_jpeg_tiles_of_lossless_pyramids_are_re_encoded_closely(app, name):
    lvl = ref.levels(name)[0]
    index = lvl.tiles_x + 1
    result = get(app, f"FIF={name}&JTL={res_of(name, 0)},{index}")
    assert result.status == 200
    assert result.header("Content-Type") == "image/jpeg"
    got = ref.decode(result.body)
    expected = ref.tile_pixels(name, 0, 1, 1)
    assert got.shape == expected.shape
    assert_jpeg_close(got, expected)


def test_grey_tiles_stay_grey(app):
    with Image.open(io.BytesIO(get(app, f"FIF={GREY}&JTL=3,0").body)) as jpeg:
        assert jpeg.mode == "L"
    with Image.open(io.BytesIO(get(app, f"FIF={GREY}&PTL=3,0").body)) as png:
        assert png.mode == "L"


def test_tiff_tiles_are_lossless(app):
    result = get(app, f"FIF={DEFLATE}&TTL=4,13")
    assert result.status == 200
    assert result.header("Content-Type") == "image/tiff"
    got = tifffile.imread(io.BytesIO(result.body))
    assert np.array_equal(got, ref.tile_pixels(DEFLATE, 0, 1, 1))


@pytest.mark.parametrize(
    "arg",
    [
        "5,0",  # one past the last resolution of a 5-level pyramid
        "99999,0",
        "-1,0",
        f"4,{12 * 8}",  # one past the last tile of 12 x 8
        "4,99999999",
        "4,-1",
        "0,1",  # the smallest level (187 x 125) has one tile
        "-3,-3",
    ],
)
@pytest.mark.parametrize("command", ["JTL", "PTL"])
def test_tile_out_of_range_is_404(app, command, arg):
    result = get(app, f"FIF={JPEG_TABLES}&{command}={arg}")
    assert result.status == 404
    assert result.header("Content-Type").startswith("text/plain")
    assert result.header("Cache-Control") == "no-cache"


def test_jtls_is_jtl_with_sequence_angles(app):
    expected = get(app, f"FIF={JPEG_TABLES}&JTL=3,7")
    result = get(app, f"FIF={JPEG_TABLES}&JTLS=0,3,7,90")
    assert result.status == 200
    assert result.body == expected.body
    assert np.array_equal(ref.decode(result.body), ref.tile_pixels(JPEG_TABLES, 1, 1, 1))


def test_jtls_without_four_values_is_ignored(app):
    # Ignored, so the request produces nothing: IIP error 2 1 (malformed), not an image.
    assert ref.iip_error(get(app, f"FIF={JPEG_TABLES}&JTLS=3,7")).startswith("2 1")


@pytest.mark.parametrize("name", LOSSLESS_PYRAMIDS)
def test_png_tiles_of_lossless_pyramids_are_pixel_exact(app, name):
    stored = ref.levels(name)
    for level in range(len(stored)):
        lvl = stored[level]
        index = lvl.tiles_x * (lvl.tiles_y - 1) // 2 + lvl.tiles_x // 2
        got = image(app, f"FIF={name}&PTL={res_of(name, level)},{index}")
        col, row = index % lvl.tiles_x, index // lvl.tiles_x
        assert np.array_equal(got, ref.tile_pixels(name, level, col, row)), level


# -- CVT: sizes (SPEC section 6) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "size"),
    [
        ("WID=500", (500, round(500 * 2000 / 3000))),  # only WID: h = round(WID / ratio)
        ("HEI=300", (round(300 * 3000 / 2000), 300)),  # only HEI: w = round(HEI * ratio)
        ("WID=500&HEI=500", (500, 333)),  # both: fit inside the box
        ("WID=1000&HEI=200", (300, 200)),
        ("HEI=200&WID=1000", (300, 200)),
        ("WID=97", (97, 65)),
        ("WID=1400", (1400, 933)),
    ],
)
def test_cvt_size_and_pixels(app, query, size):
    got = image(app, f"FIF={DEFLATE}&{query}&CVT=png")
    assert (got.shape[1], got.shape[0]) == size
    expected = ref.downscale(ref.pixels(DEFLATE), *size)
    assert ref.mean_abs_diff(got, expected) < RESAMPLE_TOLERANCE


@pytest.mark.parametrize("name", [JPEG_TABLES, ODD_LEVELS, GREY, BIGTIFF])
def test_cvt_jpeg_is_close_to_a_reference_downscale(app, name):
    full = ref.levels(name)[0]
    width = 400
    height = round(width * full.height / full.width)
    result = get(app, f"FIF={name}&WID={width}&CVT=jpeg")
    assert result.header("Content-Type") == "image/jpeg"
    got = ref.decode(result.body)
    assert got.shape[:2] == (height, width)
    assert_jpeg_close(got, ref.downscale(ref.pixels(name), width, height))


def test_cvt_without_size_is_the_region_at_full_resolution(app):
    # RGN 0.5,0.5,0.1,0.1 of 3000 x 2000 is x 1500, y 1000, 300 x 200 (SPEC 6 [fix]).
    got = image(app, f"FIF={DEFLATE}&RGN=0.5,0.5,0.1,0.1&CVT=png")
    assert np.array_equal(got, ref.pixels(DEFLATE)[1000:1200, 1500:1800])


def test_cvt_without_size_or_region_is_the_full_image(app):
    got = image(app, f"FIF={GREY}&CVT=png")
    assert np.array_equal(got, ref.pixels(GREY))


def test_region_is_clipped_at_the_image_edge(app):
    got = image(app, f"FIF={ODD_LEVELS}&RGN=0.9,0.9,0.5,0.5&CVT=png")
    assert np.array_equal(got, ref.pixels(ODD_LEVELS)[1800:2000, 2700:3000])


def test_region_values_are_clamped_to_zero_one(app):
    clamped = get(app, f"FIF={DEFLATE}&RGN=-0.5,-2,0.1,0.1&CVT=png")
    assert np.array_equal(ref.decode(clamped.body), ref.pixels(DEFLATE)[0:200, 0:300])


def test_region_with_width_scales_the_region(app):
    got = image(app, f"FIF={DEFLATE}&RGN=0.25,0.25,0.5,0.5&WID=300&CVT=png")
    assert got.shape[:2] == (200, 300)
    region = ref.pixels(DEFLATE)[500:1500, 750:2250]
    assert ref.mean_abs_diff(got, ref.downscale(np.ascontiguousarray(region), 300, 200)) < RESAMPLE_TOLERANCE


@pytest.mark.parametrize("rgn", ["0.1,0.1,0.5", "0.1,0.1,0,0.5", "0.1,0.1,0.5,-1", "0.1,0.1,0.2,0.2,0.3"])
def test_region_ignored_unless_four_values_with_positive_size(app, rgn):
    full = get(app, f"FIF={BIGTIFF}&WID=300&CVT=png")
    result = get(app, f"FIF={BIGTIFF}&RGN={rgn}&WID=300&CVT=png")
    assert result.status == 200
    assert np.array_equal(ref.decode(result.body), ref.decode(full.body))
    assert ref.decode(result.body).shape[:2] == (200, 300)


def test_max_cvt_caps_the_larger_side(fixtures):
    app = helpers.make_app(MAX_CVT="1000")
    for query in ("WID=2000", "HEI=1800", "", "WID=5000&HEI=5000"):
        got = image(app, f"FIF={DEFLATE}&{query}&CVT=jpeg")
        assert (got.shape[1], got.shape[0]) == (1000, 667), query
    # Below the cap nothing changes.
    assert image(app, f"FIF={DEFLATE}&WID=900&CVT=jpeg").shape[:2] == (600, 900)


def test_upscaling_allowed_by_default(app):
    got = image(app, f"FIF={DEFLATE}&RGN=0,0,0.1,0.1&WID=600&CVT=png")
    assert got.shape[:2] == (400, 600)


def test_without_upscaling_output_is_capped_at_the_region_size(fixtures):
    app = helpers.make_app(ALLOW_UPSCALING="0")
    got = image(app, f"FIF={DEFLATE}&RGN=0,0,0.1,0.1&WID=600&CVT=png")
    assert np.array_equal(got, ref.pixels(DEFLATE)[0:200, 0:300])
    assert image(app, f"FIF={BIGTIFF}&HEI=1600&CVT=png").shape[:2] == (800, 1200)


# -- CVT: formats and quality -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cvt", "mime", "pil_format"),
    [
        ("jpeg", "image/jpeg", "JPEG"),
        ("JPG", "image/jpeg", "JPEG"),
        ("png", "image/png", "PNG"),
        ("tif", "image/tiff", "TIFF"),
        ("tiff", "image/tiff", "TIFF"),
        ("bmp", "image/jpeg", "JPEG"),  # unknown -> JPEG [compat]
        ("nonsense", "image/jpeg", "JPEG"),
    ],
)
def test_cvt_formats(app, cvt, mime, pil_format):
    result = get(app, f"FIF={BIGTIFF}&WID=240&CVT={cvt}")
    assert result.status == 200
    assert result.header("Content-Type") == mime
    assert ref.image_format(result.body) == pil_format
    assert ref.decode(result.body).shape[:2] == (160, 240)


def test_cvt_tif_is_lossless(app):
    result = get(app, f"FIF={DEFLATE}&RGN=0.5,0.5,0.1,0.1&CVT=tif")
    assert np.array_equal(tifffile.imread(io.BytesIO(result.body)), ref.pixels(DEFLATE)[1000:1200, 1500:1800])


def test_png_quality_is_the_zlib_level_clamped_to_9(app):
    crop = ref.pixels(DEFLATE)[1000:1200, 1500:1800]
    bodies = {q: get(app, f"FIF={DEFLATE}&RGN=0.5,0.5,0.1,0.1&QLT={q}&CVT=png").body for q in (0, 9, 50)}
    for body in bodies.values():
        assert np.array_equal(ref.decode(body), crop)  # lossless at every level
    assert len(bodies[0]) > len(bodies[9])
    assert bodies[50] == bodies[9]  # larger than 9 clamps to 9


@pytest.mark.parametrize(("cvt", "pil_format"), [("webp", "WEBP"), ("avif", "AVIF")])
def test_quality_below_one_is_lossless_webp_and_avif(app, cvt, pil_format):
    crop = ref.pixels(DEFLATE)[1000:1200, 1500:1800]
    result = get(app, f"FIF={DEFLATE}&RGN=0.5,0.5,0.1,0.1&QLT=-1&CVT={cvt}")
    assert result.header("Content-Type") == f"image/{cvt}"
    assert ref.image_format(result.body) == pil_format
    lossless = ref.decode(result.body)
    lossy = ref.decode(get(app, f"FIF={DEFLATE}&RGN=0.5,0.5,0.1,0.1&QLT=30&CVT={cvt}").body)
    if cvt == "webp":
        assert np.array_equal(lossless, crop)
    else:
        # AVIF's lossless mode is lossless in its own colour space; the RGB round trip is near.
        assert ref.mean_abs_diff(lossless, crop) < 1.0
    assert ref.mean_abs_diff(lossless, crop) < ref.mean_abs_diff(lossy, crop)


@pytest.mark.parametrize(
    ("qlt", "compression", "lossless"),
    [
        ("", "ADOBE_DEFLATE", True),  # TIFF_COMPRESSION default 2 = deflate
        ("&QLT=lzw", "LZW", True),
        ("&QLT=deflate:9", "ADOBE_DEFLATE", True),
        ("&QLT=zstd:3", "ZSTD", True),
        ("&QLT=none", "NONE", True),
        ("&QLT=jpeg:80", "JPEG", False),
        ("&QLT=webp:40", "WEBP", False),
        ("&QLT=webp:-1", "WEBP", True),
    ],
)
def test_qlt_codec_sets_tiff_output_compression(app, qlt, compression, lossless):
    crop = ref.pixels(DEFLATE)[1000:1200, 1500:1800]
    result = get(app, f"FIF={DEFLATE}&RGN=0.5,0.5,0.1,0.1{qlt}&CVT=tif")
    with tifffile.TiffFile(io.BytesIO(result.body)) as tif:
        assert tif.pages[0].compression.name == compression
        got = tif.pages[0].asarray()
    assert np.array_equal(got, crop) == lossless
    assert ref.mean_abs_diff(got, crop) < 3.0


def test_higher_quality_is_larger_and_closer(app):
    reference = ref.downscale(ref.pixels(DEFLATE), 500, 333)
    bodies = {q: get(app, f"FIF={DEFLATE}&WID=500&QLT={q}&CVT=jpeg").body for q in (20, 95)}
    assert len(bodies[95]) > len(bodies[20])
    low, high = (ref.mean_abs_diff(ref.decode(bodies[q]), reference) for q in (20, 95))
    assert high < low
    default = get(app, f"FIF={DEFLATE}&WID=500&CVT=jpeg").body
    assert len(bodies[20]) < len(default) < len(bodies[95])


def test_quality_disables_passthrough(app):
    passthrough = get(app, f"FIF={JPEG_TABLES}&JTL=4,13")
    stored = ref.tile_pixels(JPEG_TABLES, 0, 1, 1)
    assert np.array_equal(ref.decode(passthrough.body), stored)
    for quality in (90, 50):
        result = get(app, f"FIF={JPEG_TABLES}&QLT={quality}&JTL=4,13")
        assert result.status == 200
        assert result.body != passthrough.body
        assert_jpeg_close(ref.decode(result.body), stored, quality)
    assert len(get(app, f"FIF={JPEG_TABLES}&QLT=50&JTL=4,13").body) < len(
        get(app, f"FIF={JPEG_TABLES}&QLT=95&JTL=4,13").body
    )


def test_passthrough_can_be_switched_off(fixtures):
    app = helpers.make_app(CODEC_PASSTHROUGH="0")
    stored = ref.stored_tile(JPEG_SUBIFD, 0, 13)
    result = get(app, f"FIF={JPEG_SUBIFD}&JTL=4,13")
    assert result.body != stored
    assert_jpeg_close(ref.decode(result.body), ref.tile_pixels(JPEG_SUBIFD, 0, 1, 1))


# -- headers ----------------------------------------------------------------------------------


def test_content_disposition_names_stem_size_and_extension(app):
    for cvt, ext in (("jpeg", "jpg"), ("png", "png"), ("tif", "tif")):
        result = get(app, f"FIF={BIGTIFF}&WID=300&CVT={cvt}")
        stem = os.path.splitext(BIGTIFF)[0]
        assert result.header("Content-Disposition") == f'inline; filename="{stem}_300x200.{ext}"'


def test_tiles_have_no_content_disposition(app):
    assert get(app, f"FIF={BIGTIFF}&JTL=0,0").header("Content-Disposition") is None


def test_post_form_body_with_empty_query(app):
    body = f"FIF={BIGTIFF}&WID=300&CVT=jpeg".encode()
    result = helpers.call(
        app, "", method="POST", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert result.status == 200
    assert ref.decode(result.body).shape[:2] == (200, 300)
    stem = os.path.splitext(BIGTIFF)[0]
    assert result.header("Content-Disposition") == f'attachment; filename="{stem}_300x200.jpg"'


def test_post_with_a_query_uses_the_query(app):
    result = helpers.call(app, f"FIF={BIGTIFF}&OBJ=Max-size", method="POST", body=b"FIF=nothing.tif&OBJ=Max-size")
    assert result.body == b"Max-size:1200 800\r\n"


def test_standard_headers_on_an_image(app):
    result = get(app, f"FIF={DEFLATE}&WID=200&CVT=jpeg")
    assert result.header("Server") == f"iipsrv-py/{version('iipsrv_py')}"
    assert result.header("X-Powered-By") == "IIPImage"
    assert result.header("Content-Type") == "image/jpeg"
    assert result.header("Content-Length") == str(len(result.body))
    mtime = os.stat(helpers.fixture(DEFLATE)).st_mtime
    assert result.header("Last-Modified") == formatdate(int(mtime), usegmt=True)
    assert result.header("Cache-Control") == "max-age=86400"
    assert result.header("ETag").startswith('"') and result.header("ETag").endswith('"')


def test_cache_control_setting(fixtures):
    app = helpers.make_app(CACHE_CONTROL="public, max-age=60")
    assert get(app, f"FIF={BIGTIFF}&JTL=0,0").header("Cache-Control") == "public, max-age=60"
    assert get(app, f"FIF={BIGTIFF}&OBJ=Max-size").header("Cache-Control") == "public, max-age=60"
    error = get(app, "FIF=missing.tif&OBJ=Max-size")
    assert error.status == 404
    assert error.header("Cache-Control") == "no-cache"
    assert get(app, "FIF=x.tif&BOGUS=1").header("Cache-Control") == "no-cache"


def test_etag_is_stable_and_distinguishes_requests(app):
    queries = [
        f"FIF={BIGTIFF}&WID=200&CVT=jpeg",
        f"FIF={BIGTIFF}&WID=300&CVT=jpeg",
        f"FIF={BIGTIFF}&WID=200&CVT=png",
        f"FIF={BIGTIFF}&WID=200&QLT=90&CVT=jpeg",
        f"FIF={BIGTIFF}&JTL=2,0",
        f"FIF={BIGTIFF}&JTL=2,1",
        f"FIF={NON_SQUARE}&JTL=2,0",
        f"FIF={BIGTIFF}&OBJ=Max-size",
        f"FIF={BIGTIFF}&OBJ=Tile-size",
    ]
    tags = [get(app, q).header("ETag") for q in queries]
    assert all(tags)
    assert len(set(tags)) == len(tags)
    assert [get(app, q).header("ETag") for q in queries] == tags
    # A fresh app (another worker) computes the same validators.
    other = helpers.make_app()
    assert [get(other, q).header("ETag") for q in queries] == tags


def test_etag_follows_the_output_not_the_spelling(app):
    # Same rendering, different spelling: one ETag, one body.
    a = get(app, f"FIF={BIGTIFF}&WID=200&CVT=jpeg")
    b = get(app, f"fif={BIGTIFF}&wid=200&cvt=JPG")
    assert a.body == b.body
    assert a.header("ETag") == b.header("ETag")


# -- conditional GET (SPEC 3 [fix]) -------------------------------------------------------------


@pytest.fixture
def dated_root(tmp_path):
    """A root holding one image whose mtime is 2020-01-01 00:00:00 UTC."""
    shutil.copyfile(helpers.fixture(BIGTIFF), tmp_path / "img.tif")
    os.utime(tmp_path / "img.tif", (1577836800, 1577836800))
    return tmp_path


@pytest.mark.parametrize("query", ["FIF=img.tif&JTL=1,1", "FIF=img.tif&WID=100&CVT=jpeg", "FIF=img.tif&OBJ=Max-size"])
def test_if_none_match_gives_304_without_body(dated_root, query):
    app = helpers.make_app(FILESYSTEM_PREFIX=f"{dated_root}/", CORS="*")
    first = get(app, query)
    etag = first.header("ETag")
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = get(app, query, headers={"If-None-Match": header})
        assert again.status == 304, header
        assert again.body == b""
        assert again.header("ETag") == etag
        assert again.header("Last-Modified") == "Wed, 01 Jan 2020 00:00:00 GMT"
        assert {k: again.header(k) for k in CORS_BLOCK} == CORS_BLOCK
    stale = get(app, query, headers={"If-None-Match": '"not-this-one"'})
    assert stale.status == 200
    assert stale.body == first.body


@pytest.mark.parametrize(
    ("since", "status"),
    [
        ("Wed, 01 Jan 2020 00:00:00 GMT", 304),  # equal
        ("Thu, 02 Jan 2020 00:00:00 GMT", 304),  # later than the mtime: not modified since [fix]
        ("Tue, 31 Dec 2019 23:59:59 GMT", 200),  # older: modified since
        ("Wed, 01 Jan 2020 00:00:00 +0100", 200),  # an hour before the mtime
        ("not a date", 200),
        ("Fri, 01 Jan 2100 00:00:00 GMT", 200),  # in the future: ignored (RFC 9110)
    ],
)
def test_if_modified_since(dated_root, since, status):
    app = helpers.make_app(FILESYSTEM_PREFIX=f"{dated_root}/")
    result = get(app, "FIF=img.tif&JTL=1,1", headers={"If-Modified-Since": since})
    assert result.status == status
    assert (result.body == b"") == (status == 304)


def test_if_none_match_wins_over_if_modified_since(dated_root):
    app = helpers.make_app(FILESYSTEM_PREFIX=f"{dated_root}/")
    headers = {"If-None-Match": '"nope"', "If-Modified-Since": "Thu, 02 Jan 2020 00:00:00 GMT"}
    assert get(app, "FIF=img.tif&JTL=1,1", headers=headers).status == 200


def test_last_modified_round_trips_as_if_modified_since(app):
    first = get(app, f"FIF={GREY}&JTL=0,0")
    modified = parsedate_to_datetime(first.header("Last-Modified")).timestamp()
    assert modified == int(os.stat(helpers.fixture(GREY)).st_mtime)
    again = get(app, f"FIF={GREY}&JTL=0,0", headers={"If-Modified-Since": first.header("Last-Modified")})
    assert again.status == 304


# -- methods ----------------------------------------------------------------------------------


@pytest.mark.parametrize("query", [f"FIF={BIGTIFF}&JTL=1,1", f"FIF={BIGTIFF}&OBJ=Max-size", "FIF=missing.tif&JTL=0,0"])
def test_head_has_the_headers_of_get_and_no_body(app, query):
    got = get(app, query)
    head = get(app, query, method="HEAD")
    assert head.body == b""
    assert head.status == got.status
    assert head.headers == got.headers
    assert int(head.header("Content-Length")) == len(got.body) > 0


def test_options_answers_204_with_cors(fixtures):
    app = helpers.make_app(CORS="*")
    result = get(app, f"FIF={BIGTIFF}&JTL=0,0", method="OPTIONS")
    assert result.status == 204
    assert result.body == b""
    assert {k: result.header(k) for k in CORS_BLOCK} == CORS_BLOCK


def test_no_cors_headers_unless_configured(app):
    result = get(app, f"FIF={BIGTIFF}&JTL=0,0")
    assert not any(name.startswith("access-control-") for name in result.headers)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "TRACE", "BREW"])
def test_other_methods_are_405(app, method):
    result = get(app, f"FIF={BIGTIFF}&JTL=0,0", method=method)
    assert result.status == 405
    assert result.header("Allow") == "GET, HEAD, POST, OPTIONS"
    assert result.header("Content-Length") == str(len(result.body))


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_empty_request_is_an_html_banner(app, method):
    result = get(app, "", method=method)
    assert result.status == 200
    assert result.header("Content-Type").startswith("text/html")
    assert b"iipsrv-py" in result.body
    assert version("iipsrv_py").encode() in result.body
    assert result.header("Content-Length") == str(len(result.body))


@pytest.mark.parametrize(
    ("query", "status"),
    [("FIF=missing.tif&JTL=0,0", 404), ("FIF=x.tif&BOGUS=1", 400), (f"FIF={ref.NOT_AN_IMAGE}&JTL=0,0", 415)],
)
def test_cors_headers_on_errors(fixtures, query, status):
    app = helpers.make_app(CORS="https://viewer.example")
    result = get(app, query)
    assert result.status == status
    expected = {**CORS_BLOCK, "access-control-allow-origin": "https://viewer.example"}
    assert {k: result.header(k) for k in CORS_BLOCK} == expected


# -- freshness after the file changes ---------------------------------------------------------


@pytest.mark.parametrize("how", ["overwrite", "replace"])
def test_a_replaced_file_is_served_fresh(tmp_path, how):
    target = tmp_path / "img.tif"
    shutil.copyfile(helpers.fixture(BIGTIFF), target)
    app = helpers.make_app(FILESYSTEM_PREFIX=f"{tmp_path}/")
    before = get(app, "FIF=img.tif&OBJ=Max-size&OBJ=Tile-size")
    assert before.body == b"Max-size:1200 800\r\nTile-size:128 128\r\n"
    tile_before = get(app, "FIF=img.tif&JTL=0,0")
    view_before = get(app, "FIF=img.tif&WID=150&CVT=png")

    if how == "overwrite":  # same inode, new bytes
        shutil.copyfile(helpers.fixture(NON_SQUARE), target)
    else:  # a new file moved over the old name, as deployment tools do
        shutil.copyfile(helpers.fixture(NON_SQUARE), tmp_path / "new.tif")
        os.replace(tmp_path / "new.tif", target)

    after = get(app, "FIF=img.tif&OBJ=Max-size&OBJ=Tile-size")
    assert after.body == b"Max-size:1500 1000\r\nTile-size:512 256\r\n"
    assert after.header("ETag") != before.header("ETag")
    tile_after = get(app, "FIF=img.tif&JTL=0,0")
    assert tile_after.header("ETag") != tile_before.header("ETag")
    assert ref.decode(tile_after.body).shape == (250, 375, 3)  # the smallest level of the new image
    assert np.array_equal(image(app, "FIF=img.tif&PTL=0,0"), ref.tile_pixels(NON_SQUARE, 2, 0, 0))
    view_after = ref.decode(get(app, "FIF=img.tif&WID=150&CVT=png").body)
    assert view_after.shape[:2] == (100, 150)
    # From the smallest level at least 150 x 100 (SPEC 6): 375 x 250, stored as JPEG.
    assert ref.mean_abs_diff(view_after, ref.downscale(ref.pixels(NON_SQUARE, 2), 150, 100)) < RESAMPLE_TOLERANCE
    assert not np.array_equal(view_after, ref.decode(view_before.body))
    # A client holding the old validator gets the new image, not a 304.
    assert get(app, "FIF=img.tif&JTL=0,0", headers={"If-None-Match": tile_before.header("ETag")}).status == 200


def test_a_same_size_rewrite_is_served_fresh(tmp_path):
    """Same size, same path, same inode: only the bytes and the mtime change."""
    target = tmp_path / "img.tif"
    scene = ref.pixels(GREY, 3)[:, :, 0]  # 250 x 187 grey
    tifffile.imwrite(target, scene, tile=(128, 128), photometric="minisblack")
    app = helpers.make_app(FILESYSTEM_PREFIX=f"{tmp_path}/")
    assert np.array_equal(image(app, "FIF=img.tif&PTL=0,0")[:, :, 0], scene[:128, :128])
    size = os.path.getsize(target)
    time.sleep(0.01)
    tifffile.imwrite(target, 255 - scene, tile=(128, 128), photometric="minisblack")
    assert os.path.getsize(target) == size
    assert np.array_equal(image(app, "FIF=img.tif&PTL=0,0")[:, :, 0], 255 - scene[:128, :128])
