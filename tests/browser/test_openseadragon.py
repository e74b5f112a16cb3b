"""OpenSeadragon in a real browser against iipsrv-py behind a real nginx.

Headless Chromium (the system's ``chromium``, driven from this process by the Python
``playwright`` package, whose wheel carries its own driver: no system Node.js) opens
viewer.html, which loads OpenSeadragon from its pinned npm package and shows one
image through DeepZoom (without and with tile overlap), IIIF 2, IIIF 3 or Zoomify, each served
through the shipped nginx configuration (conf/nginx/iipsrv_py.conf) and URI_MAP paths.  The page
comes from a static server of its own on 127.0.0.1, so every image request is a cross-origin one
(CORS=* is on).  For each protocol and for two views (the home view, and a region zoomed to one
screen pixel per image pixel):

* every request the browser made to the image server got a 200, and they were the descriptor
  and tiles only; nginx logged the same tiles and no other status;
* OpenSeadragon reported no failed tile, the page logged no console error and no script error;
* the image sits where the test computes it must (fit with aspect kept, or the requested region
  filling the viewer);
* the screenshot matches the source image, read at full resolution by tifffile and reduced by
  Pillow's Lanczos filter to exactly the screen rectangle it occupies: mean and worst-block
  differences within the bounds below; the same picture 8 pixels off does not pass.

Set up by scripts/test: Debian's chromium, the playwright package (a test extra; its own
browser downloads are never used), and OpenSeadragon fetched by scripts/fetch_npm.py into
tests/browser/node_modules as iipsrv_py/viewer/npm-lock.json pins it.  Under CI=true a missing
piece is a failure, elsewhere a skip.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import signal
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image

from tests import helpers
from tests.integration import reference, servers
from tests.integration.conftest import _time_limit  # noqa: F401  (the integration tests' bound per test)

pytestmark = pytest.mark.integration

HERE = os.path.dirname(os.path.abspath(__file__))
# The npm packages the page loads: the viewer's, pinned there and fetched by scripts/fetch_npm.py.
NPM_LOCK = os.path.join(helpers.ROOT, "iipsrv_py", "viewer", "npm-lock.json")
NODE_MODULES = os.path.join(HERE, "node_modules")
# Debian's chromium by default; CHROMIUM names another build.
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Chromium as root needs --no-sandbox; the background-networking flags keep it from calling
# home (those connections are refused here and would only add noise and delay), and
# --no-proxy-server keeps every request on 127.0.0.1 whatever proxy the environment names.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
]

IMAGE = "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif"
URI_MAP = "iiif=>IIIF deepzoom=>DeepZoom zoomify=>Zoomify"
VIEWER = (800, 600)  # the viewer element of viewer.html, CSS pixels = screenshot pixels

# A viewer run (Chromium start included) takes 2-3 s here.  Every browser step together gets
# RUN_TIMEOUT (playwright's own timeouts, so a hang is reported as what hung); Chromium must
# be gone CLOSE_TIMEOUT after the run, or its processes are killed and the test fails.
RUN_TIMEOUT = 20.0
CLOSE_TIMEOUT = 5.0


# How far the screenshot may be from the reference (absolute differences on the 0-255 scale,
# averaged over the channels): over every screen pixel the image covers, and over the worst
# BLOCK x BLOCK square of them (one wrong tile shows there).  The home view shows a pyramid
# level that the browser reduces with its own filter (the 8-pixel stripes of the top rows
# alias), so it is further from a Lanczos reduction of the full image than the zoomed view,
# which shows full-resolution tiles one to one (what remains there: OpenSeadragon's canvas
# drawer stretches tiles without overlap by one pixel to hide seams; overlapping tiles are
# re-encoded by the server).  Observed with Chromium 156 and OpenSeadragon 6.1.1, mean / block:
#   home:   3.27 / 23.8 (dzi-overlap 2.20 / 11.0)
#   region: 0.69 / 3.00 (dzi-overlap 1.01 / 3.19)
# and, when the server shifted the content of its Zoomify tiles by 4 pixels, region 1.45 / 6.71.
MAX_MEAN_ABS_DIFF = {"home": 5.0, "region": 1.5}
MAX_BLOCK_ABS_DIFF = {"home": 32.0, "region": 5.0}
BLOCK = 32
# A region of the image, 4:3 like the viewer, not aligned to the 256-pixel tiles.
REGION = (1000, 600, 800, 600)
# At least this many distinct tiles make up each view (the 800x600 region at full resolution
# spans 5 x 3 tiles; the home view needs at least the 3 x 2 tiles of the 750x500 level).
MIN_TILES = {"home": 6, "region": 15}


# -- what must be installed -------------------------------------------------------------------------


def missing(message: str) -> None:
    """A failure under CI=true, else a skip."""
    if helpers.IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """playwright's Chromium launcher, once Chromium and OpenSeadragon are known to be there."""
    import fetch_npm  # scripts/, on the path through tests.helpers

    if not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} is missing (scripts/test installs Debian's chromium; CHROMIUM names another)")
    for pin in fetch_npm.load_lock(NPM_LOCK).values():
        if not fetch_npm.installed(pin, NODE_MODULES):
            missing(
                f"tests/browser/node_modules/{pin.name} is not {pin.version} (scripts/test runs scripts/fetch_npm.py)"
            )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        missing(f"the playwright package is missing ({exc}): it is a test extra, scripts/test installs it")
    # The driver playwright's wheel carries runs as a child of this process until stop().
    driver = sync_playwright().start()
    try:
        yield driver.chromium
    finally:
        driver.stop()


# -- the servers ---------------------------------------------------------------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def page_origin() -> Iterator[str]:
    """viewer.html and node_modules/openseadragon, from a static server on 127.0.0.1."""
    handler = functools.partial(_QuietHandler, directory=HERE)
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}"
        finally:
            httpd.shutdown()
            thread.join(timeout=5)


