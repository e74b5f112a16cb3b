"""Through a real nginx (the shipped conf/nginx/iipsrv_py.conf) to ``iipsrv-py --bind``.

Expected values are computed independently from the same files with tifffile, and images the
server sends are decoded with Pillow.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from email.utils import formatdate

import numpy as np
import pytest
import requests

from iipsrv_py import __version__
from iipsrv_py.app import MAX_POST_BODY
from tests import helpers
from tests.integration import reference, servers

pytestmark = pytest.mark.integration

TABLES = "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif"
NON_SQUARE = "tif-rgb-1500x1000-3lvl-512x256tile-jpeg.tif"
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Accept, Content-Type, X-Requested-With, If-Modified-Since",
    "Access-Control-Max-Age": "86400",
}
ALLOWED = {"GET", "HEAD", "POST", "OPTIONS"}
ECHO_APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "echo_fcgi.py")


def mtime_http_date(name: str) -> str:
    return formatdate(int(os.stat(helpers.fixture(name)).st_mtime), usegmt=True)


def assert_cors(response: requests.Response) -> None:
    for name, value in CORS.items():
        assert response.headers.get(name) == value, f"{name} on a {response.status_code} response"


def assert_workers_unchanged(stack: servers.Stack, before: list[int]) -> None:
    assert stack.server.workers() == before, "a worker died or was replaced"
    assert "exited" not in stack.server.log()


# -- the shipped nginx configuration ----------------------------------------------------------------


def test_nginx_passes_what_the_server_reads(workdir: str, engine: str) -> None:
    """The CGI variables of conf/nginx/iipsrv_py.conf, as the WSGI application receives them
    through iipsrv_py's own FastCGI pool (an application that echoes its environ)."""
    port = servers.free_port()
    with contextlib.ExitStack() as cleanup:
        echo = servers.Managed(
            "echo-fcgi",
            [sys.executable, ECHO_APP, f"127.0.0.1:{port}", engine],
            workdir,
            servers.base_env(PYTHONPATH=helpers.ROOT),
        )
        cleanup.callback(echo.stop)
        echo.wait_accepting(("127.0.0.1", port))
        nginx = servers.Nginx(workdir, f"127.0.0.1:{port}", servers.keeps_connections(engine))
        cleanup.callback(nginx.stop)
        session = cleanup.enter_context(servers.http_session())
        query = "FIF=dir/a%20b.tif&WID=200&CVT=jpeg"

        got = session.get(
            nginx.url(query), headers={"If-None-Match": '"x"', "Proxy": "http://evil.example"}, timeout=10
        ).json()
        posted = session.post(
            nginx.url(), data="FIF=a.tif&OBJ=Max-size", headers={"Content-Type": "text/plain"}, timeout=10
        ).json()

    assert got["QUERY_STRING"] == query
    assert got["REQUEST_METHOD"] == "GET"
    assert got["REQUEST_URI"] == f"{servers.FCGI_PATH}?{query}"
    assert got["SCRIPT_NAME"] == servers.FCGI_PATH
    assert got["PATH_INFO"] == ""
    assert got["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert got["SERVER_NAME"] == "localhost"
    assert got["SERVER_PORT"] == str(nginx.port)
    assert got["HTTP_HOST"] == f"127.0.0.1:{nginx.port}", "the Host header with its port (IIIF ids)"
    assert "HTTPS" not in got, "HTTPS is only sent when on"
    assert got["HTTP_IF_NONE_MATCH"] == '"x"'
    assert got.get("HTTP_PROXY", "") == "", "httpoxy"
    assert posted["REQUEST_METHOD"] == "POST"
    assert posted["QUERY_STRING"] == ""
    assert posted["CONTENT_TYPE"] == "text/plain"
    assert posted["CONTENT_LENGTH"] == str(len("FIF=a.tif&OBJ=Max-size"))
    assert posted["body"] == "FIF=a.tif&OBJ=Max-size"


# -- OBJ metadata ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        TABLES,
        "tif-rgb-3000x2000-5lvl-256tile-jpeg-subifd.tif",
        "tif-rgb-3000x2000-4lvl-div3-256tile-lzw.tif",
        "tif-grey-2000x1500-4lvl-256tile-none.tif",
        NON_SQUARE,
        "tif-rgb-1200x800-3lvl-128tile-jpeg-bigtiff.tif",
    ],
)
def test_obj_metadata_matches_the_file(stack: servers.Stack, name: str) -> None:
    levels = reference.levels(name)
    full = levels[-1]
    response = stack.get(f"FIF={name}&OBJ=IIP,1.0&OBJ=Basic-info&OBJ=Resolutions&OBJ=Tile-size")

    assert response.status_code == 200
    assert response.headers["IIP"] == "1.0"
    assert response.headers["Content-Type"] == "application/vnd.netfpx"
    body = response.content.decode("ascii")
    assert body.endswith("\r\n")
    lines = body[:-2].split("\r\n")
    planes = "3 3 0 1 2" if reference.samples_per_pixel(name) == 3 else "1 1 0"
    assert lines == [
        "IIP-server:3.65",
        f"Max-size:{full.width} {full.height}",
        f"Resolution-number:{len(levels)}",
        f"Colorspace,0-{len(levels) - 1},0:0 0 {planes}",
        "Resolutions:" + ",".join(f"{lvl.width} {lvl.height}" for lvl in levels),
        f"Tile-size:{full.tile_width} {full.tile_height}",
    ]


