"""Kept FastCGI connections and slow renderings, through the shipped nginx configuration.

nginx hands a request to any idle connection of its keepalive cache, and a connection belongs to
one worker: without care, a warm tile sent on a connection of a worker that is rendering a large
image waits for the whole rendering.  A native worker whose request runs long gives up its idle
kept connections; nginx then sends such a tile again on another connection, to the other worker.
Here one client renders large, distinct images one after another while another asks for warm
tiles: no tile may wait anywhere near as long as a rendering takes.
"""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration import servers

pytestmark = pytest.mark.integration

SLOW_IMAGE = "tif-rgb-4099x3071-4lvl-step4-256tile-jpeg.tif"
TILE_IMAGE = "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif"
TILES = [f"FIF={TILE_IMAGE}&JTL=4,{n}" for n in range(12)]
VIEWERS = 4


def test_warm_tiles_do_not_wait_behind_a_rendering_on_kept_connections(workdir: str) -> None:
    with servers.nginx_stack(workdir, workers=2, engine="native") as stack:
        expected = {}
        # Several concurrent clients, so that nginx keeps connections to both workers.
        with ThreadPoolExecutor(4) as pool:
            for _ in range(3):
                for query, response in zip(TILES, pool.map(stack.fresh_get, TILES), strict=True):
                    assert response.status_code == 200
                    expected[query] = response.content
        renderings: list[float] = []
        stop = threading.Event()

        def render() -> None:
            with servers.http_session() as session:
                width = 4099
                while not stop.is_set():
                    started = time.monotonic()
                    # Distinct each time, so no cache answers it: a whole-image PNG.
                    response = session.get(
                        stack.nginx.url(f"FIF={SLOW_IMAGE}&WID={width}&CVT=png"), timeout=servers.HTTP_TIMEOUT
                    )
                    assert response.status_code == 200
                    renderings.append(time.monotonic() - started)
                    width -= 1

        def tiles() -> list[float]:
            """Warm tiles for a few seconds, as one of several viewers (so that nginx needs
            several of its cached connections at once, to both workers)."""
            latencies = []
            with servers.http_session() as session:
                deadline = time.monotonic() + 4.0
                while time.monotonic() < deadline:
                    for query in TILES:
                        started = time.monotonic()
                        response = session.get(stack.nginx.url(query), timeout=servers.HTTP_TIMEOUT)
                        latencies.append(time.monotonic() - started)
                        assert response.status_code == 200 and response.content == expected[query]
                        time.sleep(0.01)
            return latencies

        renderer = threading.Thread(target=render, daemon=True)
        renderer.start()
        try:
            time.sleep(0.2)
            with ThreadPoolExecutor(VIEWERS) as pool:
                latencies = [t for viewer in pool.map(lambda _: tiles(), range(VIEWERS)) for t in viewer]
        finally:
            stop.set()
            renderer.join(timeout=20)
    assert renderings, "no rendering finished"
    # The renderings are slow enough that a tile waiting behind one would show it ...
    assert statistics.median(renderings) > 0.4, renderings
    # ... and no tile waited behind one.
    print(f"tile latency max {max(latencies) * 1000:.0f} ms, renderings median {statistics.median(renderings):.2f} s")
    assert max(latencies) < 0.25, (max(latencies), statistics.median(renderings))
