"""Hostile files and hostile requests through a real nginx to ``iipsrv-py`` with several workers.

The root holds good images, a subset of the damaged-file corpus (tests/hostile_corpus.py: the
decompression bombs, cut and bit-flipped files, tiles pointing past the end, directory loops,
the published crash inputs) and symlinks leading out of it; beside the root lies a secret file
and a secret image carrying a unique marker.  Requests come from lists (every probe of every
specimen, path tricks, over-long URLs) and from Hypothesis (any IIP query, IIIF, DeepZoom and
Zoomify path under the URI_MAP prefixes, any REST route).

Every answer of the server must be a SPEC status (nginx's own refusals of what it cannot parse
are told apart by their Server header), the marker never appears in a body, an error never shows
a path or a traceback, no answer takes longer than REQUEST_SECONDS, and at the end the same
workers are serving (none died on the way).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import fcgi_client, helpers
from tests import hostile_corpus as corpus_module
from tests.integration import servers

pytestmark = pytest.mark.integration

WORKERS = 3
REQUEST_SECONDS = corpus_module.REQUEST_SECONDS
# Statuses of the server's own answers: SPEC section 3's, and IIIF's 303 to info.json.
SERVER_STATUSES = corpus_module.SPEC_STATUSES | {303}
# What nginx answers itself, before any FastCGI request: a request line or URI it will not
# take (400, 414) and paths outside the shipped location (404).
NGINX_STATUSES = {400, 404, 414}
GOOD = ("tif-rgb-1200x800-3lvl-128tile-jpeg-bigtiff.tif", "jp2-rgba-800x600-4res.jp2", "jpeg-rgb-1001x777-q90.jpg")
SVS = "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs"
# Damage kinds of the corpus served here (all bombs and crash inputs are too).
SUBSET = {"cut64", "flip0", "flip1", "offset-past-eof", "bytecount-4g", "ifd-loop-self", "tile-16", "siz-2g"}
URI_MAP = "iiif=>IIIF deepzoom=>DeepZoom zoomify=>Zoomify"


@dataclass
class Site:
    stack: servers.Stack
    root: str
    outside: str
    marker: bytes
    specimens: list[corpus_module.Specimen]
    workers: list[int]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, fixtures: str) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("hostile-site")
    root, outside = base / "root", base / "outside"
    corpus_dir = base / "corpus"
    root.mkdir()
    outside.mkdir()
    marker = f"SECRET-{uuid.uuid4().hex}"
    (outside / "secret.txt").write_text(marker + "\n")
    pixels = np.full((300, 400, 3), 77, np.uint8)
    tifffile.imwrite(outside / "secret.tif", pixels, tile=(256, 256), description=marker, metadata=None)
    os.symlink(outside / "secret.tif", root / "escape.tif")
    os.symlink("../outside/secret.tif", root / "relative-escape.tif")
    os.symlink(outside / "secret.txt", root / "escape.txt")
    os.symlink(outside, root / "escape-dir")
    for name in (*GOOD, SVS):
        shutil.copyfile(os.path.join(fixtures, name), root / name)
    import fetch_test_data

    crashes = [os.path.join(fetch_test_data.DEFAULT_DIRECTORY, n) for n in fetch_test_data.CRASH_FILES]
    if not all(os.path.exists(p) for p in crashes):
        if helpers.IN_CI:
            pytest.fail("crash inputs not downloaded: run scripts/fetch_test_data.py")
        crashes = []
    every = corpus_module.build(str(corpus_dir), fixtures, crashes)
    specimens = [s for s in every if s.expect or s.mutation in SUBSET or s.mutation == "published-crash-input"]
    for specimen in specimens:
        shutil.copyfile(corpus_dir / specimen.name, root / specimen.name)
    shutil.rmtree(corpus_dir)
    env = {"FILESYSTEM_PREFIX": f"{root}/", "URI_MAP": URI_MAP, "VERBOSITY": "1"}
    with servers.nginx_stack(str(base), workers=WORKERS, env=env) as stack:
        workers = sorted(stack.server.workers())
        assert len(workers) == WORKERS
        yield Site(stack, str(root), str(outside), marker.encode(), specimens, workers)


@dataclass
class Answer:
    status: int
    server: str
    body: bytes
    seconds: float


def fetch(site: Site, target: str) -> Answer:
    """GET ``target`` (path and query, sent byte for byte as given) on a new connection."""
    connection = http.client.HTTPConnection("127.0.0.1", site.stack.nginx.port, timeout=REQUEST_SECONDS + 5)
    started = time.perf_counter()
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
        return Answer(response.status, response.getheader("Server", ""), body, time.perf_counter() - started)
    finally:
        connection.close()


LEAKS = re.compile(rb"Traceback|File \"|\.py\b")


def check(site: Site, target: str, answer: Answer) -> None:
    where = f"{target[:200]!r} -> {answer.status} {answer.body[:120]!r}"
    assert site.marker not in answer.body, where
    assert answer.seconds < REQUEST_SECONDS, where
    if answer.server.startswith("iipsrv-py"):
        assert answer.status in SERVER_STATUSES, where
        if answer.status != 200:
            assert not LEAKS.search(answer.body), where
            assert site.root.encode() not in answer.body and site.outside.encode() not in answer.body, where
    else:
        assert answer.server.startswith("nginx") and answer.status in NGINX_STATUSES, where


# -- the corpus --------------------------------------------------------------------------------------


def corpus_targets(name: str) -> list[str]:
    targets = [f"{p.path}?{p.query}" if p.query else p.path for p in corpus_module.probes(name)]
    targets += [f"/iiif/{name}/info.json", f"/deepzoom/{name}_files/8/0_0.jpg", f"/zoomify/{name}/TileGroup0/0-0-0.jpg"]
    return targets


@pytest.mark.time_limit(240)
def test_corpus_through_nginx(site: Site) -> None:
    assert len(site.specimens) > 60
    statuses: dict[int, int] = {}
    for specimen in site.specimens:
        for target in corpus_targets(specimen.name):
            answer = fetch(site, target)
            check(site, target, answer)
            assert answer.server.startswith("iipsrv-py"), target
            statuses[answer.status] = statuses.get(answer.status, 0) + 1
            if specimen.expect == corpus_module.REFUSED_AT_OPEN:
                assert answer.status == 415, (target, answer.status)
            if specimen.expect == corpus_module.TILE_REFUSED and "/0,0,256,256/max/" in target:
                assert answer.status == 413, (target, answer.status)
    assert {200, 404, 415, 500} <= set(statuses), statuses


def test_good_images_are_served(site: Site) -> None:
    """The control: the same requests on intact images succeed."""
    for name in GOOD:
        for target in (
            f"/iiif/{name}/info.json",
            f"/slides/{name}",
            f"/fcgi-bin/iipsrv.fcgi?FIF={name}&WID=100&CVT=png",
        ):
            answer = fetch(site, target)
            check(site, target, answer)
            assert answer.status == 200, target


# -- leaving the root --------------------------------------------------------------------------------

ESCAPES = (
    "escape.tif",
    "relative-escape.tif",
    "escape-dir/secret.tif",
    "escape.txt",
    "../outside/secret.tif",
    "..%2Foutside%2Fsecret.tif",
    "%2e%2e%2foutside%2fsecret.tif",
    "%2E%2E/outside/secret.tif",
    "sub/..%2F..%2Foutside%2Fsecret.tif",
    "..%5Coutside%5Csecret.tif",
    "..\\outside\\secret.tif",
    "escape.tif%00",
    "escape.tif%00.jpg",
    "%2Foutside%2Fsecret.tif",
    "//outside/secret.tif",
    ".%2F..%2Foutside%2Fsecret.tif",
)


def escape_targets(identifier: str, outside: str) -> list[str]:
    targets = [
        f"/fcgi-bin/iipsrv.fcgi?FIF={identifier}&OBJ=Max-size",
        f"/fcgi-bin/iipsrv.fcgi?FIF={identifier}&OBJ=description",
        f"/fcgi-bin/iipsrv.fcgi?IIIF=/{identifier}/info.json",
        f"/fcgi-bin/iipsrv.fcgi?DeepZoom={identifier}.dzi",
        f"/iiif/{identifier}/info.json",
        f"/iiif/{identifier}/full/max/0/default.jpg",
        f"/deepzoom/{identifier}.dzi",
        f"/zoomify/{identifier}/ImageProperties.xml",
        f"/slides/{identifier}",
        f"/slides/{identifier}/thumbnail",
        f"/tiles/{identifier}/0/0/0.jpg",
        f"/view/{identifier}",
    ]
    absolute = quote(f"{outside}/secret.tif", safe="/")
    targets.append(f"/fcgi-bin/iipsrv.fcgi?FIF={absolute}&OBJ=Max-size")
    return targets


@pytest.mark.time_limit(90)
@pytest.mark.parametrize("identifier", ESCAPES)
def test_nothing_outside_the_root_is_read(site: Site, identifier: str) -> None:
    """Symlinks out of the root and every spelling of ``..``: 404 from the server (or nginx's
    own refusal of the URI), never the secret image's size, description or pixels."""
    for target in escape_targets(identifier, site.outside):
        answer = fetch(site, target)
        check(site, target, answer)
        if answer.server.startswith("iipsrv-py"):
            assert answer.status == 404, (target, answer.status, answer.body[:200])
        assert b"400 300" not in answer.body and b'"width": 400' not in answer.body, target