def test_obj_response_headers(stack: servers.Stack) -> None:
    query = f"FIF={TABLES}&OBJ=IIP,1.0&OBJ=Basic-info&OBJ=Resolutions"
    responses = [stack.get(query) for _ in range(4)]
    first = responses[0]

    assert first.status_code == 200
    assert first.headers["Server"] == f"iipsrv-py/{__version__}"
    assert first.headers["X-Powered-By"] == "IIPImage"
    assert int(first.headers["Content-Length"]) == len(first.content)
    assert first.headers["Last-Modified"] == mtime_http_date(TABLES)
    assert first.headers["Cache-Control"] == "max-age=86400"
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 2, "a strong ETag"
    assert_cors(first)
    # Repeated (by whichever worker takes it), a request has the same validator and bytes.
    assert {r.headers["ETag"] for r in responses} == {etag}
    assert {r.content for r in responses} == {first.content}
    other = stack.get(f"FIF={TABLES}&OBJ=Max-size")
    assert other.headers["ETag"] != etag


def test_post_form_is_a_request(stack: servers.Stack) -> None:
    """CONTENT_TYPE and CONTENT_LENGTH reach the server: a POSTed form is the request string."""
    response = stack.request(
        "POST",
        data=f"FIF={TABLES}&OBJ=Max-size",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert response.content == b"Max-size:3000 2000\r\n"


def test_posted_form_over_the_body_limit_is_413(stack: servers.Stack) -> None:
    """The request body limit is the application's (MAX_POST_BODY) under either engine: one byte
    over it is refused with the application's own 413 (CORS block included); at it, served."""
    form = f"FIF={TABLES}&OBJ=Max-size&".encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    at_limit = stack.request("POST", data=helpers.padded_form(form, MAX_POST_BODY), headers=headers)
    over = stack.request("POST", data=helpers.padded_form(form, MAX_POST_BODY + 1), headers=headers)

    assert (at_limit.status_code, at_limit.content) == (200, b"Max-size:3000 2000\r\n")
    assert over.status_code == 413
    assert over.headers["Server"] == f"iipsrv-py/{__version__}"
    assert_cors(over)
    # The connection nginx used for it is not left out of step: the next request is served.
    assert stack.get(f"FIF={TABLES}&OBJ=Max-size").status_code == 200


# -- tiles -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "resolution", "tile"), [(TABLES, 4, 27), (TABLES, 4, 0), (TABLES, 3, 7), (TABLES, 2, 0)]
)
def test_interior_jpeg_tile_is_passed_through(stack: servers.Stack, name: str, resolution: int, tile: int) -> None:
    expected = reference.tile_pixels(name, resolution, tile)
    level = reference.levels(name)[resolution]
    assert expected.shape[:2] == (level.tile_height, level.tile_width), "the test needs a whole tile"

    response = stack.get(f"FIF={name}&JTL={resolution},{tile}")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    assert int(response.headers["Content-Length"]) == len(response.content)
    # Sent as stored: decoding it gives exactly the stored tile's pixels.
    assert np.array_equal(reference.decode(response.content, "JPEG"), expected)


def test_non_square_interior_tile_is_passed_through(stack: servers.Stack) -> None:
    level = reference.levels(NON_SQUARE)[2]
    assert (level.tile_width, level.tile_height) == (512, 256)
    response = stack.get(f"FIF={NON_SQUARE}&JTL=2,1")
    assert response.status_code == 200
    assert np.array_equal(reference.decode(response.content, "JPEG"), reference.tile_pixels(NON_SQUARE, 2, 1))


