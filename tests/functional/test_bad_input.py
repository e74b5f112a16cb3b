"""Hostile and broken input through the WSGI app: identifiers that try to leave the root
(SPEC section 11), garbage arguments (SPEC sections 2-4), broken files (SPEC section 11).

Whatever comes in, the answer is one of the statuses of SPEC section 3, with a body that never
names a server path or shows a traceback, and the same application object keeps serving.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator

import numpy as np
import pytest
import tifffile

from tests import helpers
from tests.functional import reference as ref
from tests.functional.reference import (
    BIGTIFF,
    BROKEN_HEADER,
    BROKEN_TILE,
    BROKEN_TRUNCATED,
    DEFLATE,
    NOT_AN_IMAGE,
)


@pytest.fixture(scope="module")
def app():
    return helpers.make_app()


@pytest.fixture
def server_log(caplog) -> Iterator[pytest.LogCaptureFixture]:
    """Records of the server's logger, even if something configured it not to propagate."""
    logger = logging.getLogger("iipsrv_py")
    logger.addHandler(caplog.handler)
    with caplog.at_level(logging.INFO, logger="iipsrv_py"):
        yield caplog
    logger.removeHandler(caplog.handler)


def assert_safe_error(result: helpers.Result, status: int, *secrets: str) -> None:
    """An error of the expected status whose body leaks nothing about the server."""
    assert result.status == status, (result.status, result.body[:300])
    assert result.header("Content-Length") == str(len(result.body))
    assert result.header("Cache-Control") == "no-cache"
    text = result.body.decode("utf-8", "replace")
    for secret in (helpers.FIXTURES, helpers.ROOT, *secrets):
        assert secret not in text
    assert "Traceback" not in text and 'File "' not in text
    assert ".py" not in text


def good_tile_still_served(app) -> None:
    """The request after a failure is answered normally (pixel-exact, not just a 200)."""
    result = helpers.call(app, f"FIF={DEFLATE}&PTL=4,13")
    assert result.status == 200
    assert np.array_equal(ref.decode(result.body), ref.tile_pixels(DEFLATE, 0, 1, 1))


# -- identifiers (SPEC section 11) ------------------------------------------------------------


def test_missing_file_is_404_without_paths(app):
    result = helpers.call(app, "FIF=no/such/image.tif&JTL=0,0")
    assert_safe_error(result, 404)
    assert result.header("Content-Type").startswith("text/plain")