def fastcgi_get(site: Site, path: str, query: str = "") -> fcgi_client.Response:
    """A request sent straight to the server's FastCGI socket, past nginx (which normalises
    ``..`` and refuses ``%00`` in paths itself): the server must refuse them on its own."""
    host, port = site.stack.server.address
    params = fcgi_client.get_params(query, REQUEST_URI=path + (f"?{query}" if query else ""), SCRIPT_NAME=path)
    with socket.create_connection((host, port), timeout=REQUEST_SECONDS) as sock:
        sock.sendall(fcgi_client.request(1, params, keep=False))
        return fcgi_client.read_response(sock, 1)


@pytest.mark.time_limit(60)
@pytest.mark.parametrize("identifier", ESCAPES)
def test_paths_leaving_the_root_past_nginx_are_404(site: Site, identifier: str) -> None:
    for target in escape_targets(identifier, site.outside):
        path, _, query = target.partition("?")
        started = time.perf_counter()
        response = fastcgi_get(site, path, query)
        assert time.perf_counter() - started < REQUEST_SECONDS
        assert response.status == 404, (target, response.status, response.body[:200])
        assert site.marker not in response.body and not LEAKS.search(response.body), target


def test_symlink_inside_the_root_to_a_file_outside_is_404(site: Site) -> None:
    assert os.path.islink(os.path.join(site.root, "escape.tif"))
    for target in ("/fcgi-bin/iipsrv.fcgi?FIF=escape.tif&OBJ=Max-size", "/slides/escape.tif"):
        answer = fetch(site, target)
        assert answer.status == 404 and answer.server.startswith("iipsrv-py"), target
        assert site.marker not in answer.body