@pytest.mark.parametrize(
    ("name", "resolution", "tile"),
    [(TABLES, 4, 11), (TABLES, 4, 84), (TABLES, 4, 95), (TABLES, 1, 1), (TABLES, 0, 0), (NON_SQUARE, 2, 11)],
)
def test_edge_tile_is_cropped(stack: servers.Stack, name: str, resolution: int, tile: int) -> None:
    level = reference.levels(name)[resolution]
    expected = reference.tile_pixels(name, resolution, tile)
    assert expected.shape[:2] != (level.tile_height, level.tile_width), "the test needs an edge tile"

    response = stack.get(f"FIF={name}&JTL={resolution},{tile}")

    assert response.status_code == 200
    got = reference.decode(response.content, "JPEG")
    assert got.shape == expected.shape
    # Re-encoded at JPEG_QUALITY (75): no further from the stored pixels than any JPEG of them
    # at that quality.  Fine checks in a corner tile cost a JPEG about 5 levels on average,
    # smooth tiles under 3; a crop off by one pixel or a padded tile would be far worse.
    assert reference.mean_abs_diff(got, expected) <= reference.jpeg_error(expected, 75) + 0.5


@pytest.mark.parametrize(
    "query",
    ["JTL=4,96", "JTL=5,0", "JTL=4,-1", "JTL=-1,0", "PFL=9:0,0-99999,0", "TIL=99,0-5", "SPECTRA=4,0,999,0"],
)
def test_tile_out_of_range_is_404(stack: servers.Stack, query: str) -> None:
    response = stack.get(f"FIF={TABLES}&{query}")
    assert response.status_code == 404
    assert_cors(response)


# -- CVT -------------------------------------------------------------------------------------------


CVT_CASES = [
    (TABLES, "WID=600", (600, 400)),
    (TABLES, "HEI=300", (450, 300)),
    (TABLES, "WID=500&HEI=500", (500, 333)),
    ("tif-rgb-3000x2000-4lvl-div3-256tile-lzw.tif", "WID=800", (800, 533)),
    ("tif-grey-2000x1500-4lvl-256tile-none.tif", "WID=400", (400, 300)),
]


def full_resolution(name: str) -> np.ndarray:
    return reference.level_pixels(name, len(reference.levels(name)) - 1)


@pytest.mark.parametrize(("name", "size", "expected"), CVT_CASES)
def test_cvt_jpeg_is_a_good_downscale(stack: servers.Stack, name: str, size: str, expected: tuple[int, int]) -> None:
    full = full_resolution(name)
    width, height = expected

    response = stack.get(f"FIF={name}&{size}&CVT=jpeg")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    stem = os.path.splitext(name)[0]
    assert response.headers["Content-Disposition"] == f'inline; filename="{stem}_{width}x{height}.jpg"'
    got = reference.decode(response.content, "JPEG")
    assert got.shape == (height, width, full.shape[2])
    # A Lanczos downscale of the full image, read with tifffile, then JPEG at the server's
    # default quality (75): the server may differ from it by JPEG's own error on this content
    # (3.6 to 4.1 here: stripes and fine checks) plus half a level for its resampling from a
    # stored, already reduced level.  test_cvt_png measures the resampling alone.
    expected_pixels = reference.lanczos(full, width, height)
    tolerance = reference.jpeg_error(expected_pixels, 75) + 0.5
    assert reference.mean_abs_diff(got, expected_pixels) < tolerance


@pytest.mark.parametrize(("name", "size", "expected"), CVT_CASES)
def test_cvt_png_is_a_good_downscale(stack: servers.Stack, name: str, size: str, expected: tuple[int, int]) -> None:
    full = full_resolution(name)
    width, height = expected

    response = stack.get(f"FIF={name}&{size}&CVT=png")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    got = reference.decode(response.content, "PNG")
    assert got.shape == (height, width, full.shape[2])
    assert reference.mean_abs_diff(got, reference.lanczos(full, width, height)) < 3


# -- conditional requests and methods --------------------------------------------------------------


def test_if_none_match_gives_304(stack: servers.Stack) -> None:
    query = f"FIF={TABLES}&JTL=3,7"
    first = stack.get(query)
    etag = first.headers["ETag"]

    again = stack.get(query, headers={"If-None-Match": etag})

    assert again.status_code == 304
    assert again.headers["ETag"] == etag
    assert again.content == b""
    assert_cors(again)
    assert stack.get(query, headers={"If-None-Match": '"something-else"'}).status_code == 200
    # If-None-Match decides when present, even against a matching If-Modified-Since.
    both = stack.get(
        query, headers={"If-None-Match": '"something-else"', "If-Modified-Since": first.headers["Last-Modified"]}
    )
    assert both.status_code == 200
    assert both.content == first.content


def test_if_modified_since(stack: servers.Stack) -> None:
    query = f"FIF={TABLES}&OBJ=Max-size"
    first = stack.get(query)
    last_modified = first.headers["Last-Modified"]
    assert last_modified == mtime_http_date(TABLES)

    same = stack.get(query, headers={"If-Modified-Since": last_modified})
    assert same.status_code == 304
    assert same.content == b""
    assert_cors(same)

    older = formatdate(int(os.stat(helpers.fixture(TABLES)).st_mtime) - 86400, usegmt=True)
    modified = stack.get(query, headers={"If-Modified-Since": older})
    assert modified.status_code == 200
    assert modified.content == first.content


