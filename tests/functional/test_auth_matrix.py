"""Signed URLs through the WSGI application, for one request of each protocol (SPEC section 14):
refusals, valid signatures answering the same bytes as without auth, URLs printed by
``iipsrv-py sign``, and caches that never answer a request the check refuses."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
import types
from urllib.parse import urlsplit

import pytest

from iipsrv_py import app as app_module
from iipsrv_py.auth import signed_query
from tests import helpers

SECRET = "matrix-secret"
URI_MAP = "iiif=>IIIF deepzoom=>DeepZoom zoomify=>Zoomify"
IMAGE = "tif-rgb-1500x1000-3lvl-512x256tile-jpeg.tif"
IIP_PATH = "/fcgi-bin/iipsrv.fcgi"

# (name, path, parameters): one request of each protocol.
CASES = [
    ("iip", IIP_PATH, [("FIF", IMAGE), ("WID", "200"), ("CVT", "jpeg")]),
    ("iiif-query", IIP_PATH, [("IIIF", f"/{IMAGE}/full/200,/0/default.jpg")]),
    ("iiif-path", f"/iiif/{IMAGE}/full/200,/0/default.jpg", []),
    ("deepzoom", f"/deepzoom/{IMAGE.removesuffix('.tif')}.tif_files/9/0_0.jpg", []),
    ("zoomify", f"/zoomify/{IMAGE}/TileGroup0/1-0-0.jpg", []),
]
IDS = [case[0] for case in CASES]


@pytest.fixture(scope="module")
def plain():
    return helpers.make_app(URI_MAP=URI_MAP)


@pytest.fixture
def app():
    return helpers.make_app(URI_MAP=URI_MAP, AUTH_SECRET=SECRET)


def sign(path: str, params: list[tuple[str, str]], exp: int | None = None, secret: str = SECRET) -> str:
    return signed_query(secret, path, params, int(time.time()) + 600 if exp is None else exp)[0]


def unsigned(params: list[tuple[str, str]]) -> str:
    return "&".join(f"{k}={v}" for k, v in params)


def refused(result: helpers.Result) -> tuple[int, str]:
    assert result.header("content-type") == "application/json"
    assert result.header("cache-control") == "no-store"
    assert result.header("etag") is None
    doc = json.loads(result.body)
    assert doc["status"] == result.status and doc["message"]
    return result.status, doc["error"]


@pytest.mark.parametrize(("name", "path", "params"), CASES, ids=IDS)
def test_valid_signature_answers_the_same_bytes_as_without_auth(app, plain, name, path, params):
    expected = helpers.call(plain, unsigned(params), path=path)
    assert expected.status == 200, expected.body[:200]
    result = helpers.call(app, sign(path, params), path=path)
    assert result.status == 200, result.body[:200]
    assert result.body == expected.body
    assert result.header("etag") == expected.header("etag")  # exp and sig are in no cache key


@pytest.mark.parametrize(("name", "path", "params"), CASES, ids=IDS)
def test_refusals(app, name, path, params):
    def call(query: str, at: str = path) -> tuple[int, str]:
        return refused(helpers.call(app, query, path=at))

    now = int(time.time())
    good = sign(path, params)
    sig = good.rsplit("sig=", 1)[1]
    assert call(unsigned(params)) == (401, "missing_signature")
    assert call(sign(path, params, exp=now - 10)) == (401, "signature_expired")
    assert call(sign("/elsewhere" + path, params)) == (401, "invalid_signature")
    tampered = good.replace("200", "300", 1) if params else good.replace("exp=", "exp=1", 1)
    assert tampered != good
    assert call(tampered) == (401, "invalid_signature")
    assert call(sign(path, params, secret="not-" + SECRET)) == (401, "invalid_signature")
    assert call(f"{good}&sig={sig}") == (400, "invalid_signature_format")
    assert call(f"{unsigned(params)}&exp=tomorrow&sig={sig}".lstrip("&")) == (400, "invalid_expiry_format")


def test_health_is_open(app):
    assert helpers.call(app, path="/health").status == 200


def test_options_preflight_is_open(app):
    assert helpers.call(app, method="OPTIONS", path=IIP_PATH).status == 204


@pytest.mark.parametrize(("name", "path", "params"), CASES, ids=IDS)
def test_urls_printed_by_the_sign_command_are_accepted(app, plain, name, path, params):
    argv = [sys.executable, "-m", "iipsrv_py", "sign", "--path", path, "--ttl", "120", "--base-url", "http://localhost"]
    for key, value in params:
        argv += ["--param", f"{key}={value}"]
    env = {**os.environ, "AUTH_SECRET": SECRET}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    url = urlsplit(done.stdout.strip().splitlines()[-1])
    assert url.path == path
    result = helpers.call(app, url.query, path=url.path)
    assert result.status == 200
    assert result.body == helpers.call(plain, unsigned(params), path=path).body


def test_a_signed_post_form_is_checked_as_the_query(app, plain):
    params = CASES[0][2]
    body = sign(IIP_PATH, params).encode()
    result = helpers.call(app, method="POST", path=IIP_PATH, body=body)
    assert result.status == 200
    assert result.body == helpers.call(plain, method="POST", path=IIP_PATH, body=unsigned(params).encode()).body
    unsigned_post = helpers.call(app, method="POST", path=IIP_PATH, body=unsigned(params).encode())
    assert refused(unsigned_post) == (401, "missing_signature")


@pytest.mark.parametrize(("name", "path", "params"), CASES, ids=IDS)
def test_a_cached_answer_never_reaches_a_refused_request(app, name, path, params):
    signed = sign(path, params)
    for _ in range(2):  # the second is answered by a cache (the request-text shortcut)
        assert helpers.call(app, signed, path=path).status == 200
    assert refused(helpers.call(app, unsigned(params), path=path)) == (401, "missing_signature")
    assert refused(helpers.call(app, sign(path, params, secret="x"), path=path))[0] == 401


def test_the_shortcut_rechecks_expiry(app, monkeypatch):
    _, path, params = CASES[0]
    now = int(time.time())
    query = sign(path, params, exp=now + 5)
    assert helpers.call(app, query, path=path).status == 200
    assert helpers.call(app, query, path=path).status == 200
    later = types.SimpleNamespace(time=lambda: now + 6, perf_counter=time.perf_counter)
    monkeypatch.setattr(app_module, "time", later)
    assert refused(helpers.call(app, query, path=path)) == (401, "signature_expired")


def test_auth_off_ignores_signing_parameters(plain):
    """A signed IIP URL works unchanged on a server without AUTH_SECRET (exp and sig are no
    IIP commands)."""
    _, path, params = CASES[0]
    assert helpers.call(plain, sign(path, params), path=path).body == helpers.call(plain, unsigned(params)).body


REST_CASES = [
    ("slides", "/slides", [("limit", "5")]),
    ("slide", f"/slides/{IMAGE}", []),
    ("thumbnail", f"/slides/{IMAGE}/thumbnail", [("max_size", "128")]),
    ("tile", f"/tiles/{IMAGE}/0/1/1.jpg", []),
    ("dzi", f"/slides/{IMAGE}/dzi", []),
]


@pytest.mark.parametrize(("name", "path", "params"), REST_CASES, ids=[c[0] for c in REST_CASES])
def test_rest_routes_are_signed_like_the_protocols(app, plain, name, path, params):
    good = helpers.call(app, sign(path, params), path=path)
    assert good.status == 200 and good.body == helpers.call(plain, unsigned(params), path=path).body
    assert refused(helpers.call(app, unsigned(params), path=path)) == (401, "missing_signature")
    stale = sign(path, params, exp=int(time.time()) - 5)
    assert refused(helpers.call(app, stale, path=path)) == (401, "signature_expired")
    other = sign(path, params, secret="another secret")
    assert refused(helpers.call(app, other, path=path)) == (401, "invalid_signature")


def viewer_query(page: bytes) -> str:
    config = json.loads(re.search(rb'<script type="application/json" id="config">(.*?)</script>', page)[1])
    return config["query"].lstrip("?")


def test_the_signed_viewer_page_carries_a_token_for_its_slide_only(app):
    other = "tif-rgb-3000x2000-5lvl-256tile-deflate.tif"
    assert refused(helpers.call(app, "", path=f"/view/{IMAGE}")) == (401, "missing_signature")
    page = helpers.call(app, sign(f"/view/{IMAGE}", []), path=f"/view/{IMAGE}")
    assert page.status == 200 and "no-store" in page.header("cache-control")
    token = viewer_query(page.body)
    fields = dict(pair.split("=") for pair in token.split("&"))
    assert set(fields) == {"vt", "exp"}
    # The token is HMAC(secret, "viewer:{id}:{exp}"), computed here.
    expected = hmac.new(SECRET.encode(), f"viewer:{IMAGE}:{fields['exp']}".encode(), hashlib.sha256).hexdigest()
    assert fields["vt"] == expected
    for path in (
        f"/slides/{IMAGE}",
        f"/slides/{IMAGE}/dzi",
        f"/slides/{IMAGE}/dzi_files/9/0_0.jpeg",
        f"/tiles/{IMAGE}/0/0/0.jpg",
        f"/slides/{IMAGE}/thumbnail",
    ):
        assert helpers.call(app, token, path=path).status == 200, path
    # Not the viewer page itself, not the list, not another slide, not another protocol.
    for path, query in (
        (f"/view/{IMAGE}", token),
        ("/slides", token),
        (f"/slides/{other}", token),
        (f"/tiles/{other}/0/0/0.jpg", token),
        (IIP_PATH, f"FIF={IMAGE}&JTL=0,0&{token}"),
    ):
        assert helpers.call(app, query, path=path).status == 401, path
    # A tampered token or expiry is refused.
    forged = token.replace(f"exp={fields['exp']}", f"exp={int(fields['exp']) + 3600}")
    assert helpers.call(app, forged, path=f"/slides/{IMAGE}").status == 401


def test_the_slide_list_page_links_signed_viewers(app):
    exp = int(time.time()) + 600
    index = helpers.call(app, sign("/", [], exp=exp), path="/")
    assert index.status == 200
    links = re.findall(r'href="(/view/[^"?]+)\?([^"]+)"', index.body.decode())
    assert links
    assert all(query.startswith(f"exp={exp}&") for _, query in links)  # the page's own expiry
    for path, query in [link for link in links if link[0].startswith("/view/tif-rgb")][:3]:
        query = query.replace("&amp;", "&")
        assert helpers.call(app, query, path=path).status == 200, path
