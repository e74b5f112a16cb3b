"""The IIP data commands through the WSGI app: PFL (JSON line profile), SPECTRA (XML spectrum of a
pixel across a stack's pages) and TIL (several JPEG tiles in one response).

Expected values come from tifffile decoding the fixtures (``reference.pixels`` and the pages
read here); TIL's tiles are compared with the server's own JTL answers, which other tests check
against the stored tiles.  Hostile arguments get the SPEC's statuses, and the app keeps
answering after each.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from iipsrv_py.handlers import iip_data
from tests import helpers
from tests.functional import reference as ref

GREY = ref.GREY  # 2000x1500, 4 levels, 256 tiles, uncompressed
RGB = ref.DEFLATE  # 3000x2000, 5 levels, 256 tiles, deflate
GREY16 = "tif-grey16-600x400-2lvl-256tile-deflate.tif"
STACK = "tif-stack-3page-600x400-2lvl-256tile-deflate-subifd-pagenames.tif"
STACK_NAMES = ("Infrared", "Visible", "Ultraviolet")
UNNAMED_STACK = "tif-stack-2page-600x400-2lvl-256tile-lzw-chain.tif"


@pytest.fixture(scope="module")
def app():
    return helpers.make_app()


def profile(app, query: str) -> list[int]:
    result = helpers.call(app, query)
    assert result.status == 200, (query, result.body[:200])
    assert result.header("Content-Type") == "application/json"
    document = json.loads(result.body)
    assert list(document) == ["profile"]
    return document["profile"]


def spectrum(app, query: str) -> list[tuple[str, float]]:
    result = helpers.call(app, query)
    assert result.status == 200, (query, result.body[:200])
    assert result.header("Content-Type") == "application/xml"
    assert result.body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<spectra>')
    root = ET.fromstring(result.body)
    assert root.tag == "spectra"
    points = []
    for point in root:
        assert point.tag == "point"
        assert [child.tag for child in point] == ["wavelength", "reflectance"]
        points.append((point.findtext("wavelength") or "", float(point.findtext("reflectance") or "nan")))
    return points


def page_pixels(name: str, page: int, level: int) -> np.ndarray:
    """Level ``level`` (0 = full size) of stack page ``page``, decoded by tifffile: reduced
    levels are the page's SubIFDs, or follow it in the IFD chain."""
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        top = [p for p in tif.pages if not p.is_reduced]
        full = top[page]
        if full.subifds:
            array = [full, *full.pages][level].asarray()
        else:
            array = tif.pages[full.index + level].asarray()
    return array if array.ndim == 3 else array[:, :, None]


def resolution(name: str, level: int) -> int:
    """IIP resolution number of a stored level (0 = full size)."""
    return len(ref.levels(name)) - 1 - level


# -- PFL -----------------------------------------------------------------------------------------


def test_horizontal_profile_is_the_reference_row(app) -> None:
    level = 1
    expected = ref.pixels(GREY, level)[300, 10:900, 0]
    values = profile(app, f"FIF={GREY}&PFL={resolution(GREY, level)}:10,300-900,300")
    assert values == expected.tolist()


def test_vertical_profile_crosses_tiles_and_reaches_the_edge(app) -> None:
    height = ref.levels(GREY)[0].height
    expected = ref.pixels(GREY, 0)[:, 777, 0]
    values = profile(app, f"FIF={GREY}&PFL={resolution(GREY, 0)}:777,0-777,{height}")
    assert len(values) == height
    assert values == expected.tolist()


def test_rgb_profile_gives_the_first_channel(app) -> None:
    level = 2
    row = ref.pixels(RGB, level)[123, 40:700]
    assert not np.array_equal(row[:, 0], row[:, 1])  # the channel chosen is visible
    assert profile(app, f"FIF={RGB}&PFL={resolution(RGB, level)}:40,123-700,123") == row[:, 0].tolist()