# Each server configuration runs as its own nginx -> iipsrv-py stack (the IIIF version and the
# DeepZoom overlap are server-wide settings).
SERVER_ENV = {
    "iiif3": {"IIIF_VERSION": "3"},
    "iiif2": {"IIIF_VERSION": "2"},
    "overlap": {"DEEPZOOM_OVERLAP": "1"},
}


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory, fixtures: str) -> Iterator[dict[str, servers.Stack]]:
    """Every configuration of SERVER_ENV, started before the tests (and their time limit)."""
    with contextlib.ExitStack() as cleanup:
        started = {}
        for name, variables in SERVER_ENV.items():
            workdir = str(tmp_path_factory.mktemp(name))
            env = {"CORS": "*", "URI_MAP": URI_MAP, **variables}
            started[name] = cleanup.enter_context(servers.nginx_stack(workdir, workers=2, env=env))
        yield started


# -- the protocols ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    page_type: str  # viewer.html's type parameter
    source_path: str  # what OpenSeadragon is given, below the server's root
    tile_path: re.Pattern[str]  # the path of a tile request
    server: str = "iiif3"  # the SERVER_ENV configuration it talks to


QUOTED = urllib.parse.quote(IMAGE)
DZI_TILE = re.compile(rf"^/deepzoom/{re.escape(QUOTED)}_files/\d+/\d+_\d+\.jpg$")
IIIF_TILE = re.compile(rf"^/iiif/{re.escape(QUOTED)}/\d+,\d+,\d+,\d+/\d*,\d*/0/default\.jpg$")
ZOOMIFY_TILE = re.compile(rf"^/zoomify/{re.escape(QUOTED)}/TileGroup\d+/\d+-\d+-\d+\.jpg$")
PROTOCOLS = {
    "dzi": Protocol("dzi", f"/deepzoom/{QUOTED}.dzi", DZI_TILE),
    # DEEPZOOM_OVERLAP=1: tiles overlap their neighbours by a pixel, OpenSeadragon trims them.
    "dzi-overlap": Protocol("dzi", f"/deepzoom/{QUOTED}.dzi", DZI_TILE, server="overlap"),
    "iiif2": Protocol("iiif", f"/iiif/{QUOTED}/info.json", IIIF_TILE, server="iiif2"),
    "iiif3": Protocol("iiif", f"/iiif/{QUOTED}/info.json", IIIF_TILE),
    "zoomify": Protocol("zoomify", f"/zoomify/{QUOTED}/ImageProperties.xml", ZOOMIFY_TILE),
}