# -- over-long requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/fcgi-bin/iipsrv.fcgi?FIF=" + "a" * 100_000 + "&OBJ=Max-size",
        "/fcgi-bin/iipsrv.fcgi?" + "&".join(["WID=10"] * 15_000),
        "/iiif/" + "x/" * 5_000 + "info.json",
        "/slides/" + "y" * 10_000,
        "/tiles/" + "%2F" * 3_000 + "/0/0/0.jpg",
        "/fcgi-bin/iipsrv.fcgi?FIF=" + "a" * 6_000 + "&OBJ=Max-size",  # under nginx's 8 KB line limit
        "/iiif/" + "z" * 6_000 + "/info.json",
    ],
    ids=["query-100k", "commands-15k", "path-10k", "rest-10k", "encoded-slashes", "query-6k", "path-6k"],
)
def test_over_long_urls(site: Site, target: str) -> None:
    answer = fetch(site, target)
    check(site, target, answer)
    if len(target) < 8000:  # under nginx's 8 KB line limit: the server answers
        # FIF's value is past MAX_PARAMETER_LENGTH (4096): 400; the long path names no image: 404.
        expected = 400 if "FIF=" in target else 404
        assert answer.server.startswith("iipsrv-py") and answer.status == expected, (answer.status, answer.body[:200])


# -- generated requests ---------------------------------------------------------------------------------

IDENTIFIERS = st.sampled_from(
    [*GOOD, SVS, "missing.tif", "escape.tif", "../outside/secret.tif", "..%2Fescape.tif", "escape-dir/secret.tif"]
)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
NUMBER = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "1", "-1", "99999999999999999999", "1e308", "nan", "0x10", ""]),
)
COMMANDS = st.sampled_from(
    [
        "FIF",
        "OBJ",
        "WID",
        "HEI",
        "RGN",
        "QLT",
        "CVT",
        "JTL",
        "PTL",
        "WTL",
        "TIL",
        "JTLS",
        "SDS",
        "CNT",
        "GAM",
        "MINMAX",
        "INV",
        "CMP",
        "CTW",
        "COL",
        "SHD",
        "CNV",
        "LYR",
        "ROT",
        "SPECTRA",
        "PFL",
        "DeepZoom",
        "Zoomify",
        "IIIF",
        "XYZ",
    ]
)