def test_reversed_diagonal_and_single_point_profiles(app) -> None:
    full = ref.pixels(GREY, 0)[:, :, 0]
    res = resolution(GREY, 0)
    # Right to left: from x1 down to (not including) x2.
    assert profile(app, f"FIF={GREY}&PFL={res}:600,40-500,40") == full[40, 600:500:-1].tolist()
    # A 45-degree diagonal visits (i, i).
    diagonal = [int(full[250 + i, 230 + i]) for i in range(300)]
    assert profile(app, f"FIF={GREY}&PFL={res}:230,250-530,550") == diagonal
    # A steep line: one value per row, the column rounded to the nearest pixel of the line.
    steep = [int(full[100 + i, 50 + round(i / 4)]) for i in range(400)]
    assert profile(app, f"FIF={GREY}&PFL={res}:50,100-150,500") == steep
    assert profile(app, f"FIF={GREY}&PFL={res}:1999,1499-1999,1499") == [int(full[1499, 1999])]


def test_deep_samples_are_profiled_as_the_8_bit_values_shown(app) -> None:
    row = page_pixels(GREY16, 0, 0)[200, :, 0].astype(np.float64)
    expected = np.rint(row * 255 / 65535).astype(int)
    assert profile(app, f"FIF={GREY16}&PFL=1:0,200-600,200") == expected.tolist()


def test_profile_follows_the_stack_page_sds_selects(app) -> None:
    for page in range(3):
        expected = page_pixels(STACK, page, 0)[50, 100:400, 0]
        assert profile(app, f"FIF={STACK}&SDS={page}&PFL=1:100,50-400,50") == expected.tolist()


def test_profile_is_cached_and_revalidated_like_an_image(app) -> None:
    query = f"FIF={GREY}&PFL=2:0,0-100,0"
    first = helpers.call(app, query)
    etag = first.header("ETag")
    assert first.status == 200 and etag
    assert first.header("Last-Modified")
    again = helpers.call(app, query)
    assert again.body == first.body and again.header("ETag") == etag
    assert helpers.call(app, query, headers={"If-None-Match": etag}).status == 304
    assert helpers.call(app, f"FIF={GREY}&PFL=2:0,0-101,0").header("ETag") != etag


# -- SPECTRA -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "tile", "x", "y"), [(0, 0, 5, 7), (0, 4, 10, 20), (0, 5, 87, 143), (1, 1, 43, 199)])
def test_spectrum_is_the_pixel_of_each_named_page(app, level: int, tile: int, x: int, y: int) -> None:
    lvl = ref.levels(STACK)[level]
    px, py, _, _ = lvl.tile_box(tile)
    points = spectrum(app, f"FIF={STACK}&SPECTRA={resolution(STACK, level)},{tile},{x},{y}")
    assert [name for name, _ in points] == list(STACK_NAMES)
    for page, (_, reflectance) in enumerate(points):
        value = int(page_pixels(STACK, page, level)[py + y, px + x, 0])
        assert reflectance == pytest.approx(value / 255, abs=5e-7)


def test_unnamed_pages_are_numbered(app) -> None:
    points = spectrum(app, f"FIF={UNNAMED_STACK}&SPECTRA=1,1,30,40")
    assert [name for name, _ in points] == ["0", "1"]
    for page, (_, reflectance) in enumerate(points):
        assert round(reflectance * 255) == int(page_pixels(UNNAMED_STACK, page, 0)[40, 256 + 30, 0])


def test_sequence_bands_are_its_horizontal_views(tmp_path, fixtures: str) -> None:
    members = {0: ref.SAMPLE_RANGE, 10: GREY}
    for angle, name in members.items():
        shutil.copy(os.path.join(fixtures, name), tmp_path / f"bands_pyr_{angle:03d}_090.tif")
    app = helpers.make_app(FILESYSTEM_PREFIX=f"{tmp_path}/")
    points = spectrum(app, "FIF=bands&SPECTRA=0,0,5,6")
    assert [name for name, _ in points] == ["0", "10"]
    for (_, reflectance), name in zip(points, members.values(), strict=True):
        smallest = len(ref.levels(name)) - 1
        assert round(reflectance * 255) == int(ref.pixels(name, smallest)[6, 5, 0])


def test_a_single_image_has_a_one_point_spectrum(app) -> None:
    # As iipsrv: the image is its only band, named by its view 0.
    points = spectrum(app, f"FIF={GREY}&SPECTRA=3,1,2,3")
    assert len(points) == 1 and points[0][0] == "0"
    assert round(points[0][1] * 255) == int(ref.pixels(GREY, 0)[3, 256 + 2, 0])