# -- running the viewer -----------------------------------------------------------------------------


def chromium_processes(profile: str) -> list[int]:
    """Live processes of the Chromium that uses the user-data directory ``profile``: the
    browser and the helpers it starts carry it on their command lines (helpers rewrite theirs
    into one string, hence a substring test)."""
    marker = f"--user-data-dir={profile}".encode()
    found = []
    for pid in (int(name) for name in os.listdir("/proc") if name.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read()
        except OSError:
            continue
        if marker in command and servers.running(pid):
            found.append(pid)
    return found


def run_viewer(chromium: Any, page_url: str, screenshot: str, profile: str) -> dict[str, Any]:
    """Open the page in a fresh Chromium (user-data directory ``profile``), wait until
    OpenSeadragon has drawn every tile of the view, screenshot the viewer element, and return
    what the browser saw.  Chromium's processes are gone when this returns, whatever happened."""
    from playwright.sync_api import Error as PlaywrightError

    started = time.monotonic()

    def remaining_ms() -> float:
        return max(1000.0, (RUN_TIMEOUT - (time.monotonic() - started)) * 1000)

    summary: dict[str, Any] = {
        "page": page_url,
        "browser": None,
        "responses": [],  # every response the page received: url, status, resource type
        "requestsFailed": [],  # requests that got no response at all
        "consoleErrors": [],
        "pageErrors": [],
        "state": None,  # window.viewerTest of the page
        "error": None,  # why the run is not usable
        "seconds": None,
        "processes": 0,  # Chromium processes found by their user-data directory during the run
        "killed": [],  # Chromium processes still alive after close(), killed
    }

    def on_console(message: Any) -> None:
        if message.type == "error":
            where = message.location
            summary["consoleErrors"].append(f"{message.text} ({where.get('url')}:{where.get('lineNumber')})")

    def on_response(response: Any) -> None:
        summary["responses"].append(
            {"url": response.url, "status": response.status, "type": response.request.resource_type}
        )

    context = None
    try:
        context = chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            env=servers.base_env(),  # no proxy variables: everything is on 127.0.0.1
            viewport={"width": VIEWER[0], "height": VIEWER[1]},
            device_scale_factor=1,
            timeout=remaining_ms(),
        )
        page = context.pages[0] if context.pages else context.new_page()
        page.on("console", on_console)
        page.on("pageerror", lambda error: summary["pageErrors"].append(error.stack or str(error)))
        page.on("response", on_response)
        page.on(
            "requestfailed",
            lambda request: summary["requestsFailed"].append({"url": request.url, "failure": request.failure or ""}),
        )
        summary["browser"] = page.evaluate("() => navigator.userAgent")
        page.goto(page_url, wait_until="load", timeout=remaining_ms())
        try:
            page.wait_for_function(
                "() => window.viewerTest && (window.viewerTest.done || window.viewerTest.error)",
                polling=50,
                timeout=remaining_ms(),
            )
        finally:
            with contextlib.suppress(PlaywrightError):
                summary["state"] = page.evaluate("() => window.viewerTest ?? null")
        if summary["state"] and summary["state"]["error"]:
            raise RuntimeError(f"the page reported: {summary['state']['error']}")
        page.locator("#viewer").screenshot(path=screenshot, timeout=remaining_ms())
        # What the clean-up below will look for must be found while Chromium runs.
        summary["processes"] = len(chromium_processes(profile))
    except (PlaywrightError, RuntimeError) as exc:
        summary["error"] = str(exc)
    finally:
        if context is not None:
            with contextlib.suppress(PlaywrightError):
                context.close()
        summary["seconds"] = time.monotonic() - started
        # Chromium's helpers must not outlive the run: whatever close() left is killed.
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while (left := chromium_processes(profile)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                summary["killed"].append(pid)
    return summary


def access_log_offset(stack: servers.Stack) -> int:
    return os.path.getsize(os.path.join(stack.nginx.workdir, "access.log"))


_ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')


def access_log_since(stack: servers.Stack, offset: int) -> list[tuple[str, str, int]]:
    """``(method, path, status)`` of every request nginx logged after ``offset``."""
    with open(os.path.join(stack.nginx.workdir, "access.log"), errors="replace") as f:
        f.seek(offset)
        text = f.read()
    found = []
    for line in text.splitlines():
        match = _ACCESS_LINE.search(line)
        assert match, f"unexpected access log line: {line}"
        found.append((match["method"], match["target"], int(match["status"])))
    return found


# -- the reference picture ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def source_image(name: str) -> Image.Image:
    """The full-resolution pixels, decoded by tifffile."""
    return Image.fromarray(tifffile.imread(helpers.fixture(name), key=0))


def expected_rect(view: str, width: int, height: int) -> tuple[float, float, float, float]:
    """Where the image must be drawn, ``(x0, y0, x1, y1)`` in viewer pixels."""
    if view == "home":
        # The whole image, as large as fits with its aspect ratio kept, centred.
        scale = min(VIEWER[0] / width, VIEWER[1] / height)
        x0, y0 = (VIEWER[0] - width * scale) / 2, (VIEWER[1] - height * scale) / 2
    else:
        # The region has the viewer's aspect ratio, so it fills the viewer exactly.
        rx, ry, rw, _ = REGION
        scale = VIEWER[0] / rw
        x0, y0 = -rx * scale, -ry * scale
    return x0, y0, x0 + width * scale, y0 + height * scale


@dataclass(frozen=True)
class Difference:
    mean: float  # mean absolute difference over every pixel compared
    worst_block: float  # the same over the worst BLOCK x BLOCK square: one wrong tile shows here

    def __str__(self) -> str:
        return f"mean {self.mean:.2f}, worst {BLOCK}px block {self.worst_block:.2f}"


def reference_view(rect: tuple[float, float, float, float]) -> tuple[int, int, np.ndarray]:
    """The source as the viewer must show it: over the screen pixels the image covers wholly,
    the full-resolution pixels reduced by Lanczos to exactly those pixels.  Returns the screen
    position of the result's top left pixel and the result."""
    image = source_image(IMAGE)
    x0, y0, x1, y1 = rect
    scale_x, scale_y = image.width / (x1 - x0), image.height / (y1 - y0)
    sx0, sy0 = max(0, math.ceil(x0 - 1e-6)), max(0, math.ceil(y0 - 1e-6))
    sx1, sy1 = min(VIEWER[0], math.floor(x1 + 1e-6)), min(VIEWER[1], math.floor(y1 + 1e-6))
    box = ((sx0 - x0) * scale_x, (sy0 - y0) * scale_y, (sx1 - x0) * scale_x, (sy1 - y0) * scale_y)
    return sx0, sy0, np.asarray(image.resize((sx1 - sx0, sy1 - sy0), Image.Resampling.LANCZOS, box=box))


def compare(shot: np.ndarray, rect: tuple[float, float, float, float], moved: int = 0) -> Difference:
    """The screenshot against the reference view (``moved``: the reference put that many
    pixels to the right, to show that the measure notices a misplaced picture)."""
    left, top, expected = reference_view(rect)
    height, width = expected.shape[:2]
    got = shot[top : top + height, left + moved : left + width]
    expected = expected[:, : width - moved]
    mean = reference.mean_abs_diff(got, expected)
    per_pixel = np.abs(got.astype(np.int16) - expected.astype(np.int16)).mean(axis=2)
    rows, cols = per_pixel.shape[0] // BLOCK, per_pixel.shape[1] // BLOCK
    blocks = per_pixel[: rows * BLOCK, : cols * BLOCK].reshape(rows, BLOCK, cols, BLOCK).mean(axis=(1, 3))
    return Difference(mean, float(blocks.max()))


# -- the tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("view", ["home", "region"])
@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_openseadragon_shows_the_image(
    name: str,
    view: str,
    chromium: Any,
    page_origin: str,
    stacks: dict[str, servers.Stack],
    tmp_path,
) -> None:
    protocol = PROTOCOLS[name]
    stack = stacks[protocol.server]
    source_url = stack.nginx.base_url + protocol.source_path
    # The server really is configured as this case says.
    descriptor = stack.session.get(source_url, timeout=servers.HTTP_TIMEOUT)
    assert descriptor.status_code == 200
    if name.startswith("iiif"):
        assert descriptor.json()["@context"] == f"http://iiif.io/api/image/{name[-1]}/context.json"
    if name.startswith("dzi"):
        assert f'Overlap="{1 if name == "dzi-overlap" else 0}"' in descriptor.text
    query = {"type": protocol.page_type, "source": source_url}
    if view == "region":
        query["region"] = ",".join(map(str, REGION))
    page_url = f"{page_origin}/viewer.html?{urllib.parse.urlencode(query)}"
    screenshot_path = str(tmp_path / f"{name}-{view}.png")

    offset = access_log_offset(stack)
    summary = run_viewer(chromium, page_url, screenshot_path, str(tmp_path / "chromium-profile"))
    logged = access_log_since(stack, offset)
    assert summary["error"] is None, f"viewer run failed: {summary['error']}"
    assert summary["processes"] > 0, "Chromium's processes were not found by their user-data directory"
    state = summary["state"]

    # The browser: nothing failed, nothing complained.
    assert state["drawer"] == "canvas"
    assert summary["consoleErrors"] == []
    assert summary["pageErrors"] == []
    assert summary["requestsFailed"] == []
    assert state["tilesFailed"] == []

    # Every request to the image server got a 200; the tiles are what OpenSeadragon drew.
    server_prefix = stack.nginx.base_url + "/"
    to_server = [r for r in summary["responses"] if r["url"].startswith(server_prefix)]
    assert [r for r in to_server if r["status"] != 200] == []
    paths = [urllib.parse.urlsplit(r["url"]).path for r in to_server]
    tiles = {p for p in paths if protocol.tile_path.match(p)}
    assert sorted(set(paths) - tiles) == [protocol.source_path], "requests other than the descriptor and tiles"
    assert len(tiles) >= MIN_TILES[view], f"only {len(tiles)} tiles: {sorted(tiles)}"
    loaded = {urllib.parse.urlsplit(url).path for url in state["tilesLoaded"]}
    assert loaded <= tiles and len(loaded) >= MIN_TILES[view]

    # The server's side, as nginx logged it: the same requests, all 200.
    assert [entry for entry in logged if entry[2] != 200] == []
    assert {path for method, path, status in logged if protocol.tile_path.match(path)} == tiles
    assert {method for method, path, status in logged} == {"GET"}

    # Geometry: OpenSeadragon put the image where it must be.
    width, height = source_image(IMAGE).size
    assert state["image"] == {"width": width, "height": height}
    assert state["viewer"] == {"width": VIEWER[0], "height": VIEWER[1]}
    rect = expected_rect(view, width, height)
    got = state["imageRect"]
    assert [got["x0"], got["y0"], got["x1"], got["y1"]] == pytest.approx(rect, abs=0.5)

    # Pixels: the screenshot is the source image.
    shot = np.asarray(Image.open(screenshot_path).convert("RGB"))
    assert shot.shape == (VIEWER[1], VIEWER[0], 3)
    difference = compare(shot, rect)
    moved = compare(shot, rect, moved=8)
    print(
        f"{name} {view}: {summary['seconds']:.1f}s, {len(tiles)} tiles; {difference}; 8 pixels off: {moved};"
        f" {summary['browser']}; killed after close: {summary['killed']}"
    )
    assert difference.mean < MAX_MEAN_ABS_DIFF[view], str(difference)
    assert difference.worst_block < MAX_BLOCK_ABS_DIFF[view], str(difference)
    # ...and the same picture 8 pixels off would not pass: the bounds discriminate.
    assert moved.mean > MAX_MEAN_ABS_DIFF[view] or moved.worst_block > MAX_BLOCK_ABS_DIFF[view], str(moved)
    if view == "home":
        # Nothing drawn outside the image: the letterbox bands stay the page's black.  (The
        # canvas drawer paints tiles one pixel larger than they are, to hide seams, hence + 1.)
        top, bottom = math.floor(rect[1]), math.ceil(rect[3]) + 1
        assert shot[:top].max() == 0 and shot[bottom:].max() == 0
