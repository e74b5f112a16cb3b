"""Any path under the URI_MAP prefixes and the slide REST routes, through the WSGI app.

The protocol parsers have their own Hypothesis tests (tests/unit/*parser*, test_rest_routes);
this one covers the routing in front of them: URI_MAP prefixes, REST sub-resources and ids
spelled with ``%2F``, path tricks and text a parser never sees on its own, and requests longer
than a front end would pass (nginx refuses request lines over 8 KB itself, so the server's own
answer to them is checked here).  The images are intact, so every answer is a SPEC status
other than 500, and no body shows a path or a traceback.
"""

from __future__ import annotations

import re
import sys
import time
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import helpers

STATUSES = {200, 303, 400, 404, 413, 414, 415}  # 414: past MAX_REQUEST_LENGTH
REQUEST_SECONDS = 10.0
IMAGES = (
    "tif-rgb-1200x800-3lvl-128tile-jpeg-bigtiff.tif",
    "jp2-rgba-800x600-4res.jp2",
    "jpeg-rgb-1001x777-q90.jpg",
    "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs",
)
URI_MAP = "iiif=>IIIF deepzoom=>DeepZoom zoomify=>Zoomify iip=>IIP"
LEAKS = re.compile(r"Traceback|File \"|\.py\b")


@pytest.fixture(scope="module")
def app():
    # MAX_CVT keeps generated views small: this is about routing, not rendering.
    return helpers.make_app(URI_MAP=URI_MAP, MAX_CVT="300")


def assert_well_formed(result: helpers.Result, what: str) -> None:
    where = (what[:200], result.status, result.body[:200])
    assert result.status in STATUSES, where
    assert result.header("Content-Length") == str(len(result.body)), where
    if result.status >= 400:
        text = result.body.decode("utf-8", "replace")
        assert not LEAKS.search(text), where
        assert all(place not in text for place in (helpers.ROOT, helpers.FIXTURES, sys.prefix)), where


identifier = st.one_of(
    st.sampled_from([*IMAGES, "missing.tif", "../x.tif", "..%2Fx.tif", "%2e%2e/x", "a%00.tif", "a\\b", "/etc/passwd"]),
    st.text(max_size=30).map(lambda t: quote(t, safe="")),
    st.sampled_from(IMAGES).map(lambda name: quote(name, safe="")),
)
segment = st.one_of(
    st.sampled_from(["0", "1", "8", "-1", "99999999999", "full", "max", "0,0,10,10", "pct:50", "!90", "info.json"]),
    st.text(max_size=15).map(lambda t: quote(t, safe="")),
)
prefix = st.sampled_from(["/iiif/", "/deepzoom/", "/zoomify/", "/iip/", "/slides/", "/tiles/", "/view/", "/health/"])
tail = st.lists(segment, max_size=6).map("/".join)
ending = st.sampled_from(["", ".jpg", ".png", ".webp", ".dzi", "_files/8/0_0.jpg", "/info.json", "/thumbnail", "/dzi"])


@st.composite
def paths(draw: st.DrawFn) -> str:
    head = draw(prefix) + draw(identifier)
    rest = draw(tail)
    return head + ("/" + rest if rest else "") + draw(ending)


queries = st.one_of(
    st.just(""),
    st.sampled_from(["max_size=64", "max_size=-1", "max_size=abc", "quality=5", "quality=101", "limit=0", "cursor=!"]),
    st.text(max_size=40).map(lambda t: quote(t, safe="=&")),
)


@given(path=paths(), query=queries)
@settings(
    max_examples=400,
    deadline=None,  # timed below instead
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_any_routed_path_gets_a_spec_status(app, path: str, query: str) -> None:
    started = time.perf_counter()
    result = helpers.call(app, query, path=path)
    assert time.perf_counter() - started < REQUEST_SECONDS
    assert_well_formed(result, f"{path}?{query}")


@pytest.mark.parametrize(
    ("path", "query", "status"),
    [
        # Past MAX_REQUEST_LENGTH (8192 bytes of path and query by default): 414.
        ("/fcgi-bin/iipsrv.fcgi", "FIF=" + "a" * 100_000 + "&OBJ=Max-size", 414),
        ("/fcgi-bin/iipsrv.fcgi", "&".join(["WID=10"] * 15_000) + "&FIF=missing.tif&CVT=jpeg", 414),
        ("/iiif/" + "x/" * 5_000 + "info.json", "", 414),
        ("/slides/" + "y" * 10_000, "", 414),
        ("/tiles/" + "%2F" * 3_000 + "/0/0/0.jpg", "", 414),
        ("/deepzoom/" + "z" * 10_000 + ".dzi", "", 414),
        ("/zoomify/" + "%2e%2e/" * 1_500 + "ImageProperties.xml", "", 414),
        # Within it, one parameter past MAX_PARAMETER_LENGTH (4096): 400.
        ("/fcgi-bin/iipsrv.fcgi", "FIF=" + "a" * 6_000 + "&OBJ=Max-size", 400),
        # Within both: nothing names an image this long, 404.
        ("/fcgi-bin/iipsrv.fcgi", "FIF=" + "a" * 4_000 + "&OBJ=Max-size", 404),
        ("/iiif/" + "x/" * 3_000 + "info.json", "", 404),
        ("/zoomify/" + "%2e%2e/" * 1_000 + "ImageProperties.xml", "", 404),
    ],
    ids=[
        "query-100k",
        "commands-15k",
        "iiif-path-10k",
        "rest-10k",
        "encoded-slashes",
        "deepzoom-10k",
        "dots-10k",
        "parameter-6k",
        "query-4k",
        "iiif-path-6k",
        "dots-7k",
    ],
)
def test_over_long_requests_are_refused_quickly(app, path: str, query: str, status: int) -> None:
    """Not 500, not a hang: the limits' statuses, or 404 for an image nothing names."""
    started = time.perf_counter()
    result = helpers.call(app, query, path=path)
    assert time.perf_counter() - started < 2.0
    assert_well_formed(result, path + query[:100])
    assert result.status == status


def test_a_routed_image_is_served(app) -> None:
    """The control for the above: the same routes reach images that exist."""
    name = IMAGES[0]
    assert helpers.call(app, "", path=f"/iiif/{name}/info.json").status == 200
    assert helpers.call(app, "", path=f"/deepzoom/{name}.dzi").status == 200
    assert helpers.call(app, "", path=f"/zoomify/{name}/ImageProperties.xml").status == 200
    assert helpers.call(app, f"FIF={name}&OBJ=Max-size", path="/iip/").body == b"Max-size:1200 800\r\n"
    assert helpers.call(app, "", path=f"/slides/{quote(name, safe='')}").status == 200