def test_head_has_headers_and_no_body(stack: servers.Stack) -> None:
    query = f"FIF={TABLES}&JTL=4,27"
    get = stack.get(query)
    head = stack.request("HEAD", query)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Type"] == "image/jpeg"
    assert int(head.headers["Content-Length"]) == len(get.content)
    assert head.headers["ETag"] == get.headers["ETag"]
    assert head.headers["Last-Modified"] == get.headers["Last-Modified"]


def test_options_gives_204_with_cors(stack: servers.Stack) -> None:
    response = stack.request("OPTIONS", f"FIF={TABLES}&OBJ=Max-size")
    assert response.status_code == 204
    assert response.content == b""
    assert_cors(response)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_give_405(stack: servers.Stack, method: str) -> None:
    response = stack.request(method, f"FIF={TABLES}&OBJ=Max-size")
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["Allow"].split(",")} == ALLOWED
    assert_cors(response)


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "FIF=no-such-image.tif&OBJ=Max-size",
        "FIF=no-such-dir/no-such-image.tif&JTL=0,0",
        "FIF=../../etc/passwd&OBJ=Max-size",
        "FIF=..%2F..%2F..%2Fetc%2Fpasswd&OBJ=Max-size",
        "FIF=/etc/passwd&OBJ=Max-size",
        f"FIF=../{os.path.basename(helpers.FIXTURES)}/{TABLES}&OBJ=Max-size",
    ],
)
def test_missing_or_escaping_file_is_404(stack: servers.Stack, query: str) -> None:
    before = stack.server.workers()
    response = stack.get(query)

    assert response.status_code == 404
    body = response.content.decode("utf-8", "replace")
    assert helpers.fixture_dir() not in body
    assert "root:" not in body and "Traceback" not in body
    assert_cors(response)
    assert stack.get(f"FIF={TABLES}&OBJ=Max-size").status_code == 200
    assert_workers_unchanged(stack, before)


@pytest.mark.parametrize(
    "query",
    [
        "XYZ=1",
        f"FIF={TABLES}&NOSUCHCOMMAND=3",
        "OBJ=Max-size",
        # Hostile arguments of the processing and data commands (SPEC section 4): 2 1.
        f"FIF={TABLES}&CTW=[[[[&CVT=png",
        f"FIF={TABLES}&CNV=[1,2]&JTL=0,0",
        f"FIF={TABLES}&GAM=nan&CVT=jpeg",
        f"FIF={TABLES}&ROT=1e309&CVT=jpeg",
        f"FIF={TABLES}&MINMAX=0:1,2&CVT=png",
        f"FIF={TABLES}&TIL=0,5-2",
        f"FIF={TABLES}&PFL=1:1,2",
    ],
)
def test_protocol_error_is_400(stack: servers.Stack, query: str) -> None:
    before = stack.server.workers()
    response = stack.get(query)

    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/vnd.netfpx"
    assert response.content.startswith(b"Error/")
    assert_cors(response)
    assert stack.get(f"FIF={TABLES}&JTL=0,0").status_code == 200
    assert_workers_unchanged(stack, before)


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("FIF=not-an-image.tif&OBJ=Max-size", 415),
        ("FIF=broken-header.tif&JTL=0,0", 415),
        ("FIF=broken-tile-1024x1024-256tile-jpeg.tif&JTL=2,5", 500),
    ],
)
def test_broken_files_do_not_hurt_the_worker(stack: servers.Stack, query: str, status: int) -> None:
    before = stack.server.workers()
    response = stack.get(query)

    assert response.status_code == status
    body = response.content.decode("utf-8", "replace")
    assert helpers.fixture_dir() not in body and "Traceback" not in body
    assert stack.get(f"FIF={TABLES}&JTL=0,0").status_code == 200
    assert_workers_unchanged(stack, before)


# -- unix socket -----------------------------------------------------------------------------------


def test_unix_socket_through_nginx(workdir: str, engine: str) -> None:
    with servers.short_tempdir() as sockets:
        path = os.path.join(sockets, "iipsrv.sock")
        with servers.nginx_stack(workdir, bind=path, workers=2, engine=engine) as stack:
            response = stack.get(f"FIF={TABLES}&JTL=4,27")
            assert response.status_code == 200
            assert np.array_equal(reference.decode(response.content, "JPEG"), reference.tile_pixels(TABLES, 4, 27))
            assert os.path.exists(path)

            stack.server.signal(signal.SIGTERM)
            stack.server.wait_exit(timeout=5)

            assert not os.path.exists(path), "the socket file is removed on exit"
