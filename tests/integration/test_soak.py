"""A minute of mixed traffic at 32 concurrent connections through the shipped nginx files.

Every protocol at once (IIP tiles and views with processing, IIIF tiles, regions and info.json,
DeepZoom, Zoomify, the slide REST API) plus deliberate client errors, with distinct URLs (random
tiles, regions, sizes and parameters, so the caches cannot answer everything) and a share of
repeated ones (so they answer some).  Afterwards: every status was the one its URL class must
get, a sample of bodies decodes to the expected geometry and pixels (tifffile and Pillow, not
the server, are the reference), the workers are the ones that started (none replaced, no
zombie), their memory grew by less than a stated bound, SIGHUP empties the caches while the
same workers go on serving, and SIGTERM stops the pool within seconds.
"""

from __future__ import annotations

import json
import math
import random
import re
import signal
import statistics
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from tests import helpers
from tests.functional import reference as base
from tests.integration import reference, servers
from tests.integration.memcached_server import layers

pytestmark = pytest.mark.integration

CLIENTS = 32
WORKERS = 2
WARMUP_S = 8.0
SOAK_S = 60.0
STOP_LIMIT = 5.0  # SPEC section 1: SIGTERM stops the pool and its workers promptly
CACHE_MB = 32  # MAX_IMAGE_CACHE_SIZE of each worker
# How much a worker's resident memory may grow from the end of the warm-up to the end of the
# soak: its cache budget (which the warm-up need not have filled) plus the 32 MB of slack the
# memory budget test allows for what the allocator keeps after the large arrays of whole-view
# renderings are freed and for codec libraries' buffers.  Measured with 2 workers on 2 cores:
# 4 to 17 MB of growth (docs-reliability.md).  Over the 4000 to 6000 requests each worker
# serves, a leak of 11 to 16 KB per request would exceed it; the test checks that each worker
# served enough requests for a leak of LEAK_KB to show.
RSS_GROWTH_MB = CACHE_MB + 32
LEAK_KB = 32
SAMPLE_EVERY = 8  # bodies kept (and checked) of one request in this many, per URL class
HOT_SHARE = 0.25  # requests that repeat one of a fixed set of URLs

JPEG_TILES = "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif"  # stored JPEG: passthrough
DEFLATE = "tif-rgb-3000x2000-5lvl-256tile-deflate.tif"  # decoded and encoded again
SUBIFD = "tif-rgb-1200x800-4lvl-256tile-deflate-vips-subifd.tif"
SVS = "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs"
PYRAMIDS = (JPEG_TILES, DEFLATE, SUBIFD)
FCGI = servers.FCGI_PATH


@dataclass(frozen=True)
class Case:
    kind: str
    url: str  # path and query, below the nginx base URL
    status: int
    check: Callable[[bytes], None]


# -- body checks: geometry and pixels from tifffile/Pillow, never from the server -------------------


def image_check(
    fmt: str, size: tuple[int, int], pixels: np.ndarray | None = None, tolerance: float | None = None
) -> Callable[[bytes], None]:
    """The body is an image of this format and size; with ``pixels``, it decodes to them within
    ``tolerance`` (mean absolute difference), or, without one, within what a JPEG at the
    server's default quality (75) of those pixels differs by (with a margin)."""

    def check(body: bytes) -> None:
        decoded = reference.decode(body, fmt)
        assert (decoded.shape[1], decoded.shape[0]) == size, f"{decoded.shape[1]}x{decoded.shape[0]} != {size}"
        if pixels is not None:
            limit = tolerance if tolerance is not None else 1.5 * reference.jpeg_error(pixels, 75) + 1
            assert reference.mean_abs_diff(decoded, pixels) <= limit

    return check


def decodes_check(fmt: str) -> Callable[[bytes], None]:
    def check(body: bytes) -> None:
        reference.decode(body, fmt)

    return check


def info_check(size: tuple[int, int]) -> Callable[[bytes], None]:
    def check(body: bytes) -> None:
        info = json.loads(body)
        assert (info["width"], info["height"]) == size

    return check


def dzi_check(size: tuple[int, int]) -> Callable[[bytes], None]:
    def check(body: bytes) -> None:
        node = ET.fromstring(body).find("{http://schemas.microsoft.com/deepzoom/2008}Size")
        assert node is not None and (int(node.get("Width", 0)), int(node.get("Height", 0))) == size

    return check


def slide_check(size: tuple[int, int], level_count: int) -> Callable[[bytes], None]:
    def check(body: bytes) -> None:
        slide = json.loads(body)
        assert (slide["width"], slide["height"], slide["level_count"]) == (*size, level_count)

    return check


