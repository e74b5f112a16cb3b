"""The built-in viewer (/view/{id}) in Debian's headless Chromium, driven by playwright.

The server runs as an operator starts it in one command, ``iipsrv-py --http 127.0.0.1:PORT
ROOT``, with VIEWER_ASSETS naming the OpenSeadragon that scripts/fetch_npm.py installed as
iipsrv_py/viewer/npm-lock.json pins it.  For a generated slide with MPP and for the real SVS
files of other projects' test suites:

* the page loads and OpenSeadragon opens the slide's DZI; every request the page made got a
  200, the page logged no console or script error, no tile failed;
* zooming in and panning fetch tiles not fetched before, all 200;
* the scale bar's label and its drawn width agree with the MPP read from the file here
  (tifffile's ImageDescription, OpenSlide's properties) and the zoom measured in the page from
  the positions of two image points: label = width x MPP / zoom, within 2 %;
* the metadata panel shows the slide's size and the label/macro pictures load.

With AUTH_SECRET set, a signed /view URL works the same way (its tiles carry the viewer token)
and that token opens nothing of another slide.  Screenshots are kept in tests/.artefacts/.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests import helpers
from tests.browser.test_openseadragon import CHROMIUM, CHROMIUM_ARGS, NODE_MODULES, chromium, chromium_processes
from tests.integration import servers
from tests.integration.conftest import _time_limit  # noqa: F401  (the integration tests' bound per test)

pytestmark = pytest.mark.integration

__all__ = ["chromium"]  # the fixture, imported for its use here

ARTEFACTS = os.path.join(helpers.ROOT, "tests", ".artefacts")
GENERATED = "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs"
REAL = ("small.svs", "cmu_small_region.svs")
SECRET = "a viewer test secret"
SIZE = (1000, 700)
RUN_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, fixtures: str, downloads: str) -> str:
    """One directory with the generated slide and the real ones, as a lab's folder would be."""
    directory = tmp_path_factory.mktemp("slides")
    shutil.copy(os.path.join(fixtures, GENERATED), directory / GENERATED)
    os.mkdir(directory / "real")
    for name in REAL:
        shutil.copy(os.path.join(downloads, name), directory / "real" / name)
    return str(directory)


@contextlib.contextmanager
def http_server(workdir: str, root: str, **env: str) -> Iterator[str]:
    port = servers.free_port()
    argv = [servers.IIPSRV, "--http", f"127.0.0.1:{port}", "--workers", "2", root]
    variables = {"VIEWER_ASSETS": NODE_MODULES, "FILESYSTEM_PREFIX": "", **env}
    server = servers.IIPServer(workdir, argv, ("127.0.0.1", port), variables, name="http")
    try:
        server.wait_accepting(("127.0.0.1", port))
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def mpp_of(path: str) -> float:
    """MPP from the file, read independently: OpenSlide's aperio.MPP property."""
    openslide = helpers.require_openslide()
    with openslide.OpenSlide(path) as slide:
        return float(slide.properties["openslide.mpp-x"])


def sign(path: str, params: dict[str, str]) -> str:
    """A signed URL path, computed here from SPEC section 14's definition."""
    canonical = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    sig = hmac.new(SECRET.encode(), f"{path}?{canonical}".encode(), hashlib.sha256).hexdigest()
    return f"{path}?{urllib.parse.urlencode({**params, 'sig': sig})}"


SCALE_PROBE = """() => {
  const v = window.slideViewer.viewer;
  const item = v.world.getItemAt(0);
  const a = v.viewport.pixelFromPoint(item.imageToViewportCoordinates(0, 0), true);
  const b = v.viewport.pixelFromPoint(item.imageToViewportCoordinates(1000, 0), true);
  const line = document.querySelector('#scalebar .bar-line').getBoundingClientRect();
  return {zoom: (b.x - a.x) / 1000, width: line.width,
          label: document.querySelector('#scalebar .bar-label').textContent,
          tilesFailed: window.slideViewer.tilesFailed, error: window.slideViewer.error};
}"""
# Settled: the viewport has reached its target (no animation left), every tile the view
# needs is loaded and drawn, and no tile is being fetched.
SETTLED = """() => {
  const state = window.slideViewer;
  const v = state && state.ready && state.viewer;
  const item = v && v.world.getItemAt(0);
  if (!item) return false;
  const vp = v.viewport;
  const still = vp.getZoom(true) === vp.getZoom(false) && vp.getCenter(true).equals(vp.getCenter(false));
  return still && item.getFullyLoaded() && v.imageLoader.jobsInProgress === 0 && !v.world.needsDraw();
}"""