# -- TIL -----------------------------------------------------------------------------------------

TILE_HEAD = re.compile(rb"Tile,(\d+),(\d+),0/(\d+):")


def til_parts(body: bytes) -> list[tuple[int, int, bytes]]:
    """(resolution, tile, JPEG bytes) of each part of a TIL body, checking the framing."""
    parts, at = [], 0
    while at < len(body):
        head = TILE_HEAD.match(body, at)
        assert head, body[at : at + 40]
        res, number, length = (int(g) for g in head.groups())
        start = head.end()
        assert body[start : start + 8] == b"\x02\x00\x00\x00\x00\x11\x00\x00"
        jpeg = body[start + 8 : start + length]
        assert body[start + length : start + length + 2] == b"\r\n"
        parts.append((res, number, jpeg))
        at = start + length + 2
    return parts


@pytest.mark.parametrize(
    ("name", "res", "start", "end"),
    [
        (ref.JPEG_TABLES, 4, 13, 26),  # interior tiles: sent as stored, as JTL sends them
        (GREY, 3, 5, 39),  # re-encoded, the last column an edge
        (GREY, 1, 2, 2),  # one tile
        (RGB, 3, 4, 8),  # the end tile left of the start one: the same rectangle
    ],
)
def test_til_sends_the_rectangle_column_by_column_as_jtl_would(app, name: str, res: int, start: int, end: int) -> None:
    lvl = ref.levels(name)[len(ref.levels(name)) - 1 - res]
    (r0, c0), (r1, c1) = divmod(start, lvl.tiles_x), divmod(end, lvl.tiles_x)
    expected = [c + r * lvl.tiles_x for c in range(min(c0, c1), max(c0, c1) + 1) for r in range(r0, r1 + 1)]
    result = helpers.call(app, f"FIF={name}&TIL={res},{start}-{end}")
    assert result.status == 200, result.body[:200]
    assert result.header("Content-Type") == "application/vnd.netfpx"
    parts = til_parts(result.body)
    assert [number for _, number, _ in parts] == expected
    for part_res, number, jpeg in parts:
        assert part_res == res
        assert jpeg == helpers.call(app, f"FIF={name}&JTL={res},{number}").body, number
        _, _, w, h = lvl.tile_box(number)
        assert ref.decode(jpeg).shape[:2] == (h, w)


def test_til_keeps_quality_and_page(app) -> None:
    body = helpers.call(app, f"FIF={STACK}&SDS=1&QLT=40&TIL=1,0-4").body
    for _, number, jpeg in til_parts(body):
        assert jpeg == helpers.call(app, f"FIF={STACK}&SDS=1&QLT=40&JTL=1,{number}").body


def test_til_tiles_are_processed_like_jtl(app) -> None:
    body = helpers.call(app, f"FIF={RGB}&GAM=2&INV=1&TIL=1,0-1").body
    parts = til_parts(body)
    assert len(parts) == 2
    for _, number, jpeg in parts:
        assert jpeg == helpers.call(app, f"FIF={RGB}&GAM=2&INV=1&JTL=1,{number}").body
        assert jpeg != helpers.call(app, f"FIF={RGB}&JTL=1,{number}").body


def test_til_past_the_cap_is_413(app, monkeypatch) -> None:
    monkeypatch.setattr(iip_data, "MAX_TILES", 12)
    assert len(til_parts(helpers.call(app, f"FIF={RGB}&TIL=4,0-11").body)) == 12  # 12 columns x 1 row
    assert helpers.call(app, f"FIF={RGB}&TIL=4,0-23").status == 413  # 12 x 2


def test_the_default_cap_allows_a_whole_level(app) -> None:
    lvl = ref.levels(GREY)[0]
    count = lvl.tiles_x * lvl.tiles_y
    assert count <= iip_data.MAX_TILES
    parts = til_parts(helpers.call(app, f"FIF={GREY}&TIL={resolution(GREY, 0)},0-{count - 1}").body)
    assert len(parts) == count