def error_check(body: bytes) -> None:
    # SPEC section 3: an error body never names a server path.
    assert helpers.FIXTURES.encode() not in body and b"Traceback" not in body, body[:200]


# -- the traffic ----------------------------------------------------------------------------------


def full_size(name: str) -> tuple[int, int]:
    level = base.levels(name)[0]
    return level.width, level.height


class Mix:
    """Random requests of every class, each with its expected status and body check."""

    def __init__(self) -> None:
        self.cases: dict[str, Case] = {}
        hot_rng = random.Random(7)
        self.hot = [self.fresh(hot_rng) for _ in range(40)]

    def _add(self, kind: str, url: str, status: int, check: Callable[[bytes], None]) -> Case:
        case = Case(kind, url, status, check)
        self.cases.setdefault(url, case)
        return case

    def iip_tile(self, rng: random.Random) -> Case:
        name = rng.choice(PYRAMIDS)
        levels = reference.levels(name)
        res = rng.randrange(len(levels))
        index = rng.randrange(levels[res].tiles_x * levels[res].tiles_y)
        _, _, w, h = levels[res].tile_box(index)
        pixels = reference.tile_pixels(name, res, index)
        # Whole stored JPEG tiles are sent as stored (decoders' differences only); edge tiles
        # (cropped) and other compressions are encoded again.
        tolerance = 2.0 if name == JPEG_TILES and (w, h) == (256, 256) else None
        return self._add(
            "iip-tile", f"{FCGI}?FIF={name}&JTL={res},{index}", 200, image_check("JPEG", (w, h), pixels, tolerance)
        )

    def iiif_tile(self, rng: random.Random) -> Case:
        name = rng.choice(PYRAMIDS)
        stored = base.levels(name)
        level = rng.randrange(len(stored))
        scale = 2**level
        lw, lh = stored[level].width, stored[level].height
        col, row = rng.randrange(-(-lw // 256)), rng.randrange(-(-lh // 256))
        w, h = min(256, lw - 256 * col), min(256, lh - 256 * row)
        width, height = full_size(name)
        x, y = 256 * col * scale, 256 * row * scale
        rw, rh = min(256 * scale, width - x), min(256 * scale, height - y)
        url = f"/iiif/{name}/{x},{y},{rw},{rh}/{w},{h}/0/default.jpg"
        return self._add("iiif-tile", url, 200, image_check("JPEG", (w, h)))

    def deepzoom_tile(self, rng: random.Random) -> Case:
        name = rng.choice(PYRAMIDS)
        width, height = full_size(name)
        top = math.ceil(math.log2(max(width, height)))
        level = rng.randrange(top - 4, top + 1)
        lw, lh = math.ceil(width / 2 ** (top - level)), math.ceil(height / 2 ** (top - level))
        col, row = rng.randrange(-(-lw // 256)), rng.randrange(-(-lh // 256))
        size = (min(256, lw - 256 * col), min(256, lh - 256 * row))
        ext, fmt = rng.choice([("jpg", "JPEG"), ("png", "PNG")])
        return self._add(
            "deepzoom-tile", f"/deepzoom/{name}_files/{level}/{col}_{row}.{ext}", 200, image_check(fmt, size)
        )

    def zoomify_tile(self, rng: random.Random) -> Case:
        name = rng.choice(PYRAMIDS)
        levels = reference.levels(name)  # smallest first: Zoomify's z where the smallest fits a tile
        z = rng.randrange(len(levels))
        level = levels[z]
        col, row = rng.randrange(level.tiles_x), rng.randrange(level.tiles_y)
        size = (min(256, level.width - 256 * col), min(256, level.height - 256 * row))
        return self._add(
            "zoomify-tile", f"/zoomify/{name}/TileGroup0/{z}-{col}-{row}.jpg", 200, image_check("JPEG", size)
        )

    def iiif_region(self, rng: random.Random) -> Case:
        name = rng.choice(PYRAMIDS)
        width, height = full_size(name)
        x, y = rng.randrange(width - 64), rng.randrange(height - 64)
        rw, rh = rng.randint(64, width - x), rng.randint(64, height - y)
        w, h = rng.randint(16, min(rw, 700)), rng.randint(16, min(rh, 700))
        fmt, ext = rng.choice([("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")])
        url = f"/iiif/{name}/{x},{y},{rw},{rh}/{w},{h}/0/default.{ext}"
        return self._add("iiif-region", url, 200, image_check(fmt, (w, h)))

    def cvt_region(self, rng: random.Random) -> Case:
        name = rng.choice(PYRAMIDS)
        width, height = full_size(name)
        a, b = rng.randrange(0, 60) / 100, rng.randrange(0, 60) / 100
        c, d = rng.randrange(10, 41) / 100, rng.randrange(10, 41) / 100
        wid = rng.randint(32, 600)
        # SPEC section 6: height = round(WID / ratio), ratio = (w * W) / (h * H).
        hei = max(1, round(wid / ((c * width) / (d * height))))
        url = f"{FCGI}?FIF={name}&RGN={a},{b},{c},{d}&WID={wid}&CVT=jpeg"
        return self._add("cvt-region", url, 200, image_check("JPEG", (wid, hei)))

    def processing(self, rng: random.Random) -> Case:
        name = rng.choice(PYRAMIDS)
        width, height = full_size(name)
        wid = rng.randint(64, 400)
        hei = round(wid * height / width)
        op = rng.choice(
            [
                f"CNT={rng.uniform(0.5, 2.0):.2f}",
                f"GAM={rng.uniform(0.5, 2.0):.2f}",
                "INV=1",
                f"CMP={rng.choice(['hot', 'cold', 'jet', 'blue', 'green', 'red'])}",
                f"ROT={rng.choice([90, 270])}",
                f"ROT={rng.randint(1, 89)}",
                "COL=gray",
                "CNV=sobel",
            ]
        )
        url = f"{FCGI}?FIF={name}&WID={wid}&{op}&CVT=png"
        if op.startswith("ROT=") and op[4:] not in ("90", "270"):
            check = decodes_check("PNG")  # an arbitrary angle: the bounding box of the rotated view
        else:
            check = image_check("PNG", (hei, wid) if op in ("ROT=90", "ROT=270") else (wid, hei))
        return self._add("processing", url, 200, check)

    def metadata(self, rng: random.Random) -> Case:
        name = rng.choice(PYRAMIDS)
        size = full_size(name)
        # A query string after info.json makes a distinct URL of the same document.
        n = rng.randrange(1000)
        if rng.random() < 0.5:
            return self._add("info.json", f"/iiif/{name}/info.json?n={n}", 200, info_check(size))
        return self._add("dzi", f"/deepzoom/{name}.dzi", 200, dzi_check(size))

    def rest(self, rng: random.Random) -> Case:
        if rng.random() < 0.3:
            return self._add("rest-slide", f"/slides/{SVS}", 200, slide_check((4097, 2999), 3))
        name = rng.choice(PYRAMIDS)
        stored = base.levels(name)  # REST level 0 = full resolution
        level = rng.randrange(len(stored))
        lw, lh = stored[level].width, stored[level].height
        col, row = rng.randrange(-(-lw // 256)), rng.randrange(-(-lh // 256))
        size = (min(256, lw - 256 * col), min(256, lh - 256 * row))
        return self._add("rest-tile", f"/tiles/{name}/{level}/{col}/{row}.jpg", 200, image_check("JPEG", size))

    def error(self, rng: random.Random) -> Case:
        n = rng.randrange(100000)
        name = rng.choice(PYRAMIDS)
        levels = reference.levels(name)
        tiles = levels[-1].tiles_x * levels[-1].tiles_y
        choices = [
            ("unknown-image", f"{FCGI}?FIF=no-such-{n}.tif&JTL=0,0", 404),
            ("unknown-image", f"/iiif/no-such-{n}.tif/info.json", 404),
            ("bad-syntax", f"/iiif/{name}/0,0,0,{n}/max/0/default.jpg", 400),
            ("bad-syntax", f"/iiif/{name}/full/max/0/default.gif?n={n}", 400),
            ("bad-syntax", f"{FCGI}?FIF={name}&QQQ={n}", 400),
            ("out-of-range", f"{FCGI}?FIF={name}&JTL={len(levels) - 1},{tiles + n}", 404),
            ("out-of-range", f"{FCGI}?FIF={name}&JTL={len(levels) + n % 5},0", 404),
            ("out-of-range", f"/deepzoom/{name}_files/8/{1000 + n}_0.jpg", 404),
        ]
        kind, url, status = rng.choice(choices)
        return self._add(kind, url, status, error_check)

    def fresh(self, rng: random.Random) -> Case:
        make = rng.choices(
            [
                self.iip_tile,
                self.iiif_tile,
                self.deepzoom_tile,
                self.zoomify_tile,
                self.iiif_region,
                self.cvt_region,
                self.processing,
                self.metadata,
                self.rest,
                self.error,
            ],
            [18, 12, 8, 6, 10, 8, 10, 10, 8, 10],
        )[0]
        return make(rng)

    def picker(self, seed: int) -> Callable[[int, int], str]:
        rngs: dict[int, random.Random] = {}

        def pick(client: int, count: int) -> str:
            rng = rngs.setdefault(client, random.Random(seed * 1000 + client))
            case = rng.choice(self.hot) if rng.random() < HOT_SHARE else self.fresh(rng)
            return case.url

        return pick


# -- the test --------------------------------------------------------------------------------------


def run_load(stack: servers.Stack, mix: Mix, seconds: float, seed: int) -> list[servers.Outcome]:
    base_url = stack.nginx.base_url
    counts: Counter[str] = Counter()

    def pick(client: int, count: int) -> str:
        return base_url + inner(client, count)

    def keep(url: str) -> bool:
        kind = mix.cases[url[len(base_url) :]].kind
        counts[kind] += 1
        return counts[kind] % SAMPLE_EVERY == 1

    inner = mix.picker(seed)
    with servers.ConcurrentLoad(pick, CLIENTS, keep) as load:
        time.sleep(seconds)
    return [
        servers.Outcome(o.url[len(base_url) :], o.started, o.ended, o.status, o.body, o.error) for o in load.outcomes
    ]


def verify(mix: Mix, outcomes: list[servers.Outcome]) -> Counter[str]:
    """Every status as expected for its URL class; every kept body passes its check."""
    wrong = [f"{o.url} -> {o.status} {o.error}" for o in outcomes if o.status != mix.cases[o.url].status]
    assert not wrong, f"{len(wrong)} of {len(outcomes)} answers were not the expected status: {wrong[:10]}"
    checked: Counter[str] = Counter()
    for o in outcomes:
        if o.body is not None:
            case = mix.cases[o.url]
            try:
                case.check(o.body)
            except AssertionError as exc:
                raise AssertionError(f"{o.url}: {exc}") from exc
            checked[case.kind] += 1
    return checked


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@pytest.mark.time_limit(110)
def test_a_minute_of_mixed_traffic(workdir: str, fixtures: str, capsys: pytest.CaptureFixture[str]) -> None:
    env = {
        "URI_MAP": "iiif=>IIIF deepzoom=>DeepZoom zoomify=>Zoomify",
        "MAX_IMAGE_CACHE_SIZE": str(CACHE_MB),
        "VERBOSITY": "2",  # the access lines name what answered each request
    }
    mix = Mix()
    with servers.nginx_stack(workdir, workers=WORKERS, env=env) as stack:
        workers = stack.server.wait_workers(WORKERS)

        # Warm-up: every class of request, modules and codec libraries loaded, allocator settled.
        warm = run_load(stack, mix, WARMUP_S, seed=1)
        verify(mix, warm)
        before = {pid: servers.rss_mb(pid) for pid in workers}

        log_offset = len(stack.server.log())
        started = time.monotonic()
        outcomes = run_load(stack, mix, SOAK_S, seed=2)
        elapsed = time.monotonic() - started
        after = {pid: servers.rss_mb(pid) for pid in workers}

        # The same workers, none replaced, none left unreaped.
        assert stack.server.workers() == workers, "a worker was replaced during the soak"
        assert servers.zombie_children(stack.server.pid) == []
        assert stack.server.alive()
        assert "exited" not in stack.server.log()
        checked = verify(mix, outcomes)

        rendered = rendered_mb(stack.server.log()[log_offset:])
        latencies = [o.ended - o.started for o in outcomes]
        kinds = Counter(mix.cases[o.url].kind for o in outcomes)
        distinct = len({o.url for o in outcomes})
        with capsys.disabled():
            print(
                f"\nsoak: {len(outcomes)} requests ({distinct} distinct URLs) in {elapsed:.1f}s at {CLIENTS} "
                f"connections: {len(outcomes) / elapsed:.1f} req/s, latency p50 "
                f"{statistics.median(latencies) * 1000:.0f} ms, p99 {percentile(latencies, 0.99) * 1000:.0f} ms, "
                f"max {max(latencies) * 1000:.0f} ms"
            )
            print(f"soak: by class {dict(sorted(kinds.items()))}; bodies checked {sum(checked.values())}")
            for pid in workers:
                print(
                    f"soak: worker {pid} RSS {before[pid]:.0f} MB after warm-up, {after[pid]:.0f} MB after the soak; "
                    f"{rendered.get(pid, 0):.0f} MB of responses rendered"
                )

        assert set(checked) >= {k for k, n in kinds.items() if n >= SAMPLE_EVERY}, "every class had bodies checked"
        assert distinct > len(outcomes) / 3, "mostly distinct URLs"
        assert len(outcomes) > 20 * SOAK_S, "fewer than 20 requests a second: the server stalled"
        per_worker = len(outcomes) / WORKERS
        assert RSS_GROWTH_MB * 1024 / per_worker < LEAK_KB, "too few requests for the memory bound to show a leak"
        for pid in workers:
            assert after[pid] - before[pid] < RSS_GROWTH_MB, (
                f"worker {pid} grew from {before[pid]:.0f} MB to {after[pid]:.0f} MB"
            )

        sighup_empties_the_caches(stack, mix, workers)
        stopped = sigterm_stops_the_pool(stack, mix, workers)
        with capsys.disabled():
            print(f"soak: SIGTERM with requests in flight stopped the pool in {stopped:.2f}s")


# "GET <uri> -> 200 <size>B <ms>ms rendered": a response a worker produced (app._log).
_RENDERED = re.compile(r"iipsrv-py\[(\d+)\] INFO \w+ \S+ \w+ -> 200 (\d+)B [0-9.]+ms rendered$", re.MULTILINE)


def rendered_mb(log: str) -> dict[int, float]:
    """MB of responses each worker rendered (rather than sent from a cache), by pid."""
    total: Counter[int] = Counter()
    for match in _RENDERED.finditer(log):
        total[int(match[1])] += int(match[2])
    return {pid: size / 2**20 for pid, size in total.items()}


def sighup_empties_the_caches(stack: servers.Stack, mix: Mix, workers: list[int]) -> None:
    """After SIGHUP the first request for each URL that the caches had answered during the soak
    is rendered again, by the same workers; a second pass is answered from a cache again."""
    log = stack.server.log()
    iip = [c.url[len(FCGI) + 1 :] for c in mix.hot if c.url.startswith(FCGI + "?") and c.status == 200]
    cached = [q for q in iip if {"shortcut", "worker"} & set(layers(log, q))]
    assert len(cached) >= 3, "repeated requests were answered from the workers' caches during the soak"
    offset = len(log)
    stack.server.signal(signal.SIGHUP)

    def cleared() -> set[int]:
        text = stack.server.log()[offset:]
        return {int(pid) for pid in re.findall(r"iipsrv-py\[(\d+)\] INFO caches cleared", text)}

    # Each worker empties its caches before its next request: the first pass is all rendered.
    servers.wait_until(lambda: "SIGHUP" in stack.server.log()[offset:], 5, "the supervisor to log SIGHUP")
    time.sleep(0.2)  # the supervisor forwards the signal to its workers
    for query in cached:
        response = stack.get(query)
        assert response.status_code == 200
        mix.cases[f"{FCGI}?{query}"].check(response.content)
    after = stack.server.log()[offset:]
    assert [layers(after, q) for q in cached] == [["rendered"]] * len(cached)

    # Both workers cleared theirs and still serve.  Renderings of new views reach both: a busy
    # worker gives up its idle kept connections, so nginx opens new ones, which the other accepts.
    rng = random.Random(3)

    def both_cleared() -> bool:
        with servers.ConcurrentLoad(lambda c, n: stack.nginx.base_url + mix.processing(rng).url, 4) as load:
            time.sleep(0.5)
        assert all(o.status == 200 for o in load.outcomes), [(o.url, o.status) for o in load.outcomes]
        return cleared() >= set(workers)

    servers.wait_until(both_cleared, 10, "both workers to clear their caches", interval=0)
    assert stack.server.workers() == workers, "SIGHUP must not restart workers"
    # The emptied caches fill again: once each URL is sent twice more, one worker or the other
    # has rendered it before (each worker has caches of its own).
    for query in cached + cached:
        assert stack.get(query).status_code == 200
    after = stack.server.log()[offset:]
    for query in cached:
        answered = layers(after, query)[-2:]
        assert {"shortcut", "worker"} & set(answered), (query, answered)


def sigterm_stops_the_pool(stack: servers.Stack, mix: Mix, workers: list[int]) -> float:
    """SIGTERM with requests in flight: the supervisor and every worker are gone within seconds."""
    with servers.ConcurrentLoad(lambda c, n: stack.nginx.base_url + mix.hot[(c + n) % len(mix.hot)].url, 8):
        time.sleep(0.5)
        started = time.monotonic()
        stack.server.signal(signal.SIGTERM)
        stack.server.wait_exit(timeout=STOP_LIMIT)
        servers.wait_until(
            lambda: not any(servers.running(pid) for pid in workers),
            STOP_LIMIT - (time.monotonic() - started),
            "every worker to exit",
        )
        stopped = time.monotonic() - started
    assert not servers.group_members(stack.server.pid)
    assert "FastCGI pool stopped" in stack.server.log()
    return stopped