@pytest.fixture
def jail(tmp_path):
    """root/ (the FILESYSTEM_PREFIX) with images and symlinks; a readable image outside it."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copyfile(helpers.fixture(BIGTIFF), root / "inside.tif")
    shutil.copyfile(helpers.fixture(BIGTIFF), root / "sub" / "deeper.tif")
    shutil.copyfile(helpers.fixture(BIGTIFF), tmp_path / "outside.tif")
    shutil.copyfile(helpers.fixture(BIGTIFF), outside / "img.tif")
    os.symlink(tmp_path / "outside.tif", root / "link-out.tif")
    os.symlink("../outside.tif", root / "relative-link-out.tif")
    os.symlink(outside, root / "dir-out")
    os.symlink(root / "inside.tif", root / "link-in.tif")
    return tmp_path


@pytest.fixture
def jail_app(jail):
    return helpers.make_app(FILESYSTEM_PREFIX=f"{jail / 'root'}/")


@pytest.mark.parametrize(
    "identifier", ["inside.tif", "sub/deeper.tif", "link-in.tif", "./inside.tif", "sub//deeper.tif"]
)
def test_identifiers_inside_the_root_are_served(jail_app, identifier):
    # The control for the refusals below: the same file is reachable the right way.
    result = helpers.call(jail_app, f"FIF={identifier}&OBJ=Max-size")
    assert result.body == b"Max-size:1200 800\r\n"


@pytest.mark.parametrize(
    "identifier",
    [
        "../outside.tif",
        "..%2Foutside.tif",
        "%2E%2E%2Foutside.tif",
        "sub/../../outside.tif",
        "sub%2F..%2F..%2Foutside.tif",
        "../root/inside.tif",  # leaves and re-enters: still refused, ".." is never allowed
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
        "../../../../../../etc/passwd",
        "inside.tif%00",
        "inside.tif%00.jpg",
        "..%5Coutside.tif",
        "..\\outside.tif",
        "sub%5Cdeeper.tif",
        "link-out.tif",
        "relative-link-out.tif",
        "dir-out/img.tif",
        "sub",  # a directory
        "%2F",
        ".",
        "..",
    ],
)
def test_identifiers_leaving_the_root_are_404(jail, jail_app, identifier):
    result = helpers.call(jail_app, f"FIF={identifier}&OBJ=Max-size")
    assert_safe_error(result, 404, str(jail))


def test_absolute_paths_are_refused_even_to_real_images(jail, jail_app):
    for path in (jail / "outside.tif", jail / "root" / "inside.tif"):
        assert os.path.isfile(path)
        assert_safe_error(helpers.call(jail_app, f"FIF={path}&OBJ=Max-size"), 404, str(jail))


def test_path_prefix_that_is_not_a_directory(jail):
    # FILESYSTEM_PREFIX=/data/img_ means files named img_<identifier> in /data.
    app = helpers.make_app(FILESYSTEM_PREFIX=f"{jail / 'root'}/in")
    assert helpers.call(app, "FIF=side.tif&OBJ=Max-size").body == b"Max-size:1200 800\r\n"
    assert_safe_error(helpers.call(app, "FIF=../outside.tif&OBJ=Max-size"), 404, str(jail))


def test_suffix_is_appended(jail):
    app = helpers.make_app(FILESYSTEM_PREFIX=f"{jail / 'root'}/", FILESYSTEM_SUFFIX=".tif")
    assert helpers.call(app, "FIF=inside&OBJ=Max-size").body == b"Max-size:1200 800\r\n"
    assert_safe_error(helpers.call(app, "FIF=../outside&OBJ=Max-size"), 404, str(jail))


def test_very_long_identifier_is_refused_by_the_parameter_limit_or_404(app):
    # Past MAX_PARAMETER_LENGTH (4096 by default): 400 before any storage is asked.
    assert_safe_error(helpers.call(app, "FIF=" + "a" * 5000 + "&OBJ=Max-size"), 400)
    assert_safe_error(helpers.call(app, "FIF=" + "a/" * 3000 + "x.tif&OBJ=Max-size"), 400)
    # With the limits raised, storage answers: no such image.
    roomy = helpers.make_app(MAX_PARAMETER_LENGTH="20000", MAX_REQUEST_LENGTH="20000")
    assert_safe_error(helpers.call(roomy, "FIF=" + "a" * 5000 + "&OBJ=Max-size"), 404)
    assert_safe_error(helpers.call(roomy, "FIF=" + "a/" * 3000 + "x.tif&OBJ=Max-size"), 404)


# -- commands and arguments -------------------------------------------------------------------


@pytest.mark.parametrize("query", [f"FIF={BIGTIFF}&XYZ=1", "XYZ=1", f"FIF={BIGTIFF}&JTL=0,0&XYZ=1"])
def test_unknown_command_is_error_2_2(app, query):
    assert ref.iip_error(helpers.call(app, query)) == "2 2 XYZ"


def test_image_not_set_is_error_1_3(app):
    for query in ("JTL=0,0", "CVT=jpeg", "WID=100&CVT=png", "FIF=&JTL=0,0"):
        assert ref.iip_error(helpers.call(app, query)).split(" ")[:2] == ["1", "3"], query


MALFORMED = "2 1"
GARBAGE = [
    # (query after FIF, expected: an IIP error code, or an HTTP status for a defined fallback)
    ("WID=abc&CVT=jpeg", MALFORMED),
    ("HEI=-5&CVT=jpeg", MALFORMED),
    ("WID=1e400&CVT=jpeg", MALFORMED),
    ("WID=nan&CVT=jpeg", MALFORMED),
    ("HEI=99999999999&CVT=jpeg", MALFORMED),
    ("RGN=a,b,c,d&CVT=jpeg", MALFORMED),
    ("RGN=nan,0,1,1&CVT=jpeg", MALFORMED),
    ("RGN=0,0,inf,1&CVT=jpeg", MALFORMED),
    ("QLT=foo&CVT=jpeg", MALFORMED),
    ("QLT=jpeg:abc&CVT=jpeg", MALFORMED),
    ("QLT=gzip:5&CVT=jpeg", MALFORMED),
    ("JTL=x,y", MALFORMED),
    ("JTL=1", MALFORMED),
    ("JTL=1,2,3", MALFORMED),
    ("PTL=,", MALFORMED),
    ("SDS=a&JTL=0,0", MALFORMED),
    ("SDS=1,2,3&JTL=0,0", MALFORMED),
    ("OBJ=%%%", "3 2 %%%"),
    ("OBJ=<script>", "3 2 <script>"),
    ("CVT=!!!", 200),  # unknown format -> JPEG [compat]
    ("CVT=%00", 200),
    ("RGN=0.1,0.1&CVT=jpeg", 200),  # ignored unless four values
    ("WID=0&CVT=jpeg", 200),
    ("JTLS=1,2", MALFORMED),  # ignored, so nothing is produced
    ("JTL=99,0", 404),
    ("JTL=0,-7", 404),
]


@pytest.mark.parametrize(("query", "expected"), GARBAGE)
def test_garbage_arguments(app, query, expected):
    result = helpers.call(app, f"FIF={BIGTIFF}&{query}")
    assert result.status < 500
    if isinstance(expected, int):
        assert result.status == expected
        if expected == 200:
            assert ref.image_format(result.body) == "JPEG"
        else:
            assert_safe_error(result, expected)
    elif expected == MALFORMED:
        assert ref.iip_error(result).startswith("2 1 ")
    else:
        assert ref.iip_error(result) == expected


ODD_TEXT = ["\ud800", "\udcff", "\u00e9", "\u2028", "\x00", "\r\nX-Injected: 1", "1,\ud800", "IIP,\ud800", "\ufffd"]


@pytest.mark.parametrize("command", ["FIF", "OBJ", "WID", "HEI", "RGN", "QLT", "CVT", "JTL", "PTL", "JTLS", "SDS"])
def test_odd_characters_in_every_argument(app, command):
    """Text a WSGI server would never hand over (lone surrogates come from the --debug
    stdin), control characters and line breaks: never a 5xx, never a broken header."""
    for text in ODD_TEXT:
        for query in (f"FIF={BIGTIFF}&{command}={text}&OBJ=Max-size", f"FIF={BIGTIFF}&{command}={text}&JTL=0,0"):
            result = helpers.call(app, query)
            assert result.status < 500, (query, result.body)
            for name, value in result.header_list:
                assert "\r" not in value and "\n" not in value, (name, value)
                value.encode("latin-1")


def test_smallest_sizes_become_one_pixel(app):
    # Fit 1200 x 800 inside 1 x 1: 1 x 0.67 rounds to 1 x 1 ("zero becomes 1", SPEC 6).
    result = helpers.call(app, f"FIF={BIGTIFF}&WID=1&HEI=1&CVT=png")
    assert ref.decode(result.body).shape[:2] == (1, 1)
    result = helpers.call(app, f"FIF={BIGTIFF}&RGN=0,0,0.0001,0.0001&WID=10&CVT=png")
    assert ref.decode(result.body).shape[:2] == (10, 10)


def test_malformed_error_echoes_the_argument_safely(app):
    # Control characters from the query never reach the body.
    result = helpers.call(app, f"FIF={BIGTIFF}&WID=%0d%0aX-Injected:%201&CVT=jpeg")
    payload = ref.iip_error(result)
    assert "\r" not in payload and "\n" not in payload
    assert "x-injected" not in result.headers


def test_oversized_post_body_is_413(app):
    body = b"FIF=" + b"a" * 100_000 + b"&OBJ=Max-size"
    result = helpers.call(app, "", method="POST", body=body)
    assert_safe_error(result, 413)


@pytest.mark.parametrize(
    "headers",
    [
        {"If-Modified-Since": "\x00garbage"},
        {"If-None-Match": "\x00, ,,"},
        {"If-Modified-Since": "Mon, 99 Foo 99999 99:99:99 GMT"},
    ],
)
def test_garbage_validators_are_ignored(app, headers):
    result = helpers.call(app, f"FIF={BIGTIFF}&JTL=0,0", headers=headers)
    assert result.status == 200
    assert result.body == helpers.call(app, f"FIF={BIGTIFF}&JTL=0,0").body


# -- broken files (SPEC section 11) -----------------------------------------------------------


def test_not_an_image_is_415(app):
    for query in ("OBJ=Max-size", "JTL=0,0", "WID=10&CVT=jpeg"):
        assert_safe_error(helpers.call(app, f"FIF={NOT_AN_IMAGE}&{query}"), 415)
    good_tile_still_served(app)


def test_corrupt_header_is_415_and_the_app_keeps_serving(app):
    for query in ("OBJ=Max-size", "JTL=0,0", "CVT=jpeg"):
        assert_safe_error(helpers.call(app, f"FIF={BROKEN_HEADER}&{query}"), 415)
        good_tile_still_served(app)


def test_truncated_tiff(app):
    with tifffile.TiffFile(helpers.fixture(BROKEN_TRUNCATED)) as tif:
        page = tif.pages[0]
        size = os.path.getsize(helpers.fixture(BROKEN_TRUNCATED))
        lost = [i for i, (o, n) in enumerate(zip(page.dataoffsets, page.databytecounts, strict=True)) if o + n > size]
    assert lost, "the fixture must have tiles past the end of the file"
    info = helpers.call(app, f"FIF={BROKEN_TRUNCATED}&OBJ=Max-size&OBJ=Resolution-number")
    if info.status == 415:
        return  # refusing the whole file is allowed too
    assert info.status == 200
    assert ref.lines(info)[0] == f"Max-size:{page.imagewidth} {page.imagelength}"
    res = int(ref.lines(info)[1].split(":")[1]) - 1  # full resolution
    # A tile whose bytes were cut off: 500 (a broken tile), never garbage with a 200.
    assert_safe_error(helpers.call(app, f"FIF={BROKEN_TRUNCATED}&PTL={res},{lost[-1]}"), 500)
    assert_safe_error(helpers.call(app, f"FIF={BROKEN_TRUNCATED}&JTL={res},{lost[-1]}"), 500)
    good_tile_still_served(app)
    # A tile that is wholly in the file is still served, exactly.
    intact = helpers.call(app, f"FIF={BROKEN_TRUNCATED}&PTL={res},0")
    assert intact.status == 200
    assert np.array_equal(ref.decode(intact.body), ref.decode_stored_tile(BROKEN_TRUNCATED, 0))


BROKEN_TILE_INDEX = 5  # level 0 of a 4 x 4 tile grid: column 1, row 1


@pytest.mark.parametrize("command", ["JTL", "PTL", "TTL"])
def test_broken_tile_is_500_and_its_neighbours_are_served(app, command):
    levels = ref.levels(BROKEN_TILE)
    res = len(levels) - 1
    for _ in range(2):  # the failure is not cached as a success
        assert_safe_error(helpers.call(app, f"FIF={BROKEN_TILE}&{command}={res},{BROKEN_TILE_INDEX}"), 500)
    for index in (4, 6, 1, 9):
        result = helpers.call(app, f"FIF={BROKEN_TILE}&PTL={res},{index}")
        assert result.status == 200
        assert np.array_equal(ref.decode(result.body), ref.decode_stored_tile(BROKEN_TILE, index)), index
    good_tile_still_served(app)


def test_views_touching_a_broken_tile_fail_and_others_do_not(app):
    # The broken tile covers x 256-512, y 256-512 of 1024 x 1024 at full resolution.
    touching = helpers.call(app, f"FIF={BROKEN_TILE}&RGN=0.25,0.25,0.25,0.25&CVT=jpeg")
    assert_safe_error(touching, 500)
    clear = helpers.call(app, f"FIF={BROKEN_TILE}&RGN=0,0,0.25,0.25&CVT=png")
    assert clear.status == 200
    assert ref.decode(clear.body).shape[:2] == (256, 256)
    # A small view comes from a reduced level, whose tiles are intact.
    small = helpers.call(app, f"FIF={BROKEN_TILE}&WID=128&CVT=jpeg")
    assert small.status == 200
    assert ref.decode(small.body).shape[:2] == (128, 128)


# -- logging ----------------------------------------------------------------------------------


def test_errors_are_logged(app, server_log):
    cases = [
        ("FIF=missing.tif&JTL=0,0", 404, logging.WARNING),
        (f"FIF={BIGTIFF}&XYZ=1", 400, logging.WARNING),
        (f"FIF={NOT_AN_IMAGE}&JTL=0,0", 415, logging.WARNING),
        (f"FIF={BROKEN_TILE}&PTL=2,{BROKEN_TILE_INDEX}", 500, logging.ERROR),
    ]
    for query, status, level in cases:
        server_log.clear()
        assert helpers.call(app, query).status == status
        records = [r for r in server_log.records if r.levelno >= logging.WARNING]
        assert records, query
        assert max(r.levelno for r in records) >= level
        assert any(str(status) in r.getMessage() for r in records), [r.getMessage() for r in records]
    # The 500's log record keeps the cause, which the client never sees.
    server_log.clear()
    helpers.call(app, f"FIF={BROKEN_TILE}&PTL=2,{BROKEN_TILE_INDEX}")
    assert any(r.exc_info for r in server_log.records if r.levelno >= logging.ERROR)


@pytest.mark.parametrize(
    ("name", "segment_bytes"),
    [
        ("tif-rgb-3000x2000-5lvl-256tile-deflate.tif", 256 * 256 * 3),  # one tile
        ("tif-rgb-600x400-strip16-deflate.tif", 600 * 16 * 3),  # one compressed strip
    ],
)
def test_segments_larger_than_the_limit_are_415_at_open(monkeypatch, name, segment_bytes):
    """A file declaring tiles or compressed strips too large to decode is refused when opened
    (the limit is lowered here to just below the fixture's own segment size)."""
    from iipsrv_py.sources import base

    monkeypatch.setattr(base, "MAX_DECODE_UNIT_BYTES", segment_bytes - 1)
    app = helpers.make_app()
    assert helpers.call(app, f"FIF={name}&OBJ=Max-size").status == 415
    monkeypatch.setattr(base, "MAX_DECODE_UNIT_BYTES", segment_bytes)
    assert helpers.call(helpers.make_app(), f"FIF={name}&OBJ=Max-size").status == 200


def test_uncompressed_strips_have_no_segment_limit(monkeypatch):
    """Uncompressed strips are read row by row, so their size does not matter: only the
    virtual tile read from them counts (the limit is lowered to one 256 x 256 RGB tile, less
    than the fixture's 600 x 400 strip)."""
    from iipsrv_py.sources import base

    monkeypatch.setattr(base, "MAX_DECODE_UNIT_BYTES", 256 * 256 * 3)
    r = helpers.call(helpers.make_app(), "FIF=tif-rgb-600x400-strip400-none.tif&JTL=0,0")
    assert r.status == 200
