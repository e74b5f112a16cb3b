"""Faults while the pool is under concurrent load, through the shipped nginx files.

test_process_management, test_memcached_pools and test_s3_faults cause the same faults with
one request at a time (or one sequential client); here several clients keep the workers busy
while a worker is killed, an image is replaced, truncated or made unreadable, memcached stops
and the object store stops.  Every answer is judged by when it was asked: before the fault it
must be the right one, after it the one the fault leads to, and only a request that straddles
the moment may get either.  "Right" means the pixels tifffile decodes from the file (or the
file's geometry for info.json), never bytes the server produced.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from tests import helpers, s3_store
from tests.integration import reference, servers
from tests.integration.memcached_server import Memcached
from tests.integration.test_soak import image_check

pytestmark = pytest.mark.integration

JPEG_TILES = "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif"
DEFLATE = "tif-rgb-3000x2000-5lvl-256tile-deflate.tif"
# Another geometry (1200 x 800, four levels) and other pixels: a replaced file shows.
SMALLER = "tif-rgb-1200x800-4lvl-256tile-deflate-vips-subifd.tif"
CLIENTS = 6
FCGI = servers.FCGI_PATH
STORAGE_ERRORS = (502, 503, 504)  # SPEC section 11: an unreachable store, within seconds

Verdict = Callable[[servers.Outcome], bool]


def tile_queries(name: str, served_as: str | None = None) -> list[str]:
    """``FIF=<served_as>&JTL=r,t`` for every tile of ``name``."""
    levels = reference.levels(name)
    return [
        f"FIF={served_as or name}&JTL={res},{index}"
        for res, level in enumerate(levels)
        for index in range(level.tiles_x * level.tiles_y)
    ]


@functools.lru_cache(maxsize=8192)
def is_tile(name: str, res: int, index: int, body: bytes) -> bool:
    """Whether ``body`` is tile ``index`` of IIP resolution ``res`` of ``name`` (cached: under
    load the same bytes come back many times)."""
    levels = reference.levels(name)
    if res >= len(levels) or index >= levels[res].tiles_x * levels[res].tiles_y:
        return False
    _, _, w, h = levels[res].tile_box(index)
    try:
        image_check("JPEG", (w, h), reference.tile_pixels(name, res, index))(body)
    except AssertionError:
        return False
    return True


def tile_is(name: str) -> Verdict:
    """A 200 whose body is that tile of ``name`` (the query's JTL), decoded independently."""

    def verdict(outcome: servers.Outcome) -> bool:
        match = re.search(r"JTL=(\d+),(\d+)", outcome.url)
        assert match is not None
        if outcome.status != 200 or outcome.body is None:
            return False
        return is_tile(name, int(match[1]), int(match[2]), outcome.body)

    return verdict


def answers(name: str) -> Verdict:
    """The right answer for ``name``: its tile, its info.json geometry, or the 404 of a tile or
    resolution it does not have."""
    tile = tile_is(name)
    level = reference.levels(name)[-1]

    def verdict(outcome: servers.Outcome) -> bool:
        if "info.json" in outcome.url:
            if outcome.status != 200 or outcome.body is None:
                return False
            info = json.loads(outcome.body)
            return (info["width"], info["height"]) == (level.width, level.height)
        match = re.search(r"JTL=(\d+),(\d+)", outcome.url)
        assert match is not None
        levels = reference.levels(name)
        res, index = int(match[1]), int(match[2])
        if res >= len(levels) or index >= levels[res].tiles_x * levels[res].tiles_y:
            return outcome.status == 404
        return tile(outcome)

    return verdict


def status_in(*statuses: int) -> Verdict:
    return lambda outcome: outcome.status in statuses


def either(*verdicts: Verdict) -> Verdict:
    return lambda outcome: any(v(outcome) for v in verdicts)


def judge(outcomes: list[servers.Outcome], phases: list[tuple[float, Verdict]]) -> list[str]:
    """What went wrong: ``phases`` are (the moment a state began, what is right in it), in order
    (the first state holds from the start); an outcome must be right in the state its request
    ran in, or in one of them when it overlapped several."""
    wrong = []
    for o in outcomes:
        overlapped = [
            verdict
            for i, (begun, verdict) in enumerate(phases)
            if (i == 0 or o.ended >= begun) and (i + 1 == len(phases) or o.started < phases[i + 1][0])
        ]
        if not any(v(o) for v in overlapped):
            wrong.append(f"{o.url} -> {o.status} {o.error}".strip())
    return wrong


def cycling(stack: servers.Stack, queries: list[str]) -> Callable[[int, int], str]:
    """Each client walks the list from its own offset, so the clients overlap on every query."""
    step = max(1, len(queries) // CLIENTS)
    return lambda client, count: stack.nginx.url(queries[(client * step + count) % len(queries)])


def hold(seconds: float) -> float:
    """Now; then the load runs on for ``seconds``."""
    now = time.monotonic()
    time.sleep(seconds)
    return now


def workers_unharmed(server: servers.IIPServer, workers: list[int]) -> None:
    assert server.alive()
    assert server.workers() == workers, "a worker died or was replaced"
    assert servers.zombie_children(server.pid) == []
    assert " exited" not in server.log()


# -- kill -9 -----------------------------------------------------------------------------------------

KILLS = 3
# What a kill may cost: the request the victim was running (nginx sends a request again when
# it failed on a kept connection, but not always: e.g. when it had sent part of the answer),
# and one it had accepted on a new connection but not read yet.
FAILURES_PER_KILL = 2


@pytest.mark.time_limit(60)
def test_workers_killed_in_turn_under_load(workdir: str, fixtures: str) -> None:
    with servers.nginx_stack(workdir, workers=2) as stack:
        first = stack.server.wait_workers(2)
        # Tiles and some renderings of whole views (~0.1 s), so that a kill finds work in flight.
        queries = tile_queries(JPEG_TILES) + tile_queries(DEFLATE)[::3]
        queries += [f"FIF={DEFLATE}&WID={900 + i}&CVT=jpeg" for i in range(0, len(queries), 10)]
        victims: list[int] = []
        with servers.ConcurrentLoad(cycling(stack, queries), CLIENTS) as load:
            servers.wait_until(lambda: len(load.outcomes) >= 50, 10, "the load to get going")
            for turn in range(KILLS):
                current = stack.server.wait_workers(2)
                if turn == 0:
                    victim = current[0]
                elif turn == 1:
                    victim = servers.wait_busy_worker(stack.server)  # one with a request in hand
                else:
                    victim = max(current, key=lambda pid: pid not in first)  # a replacement
                os.kill(victim, signal.SIGKILL)
                victims.append(victim)
                servers.wait_until(
                    lambda: len(w := stack.server.workers()) == 2 and not set(victims) & set(w),
                    10,
                    "a replacement worker",
                )
                goal = len(load.outcomes) + 30
                servers.wait_until(lambda: len(load.outcomes) >= goal, 10, "the load to go on")  # noqa: B023
            replaced = time.monotonic()
            hold(1.5)
        final = stack.server.workers()

        def right(outcome: servers.Outcome) -> bool:
            view = re.search(r"WID=(\d+)&CVT", outcome.url)
            if view is None:
                return tile_is(JPEG_TILES if JPEG_TILES in outcome.url else DEFLATE)(outcome)
            if outcome.status != 200 or outcome.body is None:
                return False
            width = int(view[1])
            try:  # the whole 3000 x 2000 image at that width (SPEC section 6)
                image_check("JPEG", (width, round(width * 2000 / 3000)))(outcome.body)
            except AssertionError:
                return False
            return True

        failures = [f"{o.url} -> {o.status} {o.error}" for o in load.outcomes if not right(o)]
        after = [o for o in load.since(replaced) if not right(o)]
        print(f"\nkill -9 x{KILLS} under load: {len(load.outcomes)} requests, {len(failures)} failed: {failures}")
        assert len(failures) <= KILLS * FAILURES_PER_KILL, failures
        assert after == [], "every answer after the last replacement is right"
        assert len(load.since(replaced)) > 20
        assert set(final).isdisjoint(victims) and len(final) == 2
        assert len(set(first) & set(final)) <= 1
        assert servers.zombie_children(stack.server.pid) == []
        log = stack.server.log()
        assert sorted(int(p) for p in re.findall(r"worker (\d+) exited", log)) == sorted(victims)
        assert not re.search(r" -> 5\d\d ", log), "no worker answered 5xx"


# -- the file under the name changes -----------------------------------------------------------------


def live_queries() -> list[str]:
    """Requests for ``live.tif`` whose answers differ between JPEG_TILES and SMALLER: tiles of
    the three smallest resolutions (both have them, in other sizes and pixels), a tile of
    the full size of JPEG_TILES (a resolution SMALLER lacks: 404) and info.json."""
    small = [q for q in tile_queries(SMALLER, "live.tif") if re.search(r"JTL=[0-2],", q)]
    return [*small, "FIF=live.tif&JTL=4,0", "FIF=live.tif&JTL=4,50", "IIIF=/live.tif/info.json"]


def private_images(workdir: str) -> str:
    root = os.path.join(workdir, "images")
    os.makedirs(root)
    shutil.copyfile(helpers.fixture(JPEG_TILES), os.path.join(root, "live.tif"))
    return root


def replace(root: str, name: str) -> None:
    """Atomically: the file is complete under another name first, then renamed over live.tif."""
    incoming = os.path.join(root, ".incoming")
    shutil.copyfile(helpers.fixture(name), incoming)
    os.replace(incoming, os.path.join(root, "live.tif"))


@pytest.mark.time_limit(60)
def test_a_file_replaced_and_truncated_while_served(workdir: str, fixtures: str) -> None:
    root = private_images(workdir)
    with servers.nginx_stack(workdir, workers=2, env={"FILESYSTEM_PREFIX": root + "/"}) as stack:
        workers = stack.server.wait_workers(2)
        queries = live_queries()
        with servers.ConcurrentLoad(cycling(stack, queries), CLIENTS) as load:
            begun = time.monotonic()
            hold(1.5)
            replaced_from = time.monotonic()
            replace(root, SMALLER)
            replaced = hold(2.0)
            # In place (same inode): the tail of the file, with the reduced levels' tiles and
            # IFDs, is gone; the header and the full-size level's first IFD remain.
            live = os.path.join(root, "live.tif")
            truncated_from = time.monotonic()
            os.truncate(live, int(os.path.getsize(live) * 0.65))
            truncated = hold(2.0)
            restored_from = time.monotonic()
            replace(root, JPEG_TILES)
            restored = hold(1.5)
        # A broken file: the SPEC's 415 (cannot be opened), 500 (a tile cannot be decoded) or
        # 404 (a level or tile the damaged file no longer has); a 200 only with the right pixels.
        broken = either(answers(SMALLER), status_in(404, 415, 500))
        phases = [
            (begun, answers(JPEG_TILES)),
            (replaced_from, either(answers(JPEG_TILES), answers(SMALLER))),
            (replaced, answers(SMALLER)),
            (truncated_from, broken),
            (truncated, broken),
            (restored_from, either(broken, answers(JPEG_TILES))),
            (restored, answers(JPEG_TILES)),
        ]
        wrong = judge(load.outcomes, phases)
        assert wrong == [], wrong[:10]
        during = [o for o in load.outcomes if truncated <= o.started and o.ended < restored_from]
        statuses = sorted({o.status for o in during})
        print(f"\nreplaced and truncated: {len(load.outcomes)} requests; while truncated, statuses {statuses}")
        assert any(o.status >= 400 and "JTL=4," not in o.url for o in during), "the truncation was noticed"
        for moment in (replaced, truncated, restored):
            assert any(o.started >= moment for o in load.outcomes)
        workers_unharmed(stack.server, workers)


# -- read permission removed --------------------------------------------------------------------------

# Root reads any file whatever its mode: the pool runs as root without the two capabilities that
# let it ignore file modes, so that chmod 000 applies to it as to any other user.  (Running it as
# "nobody" instead is not possible where the interpreter lives in a directory only root may enter.)
NO_DAC = ["--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
DAC_CAPABILITIES = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


def effective_capabilities(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("CapEff:")).split()[1], 16)


@pytest.mark.time_limit(60)
def test_read_permission_removed_while_served(workdir: str, fixtures: str) -> None:
    setpriv = helpers.require_binary("setpriv")
    root = private_images(workdir)
    live = os.path.join(root, "live.tif")
    env = {"FILESYSTEM_PREFIX": root + "/"}
    with servers.nginx_stack(workdir, workers=2, env=env, wrapper=[setpriv, *NO_DAC, "--"]) as stack:
        workers = stack.server.wait_workers(2)
        for pid in [stack.server.pid, *workers]:
            assert effective_capabilities(pid) & DAC_CAPABILITIES == 0, "the pool may still ignore file modes"
        queries = [*tile_queries(JPEG_TILES, "live.tif")[:40], "IIIF=/live.tif/info.json"]
        with servers.ConcurrentLoad(cycling(stack, queries), CLIENTS) as load:
            begun = hold(0)
            hold(1.5)  # every worker has the image open and its answers cached
            revoked_from = time.monotonic()
            os.chmod(live, 0)
            revoked = hold(2.0)
            granted_from = time.monotonic()
            os.chmod(live, 0o644)
            granted = hold(1.5)
        # An image the server may not read is one it cannot find: 404, from every worker and
        # every cache, as soon as the mode changed; before and after, the right answers.
        phases = [
            (begun, answers(JPEG_TILES)),
            (revoked_from, either(answers(JPEG_TILES), status_in(404))),
            (revoked, status_in(404)),
            (granted_from, either(answers(JPEG_TILES), status_in(404))),
            (granted, answers(JPEG_TILES)),
        ]
        wrong = judge(load.outcomes, phases)
        assert wrong == [], wrong[:10]
        for moment in (revoked, granted):
            assert any(o.started >= moment for o in load.outcomes)
        workers_unharmed(stack.server, workers)
        for outcome in load.outcomes:
            assert outcome.body is None or root.encode() not in outcome.body


# -- memcached stopped and started again -----------------------------------------------------------------


@pytest.mark.time_limit(60)
def test_memcached_stopped_and_restarted_under_load(workdir: str, fixtures: str) -> None:
    cache = Memcached(os.path.join(workdir, "memcached"))
    port = cache.port
    env = {
        "MEMCACHED_SERVERS": cache.address,
        "MEMCACHED_IO_TIMEOUT": "0.2",
        "MEMCACHED_RETRY_INTERVAL": "0.5",
    }
    tiles = tile_queries(DEFLATE)  # decoded and encoded: a rendering each, worth sharing
    right = answers(DEFLATE)
    try:
        with servers.nginx_stack(workdir, workers=2, env=env) as stack:
            workers = stack.server.wait_workers(2)
            # Three sets of tiles, none seen before its phase: each phase renders, stores and
            # (another worker asking) finds in memcached.
            phases_queries = [tiles[i::3] for i in range(3)]
            current = [phases_queries[0]]

            def pick(client: int, count: int) -> str:
                queries = current[0]
                return stack.nginx.url(queries[(client * 3 + count // 2) % len(queries)])

            with servers.ConcurrentLoad(pick, CLIENTS) as load:
                hold(2.0)
                used = cache.stats()
                stopped_from = time.monotonic()
                cache.stop()
                current[0] = phases_queries[1]
                stopped = hold(2.0)
                cache = Memcached(os.path.join(workdir, "memcached-again"), port)
                current[0] = phases_queries[2]
                restarted = hold(3.0)
                ended = time.monotonic()
            again = cache.stats()
            wrong = [f"{o.url} -> {o.status} {o.error}" for o in load.outcomes if not right(o)]
            assert wrong == [], wrong[:10]

            def p50(first: float, last: float) -> float:
                times = sorted(o.ended - o.started for o in load.outcomes if first <= o.started < last)
                assert times, "no request in this phase"
                return times[len(times) // 2] * 1000

            print(
                f"\nmemcached: before the stop {used['get_hits']} hits and {used['curr_items']} items; after the "
                f"restart {again['get_hits']} hits, {again['curr_items']} items; latency p50 "
                f"{p50(0, stopped_from):.1f} ms before, {p50(stopped, restarted):.1f} ms during the outage, "
                f"{p50(restarted + 1, ended):.1f} ms after"
            )
            assert used["get_hits"] > 0 and used["curr_items"] > 0, "memcached was used before the stop"
            assert again["curr_items"] > 0 and again["get_hits"] > 0, "memcached is used again after its restart"
            workers_unharmed(stack.server, workers)
            log = stack.server.log()
            assert " WARNING memcached " in log, "the outage was noticed"
            assert not re.search(r" -> 5\d\d ", log)
    finally:
        cache.stop()


# -- the object store stopped and started again -------------------------------------------------------

BUCKET = "iip-load-faults"
TTL = 1.0  # S3_IDENTITY_TTL: how long a worker trusts what it learnt of an object


@pytest.fixture
def own_store(workdir: str) -> Iterator[s3_store.MotoServer]:
    s3_store.use_dummy_credentials()
    store = s3_store.MotoServer(workdir)
    s3_store.upload(store, BUCKET, {f"slides/{JPEG_TILES}": helpers.fixture(JPEG_TILES)})
    yield store
    store.stop()


@pytest.mark.time_limit(60)
def test_object_store_stopped_and_restarted_under_load(workdir: str, own_store: s3_store.MotoServer) -> None:
    env = {
        **s3_store.CREDENTIALS,
        "FILESYSTEM_PREFIX": f"s3://{BUCKET}/slides/",
        "S3_ENDPOINT": own_store.endpoint,
        "S3_IDENTITY_TTL": str(TTL),
        "S3_BLOCK_SIZE": "16384",  # small blocks: most tiles need a read of their own
        "S3_CONNECT_TIMEOUT": "1",
        "S3_READ_TIMEOUT": "1",
        "S3_RETRIES": "1",
    }
    with servers.nginx_stack(workdir, workers=2, env=env) as stack:
        workers = stack.server.wait_workers(2)
        queries = [*tile_queries(JPEG_TILES), f"IIIF=/{JPEG_TILES}/info.json"]
        with servers.ConcurrentLoad(cycling(stack, queries), CLIENTS) as load:
            hold(1.5)
            stopped_from = time.monotonic()
            own_store.stop()
            stopped = hold(3.0)
            # moto keeps its buckets in memory: it starts empty, and the image is uploaded again.
            restarted = time.monotonic()
            own_store.start()
            s3_store.upload(own_store, BUCKET, {f"slides/{JPEG_TILES}": helpers.fixture(JPEG_TILES)})
            uploaded = hold(3.0)
        # Until the upload the key does not exist (404), and a worker may remember that for the
        # identity TTL; then the right answers again.
        recovered = uploaded + TTL + 0.5
        right = answers(JPEG_TILES)
        outage = either(right, status_in(*STORAGE_ERRORS))
        phases = [
            (0.0, right),
            (stopped_from, outage),
            (restarted, either(outage, status_in(404))),
            (recovered, right),
        ]
        wrong = judge(load.outcomes, phases)
        assert wrong == [], wrong[:10]
        during = [o for o in load.outcomes if stopped <= o.started < restarted]
        slowest = max(o.ended - o.started for o in load.outcomes)
        statuses = sorted({o.status for o in during})
        print(
            f"\nS3 outage under load: {len(load.outcomes)} requests, statuses during {statuses}, slowest {slowest:.2f}s"
        )
        assert any(o.status in STORAGE_ERRORS for o in during), "the outage was noticed"
        assert slowest < 5.0, "no request waited on the stopped store for long"
        assert any(o.started >= recovered for o in load.outcomes)
        for o in load.outcomes:
            assert o.body is None or BUCKET.encode() not in o.body
        workers_unharmed(stack.server, workers)