def encoded(text: str) -> str:
    return quote(text, safe="")


def _segment(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(strategy, TEXT).map(encoded)


@st.composite
def iip_queries(draw: st.DrawFn) -> str:
    pairs = [f"FIF={draw(IDENTIFIERS)}"] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 5))):
        value = draw(st.one_of(NUMBER, TEXT, st.lists(NUMBER, max_size=5).map(",".join), IDENTIFIERS))
        pairs.append(f"{draw(COMMANDS)}={encoded(value)}")
    return "/fcgi-bin/iipsrv.fcgi?" + "&".join(pairs)


@st.composite
def iiif_paths(draw: st.DrawFn) -> str:
    identifier = draw(_segment(IDENTIFIERS))
    if draw(st.booleans()):
        return f"/iiif/{identifier}/info.json"
    region = draw(_segment(st.sampled_from(["full", "square", "0,0,100,100", "pct:10,10,50,50", "-1,0,9,9"])))
    size = draw(_segment(st.sampled_from(["max", "^max", "100,", ",100", "!50,50", "pct:50", "0,0", "^99999,"])))
    rotation = draw(_segment(st.sampled_from(["0", "90", "!180", "361", "-5", "22.5"])))
    quality = draw(_segment(st.sampled_from(["default", "color", "gray", "bitonal", "negative"])))
    fmt = draw(st.sampled_from(["jpg", "png", "webp", "tif", "avif", "gif", ""]))
    return f"/iiif/{identifier}/{region}/{size}/{rotation}/{quality}.{fmt}"


@st.composite
def tile_paths(draw: st.DrawFn) -> str:
    identifier = draw(_segment(IDENTIFIERS))
    numbers = [draw(NUMBER.map(encoded)) for _ in range(4)]
    kind = draw(st.sampled_from(["deepzoom", "deepzoom-dzi", "zoomify", "zoomify-xml"]))
    if kind == "deepzoom":
        return f"/deepzoom/{identifier}_files/{numbers[0]}/{numbers[1]}_{numbers[2]}.{draw(TEXT.map(encoded))}"
    if kind == "deepzoom-dzi":
        return f"/deepzoom/{identifier}.dzi"
    if kind == "zoomify":
        return f"/zoomify/{identifier}/TileGroup{numbers[3]}/{numbers[0]}-{numbers[1]}-{numbers[2]}.jpg"
    return f"/zoomify/{identifier}/ImageProperties.xml"


@st.composite
def rest_paths(draw: st.DrawFn) -> str:
    identifier = draw(_segment(IDENTIFIERS))
    numbers = [draw(NUMBER.map(encoded)) for _ in range(3)]
    value = draw(st.one_of(NUMBER, TEXT).map(encoded))
    return draw(
        st.sampled_from(
            [
                "/health",
                f"/slides?limit={value}&cursor={value}&prefix={value}&search={value}",
                f"/slides/{identifier}",
                f"/slides/{identifier}/thumbnail?max_size={value}",
                f"/slides/{identifier}/associated/{draw(_segment(st.sampled_from(['label', 'macro', 'x'])))}",
                f"/slides/{identifier}/dzi",
                f"/slides/{identifier}/dzi_files/{numbers[0]}/{numbers[1]}_{numbers[2]}.jpg",
                f"/tiles/{identifier}/{numbers[0]}/{numbers[1]}/{numbers[2]}.jpg?quality={value}",
                f"/tiles/{identifier}/{numbers[0]}/{numbers[1]}/{numbers[2]}",
                f"/view/{identifier}",
                f"/slides/{identifier}/{draw(TEXT.map(encoded))}",
            ]
        )
    )


@pytest.mark.time_limit(240)
@settings(
    max_examples=400,
    deadline=None,  # each request is timed by check() instead: no flaky deadline
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(target=st.one_of(iip_queries(), iiif_paths(), tile_paths(), rest_paths()))
def test_generated_requests(site: Site, target: str) -> None:
    check(site, target, fetch(site, target))


def test_zz_no_worker_died(site: Site) -> None:
    """Runs last in this module: the workers serving now are the ones that started."""
    assert sorted(site.stack.server.workers()) == site.workers
    answer = fetch(site, f"/iiif/{GOOD[0]}/info.json")
    assert answer.status == 200 and b'"width": 1200' in answer.body.replace(b'"width":1200', b'"width": 1200')