# -- hostile input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "status", "iip"),
    [
        (f"FIF={GREY}&PFL=9:0,0-99999,0", 404, None),  # resolution out of range
        (f"FIF={GREY}&PFL=-1:0,0-5,0", 404, None),
        (f"FIF={GREY}&PFL=0:0,0-99999,0", 404, None),  # beyond the smallest level
        (f"FIF={GREY}&PFL=3:2000,0-2000,5", 404, None),  # the start is not a pixel
        (f"FIF={GREY}&PFL=3:0,1500-5,1500", 404, None),
        (f"FIF={GREY}&PFL=3:0,0-0,1501", 404, None),  # the end past the edge
        (f"FIF={GREY}&PFL=3:0,0-0,{10**12}", 400, "2 1"),  # no such number
        (f"FIF={GREY}&PFL=a", 400, "2 1 PFL=a"),
        (f"FIF={GREY}&PFL=1:1,2", 400, "2 1 PFL=1:1,2"),
        ("PFL=1:1,2-3,4", 400, "1 3 PFL"),
        (f"FIF={STACK}&SPECTRA=1,99,0,0", 404, None),  # tile out of range
        (f"FIF={STACK}&SPECTRA=1,-1,0,0", 404, None),
        (f"FIF={STACK}&SPECTRA=9,0,0,0", 404, None),  # resolution out of range
        (f"FIF={STACK}&SPECTRA=1,0,256,0", 404, None),  # x outside the tile
        (f"FIF={STACK}&SPECTRA=1,0,0,-1", 404, None),
        (f"FIF={STACK}&SPECTRA=1,5,88,0", 404, None),  # outside the cropped edge tile
        (f"FIF={GREY}&SPECTRA=3,0,999,0", 404, None),  # a single image, outside the tile
        (f"FIF={STACK}&SPECTRA=1,2,3", 400, "2 1 SPECTRA=1,2,3"),
        ("SPECTRA=1,2,3,4", 400, "1 3 SPECTRA"),
        (f"FIF={GREY}&TIL=99,0-5", 404, None),
        (f"FIF={GREY}&TIL=3,0-99999999", 404, None),  # an enormous range beyond the level
        (f"FIF={GREY}&TIL=3,48", 404, None),  # 8 x 6 tiles
        (f"FIF={GREY}&TIL=0,5-2", 400, "2 1 TIL=0,5-2"),  # end before start
        (f"FIF={GREY}&TIL=0,-1", 400, "2 1 TIL=0,-1"),
        ("TIL=0,0", 400, "1 3 TIL"),
    ],
)
def test_hostile_arguments_get_the_spec_status_and_the_app_keeps_answering(
    app, query: str, status: int, iip: str | None
) -> None:
    result = helpers.call(app, query)
    assert result.status == status, (query, result.body[:200])
    if iip is not None:
        assert ref.iip_error(result).startswith(iip)
    else:
        assert result.header("Content-Type") == "text/plain; charset=utf-8"
        assert b"/" not in result.body  # no server path
    assert helpers.call(app, f"FIF={GREY}&PFL=3:0,0-3,0").status == 200
    assert helpers.call(app, f"FIF={STACK}&SPECTRA=1,0,0,0").status == 200
    assert helpers.call(app, f"FIF={GREY}&TIL=3,0-1").status == 200


number = st.integers(-2, 40) | st.integers(0, 3200) | st.sampled_from([2**31, -(2**31)])
data_command = st.one_of(
    st.builds("PFL={}:{},{}-{},{}".format, number, number, number, number, number),
    st.builds("SPECTRA={},{},{},{}".format, number, number, number, number),
    st.builds("TIL={},{}-{}".format, number, number, number),
    st.builds("TIL={},{}".format, number, number),
)


@given(
    image=st.sampled_from([GREY, STACK, ref.JPEG_TABLES, GREY16]),
    prefix=st.sampled_from(["", "SDS=1&", "QLT=30&", "LYR=1&", "SDS=7&"]),
    command=data_command,
    method=st.sampled_from(["GET", "HEAD", "POST"]),
)
@settings(max_examples=150, deadline=None)
def test_data_commands_never_answer_5xx(app, image: str, prefix: str, command: str, method: str) -> None:
    result = helpers.call(app, f"FIF={image}&{prefix}{command}", method=method)
    assert result.status in (200, 400, 404, 413), (command, result.status, result.body[:200])
    if method != "HEAD":
        assert result.header("Content-Length") == str(len(result.body))