def settle(page: Any) -> None:
    """Wait until SETTLED holds twice, 300 ms apart (a new animation frame may start loading)."""
    for _ in range(2):
        page.wait_for_function(SETTLED, polling=50, timeout=RUN_TIMEOUT * 1000)
        time.sleep(0.3)
    page.wait_for_function(SETTLED, polling=50, timeout=RUN_TIMEOUT * 1000)


def label_micrometres(label: str) -> float:
    match = re.fullmatch(r"([\d.]+) (µm|mm)", label)
    assert match, label
    return float(match.group(1)) * (1000 if match.group(2) == "mm" else 1)


def browse(chromium: Any, url: str, name: str, profile: str) -> dict[str, Any]:
    """Open the viewer, wait for the home view, zoom in, pan; what the browser saw."""
    seen: dict[str, Any] = {"responses": [], "console": [], "errors": [], "steps": {}}
    context = chromium.launch_persistent_context(
        profile,
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        env=servers.base_env(),
        viewport={"width": SIZE[0], "height": SIZE[1]},
        device_scale_factor=1,
        timeout=RUN_TIMEOUT * 1000,
    )
    try:
        page = context.pages[0] if context.pages else context.new_page()
        page.on("console", lambda m: seen["console"].append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: seen["errors"].append(str(e)))
        page.on("response", lambda r: seen["responses"].append((r.url, r.status)))
        page.goto(url, wait_until="load", timeout=RUN_TIMEOUT * 1000)
        settle(page)
        os.makedirs(ARTEFACTS, exist_ok=True)
        page.screenshot(path=os.path.join(ARTEFACTS, f"viewer-{name}-home.png"))
        seen["steps"]["home"] = (len(seen["responses"]), page.evaluate(SCALE_PROBE))
        seen["info"] = page.evaluate("() => window.slideViewer.info")
        seen["panel"] = page.inner_text("#metadata")
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('#pictures img')).every(i => i.complete)",
            timeout=RUN_TIMEOUT * 1000,
        )
        seen["pictures"] = page.evaluate(
            "() => Array.from(document.querySelectorAll('#pictures img')).map(i => [i.alt, i.naturalWidth > 0])"
        )
        for step, action in (
            ("zoomed", "v => { v.viewport.zoomBy(6); v.viewport.applyConstraints(); }"),
            ("panned", "v => { v.viewport.panBy(new OpenSeadragon.Point(0.08, 0.05)); }"),
        ):
            page.evaluate(f"() => ({action})(window.slideViewer.viewer)")
            settle(page)
            page.screenshot(path=os.path.join(ARTEFACTS, f"viewer-{name}-{step}.png"))
            seen["steps"][step] = (len(seen["responses"]), page.evaluate(SCALE_PROBE))
        # Keyboard shortcuts reach the viewer without a click: "r" rotates by 90 degrees.
        page.keyboard.press("r")
        seen["rotation"] = page.evaluate("() => window.slideViewer.viewer.viewport.getRotation(false)")
        seen["config"] = page.evaluate("() => JSON.parse(document.getElementById('config').textContent)")
    finally:
        context.close()
        for pid in chromium_processes(profile):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
    return seen


def tile_urls(responses: list[tuple[str, int]]) -> list[str]:
    return [url for url, _ in responses if "/dzi_files/" in url]


def check_run(seen: dict[str, Any], mpp: float, width: int) -> None:
    assert not seen["console"] and not seen["errors"], (seen["console"], seen["errors"])
    bad = [(url, status) for url, status in seen["responses"] if status != 200]
    assert not bad, bad
    counts = {step: count for step, (count, _) in seen["steps"].items()}
    home = set(tile_urls(seen["responses"][: counts["home"]]))
    zoomed = set(tile_urls(seen["responses"][counts["home"] : counts["zoomed"]]))
    panned = set(tile_urls(seen["responses"][counts["zoomed"] : counts["panned"]]))
    assert home
    if width > SIZE[0]:  # (small.svs is 16 x 16 pixels: one tile at every zoom)
        assert zoomed - home and panned - home - zoomed, (len(home), len(zoomed), len(panned))
    assert seen["info"]["width"] == width
    for _, probe in seen["steps"].values():
        assert probe["tilesFailed"] == 0 and probe["error"] is None
        # The scale bar: its label is its drawn width in micrometres at this zoom.
        expected = probe["width"] * mpp / probe["zoom"]
        assert abs(label_micrometres(probe["label"]) - expected) <= 0.02 * expected, (probe, mpp)
    assert f"{width} × " in seen["panel"]
    assert seen["rotation"] == 90


@pytest.mark.time_limit(240)
def test_viewer_shows_generated_and_real_slides(chromium: Any, root: str, tmp_path: Any) -> None:
    openslide = helpers.require_openslide()
    with http_server(str(tmp_path), root) as base:
        # The slide list links every slide to its viewer.
        index = requests.get(base + "/", timeout=10)
        assert index.status_code == 200
        for slide in (GENERATED, *(f"real/{name}" for name in REAL)):
            assert f'href="/view/{urllib.parse.quote(slide, safe="")}"' in index.text
        for slide in (GENERATED, *(f"real/{name}" for name in REAL)):
            path = os.path.join(root, slide)
            with openslide.OpenSlide(path) as reference:
                width = reference.dimensions[0]
            name = slide.replace("/", "_")
            url = f"{base}/view/{urllib.parse.quote(slide, safe='')}"
            seen = browse(chromium, url, name, str(tmp_path / f"profile-{name}"))
            check_run(seen, mpp_of(path), width)
            if slide == GENERATED:
                assert [alt for alt, ok in seen["pictures"] if ok] == ["label", "macro"], seen["pictures"]


@pytest.mark.time_limit(180)
def test_signed_viewer_and_its_token(chromium: Any, root: str, tmp_path: Any) -> None:
    with http_server(str(tmp_path), root, AUTH_SECRET=SECRET) as base:
        view = f"/view/{urllib.parse.quote(GENERATED, safe='')}"
        assert requests.get(base + view, timeout=10).status_code == 401  # unsigned: no page, no token
        exp = str(int(time.time()) + 600)
        seen = browse(chromium, base + sign(view, {"exp": exp}), "signed", str(tmp_path / "profile"))
        check_run(seen, mpp_of(os.path.join(root, GENERATED)), seen["info"]["width"])
        query = urllib.parse.parse_qs(seen["config"]["query"].lstrip("?"))
        assert set(query) == {"vt", "exp"}
        token = urllib.parse.urlencode({"vt": query["vt"][0], "exp": query["exp"][0]})
        own = requests.get(f"{base}/slides/{urllib.parse.quote(GENERATED, safe='')}?{token}", timeout=10)
        assert own.status_code == 200
        other = urllib.parse.quote("real/small.svs", safe="")
        for path in (f"/slides/{other}", f"/slides/{other}/dzi", f"/tiles/{other}/0/0/0.jpg", "/slides"):
            refused = requests.get(f"{base}{path}?{token}", timeout=10)
            assert refused.status_code == 401, (path, refused.status_code)


@pytest.mark.time_limit(180)
def test_viewer_on_an_s3_root(chromium: Any, s3_images: Any, tmp_path: Any) -> None:
    # The same one command with ROOT a bucket (the real moto server of the S3 tests).
    from tests import s3_store

    env = {**s3_store.CREDENTIALS, "S3_ENDPOINT": s3_images.store.endpoint}
    with http_server(str(tmp_path), s3_images.url, **env) as base:
        index = requests.get(base + "/", timeout=10)
        assert index.status_code == 200 and f'href="/view/{GENERATED}"' in index.text
        seen = browse(chromium, f"{base}/view/{GENERATED}", "s3", str(tmp_path / "profile"))
        path = os.path.join(helpers.fixture_dir(), GENERATED)
        check_run(seen, mpp_of(path), seen["info"]["width"])
        assert seen["info"]["width"] == 4097


def test_view_page_escapes_the_slide_id() -> None:
    from iipsrv_py import viewer

    hostile = '</script><img src=x onerror="alert(1)">&amp;'
    page = viewer.view_page(hostile, '?vt=x&exp="><script>')
    assert "<img src=x" not in page and "</script><img" not in page and '"><script>' not in page
    assert page.count("</script>") == page.count("<script")  # only our own elements
    index = viewer.index_page([(hostile, viewer.view_href(hostile))], more=False)
    assert "<img src=x" not in index and 'onerror="alert' not in index


def test_assets_stay_in_their_directories(tmp_path: Any) -> None:
    from iipsrv_py import viewer

    (tmp_path / "openseadragon").mkdir()
    (tmp_path / "openseadragon" / "a.js").write_text("ok")
    (tmp_path / "secret.txt").write_text("no")
    assert viewer.asset("npm/openseadragon/a.js", str(tmp_path)) == (b"ok", "text/javascript; charset=utf-8")
    found = viewer.asset("viewer.js", str(tmp_path))
    assert found is not None and b"slideViewer" in found[0]
    for hostile in ("npm/../secret.txt", "npm/openseadragon/../../secret.txt", "../__init__.py", "npm/", "", "a//b"):
        assert viewer.asset(hostile, str(tmp_path)) is None, hostile


def test_fetch_npm_installs_what_the_viewer_lock_pins() -> None:
    # The lock the operator's command names is the one the tests' copy comes from.
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(helpers.ROOT, "scripts", "fetch_npm.py"),
            "--check",
            "--lock",
            os.path.join(helpers.ROOT, "iipsrv_py", "viewer", "npm-lock.json"),
            "--dest",
            NODE_MODULES,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
