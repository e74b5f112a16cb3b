"""Several `iipsrv-py --bind` pools (separate processes on separate ports) sharing one memcached,
as the workers of one machine and the machines behind one nginx do; and pools whose memcached
is stopped, hung or absent.

References are independent of memcached: the bytes of an application without it, memcached's
own counters, durations measured here against a pool without memcached, log lines counted.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator

import pytest

from tests import helpers
from tests.integration import servers
from tests.integration.memcached_server import (
    HungMemcached,
    Memcached,
    fastcgi_get,
    layers,
    memcached,
    memcached_warnings,
    unused_port,
)

PYRAMID = "tif-rgb-3000x2000-5lvl-256tile-jpeg-subifd.tif"
SHARED = [
    f"FIF={PYRAMID}&JTL=3,5",
    f"FIF={PYRAMID}&WID=640&CVT=jpeg",
    f"FIF={PYRAMID}&OBJ=Basic-info",
    f"IIIF=/{PYRAMID}/256,256,512,512/256,/0/default.png",
    f"IIIF=/{PYRAMID}/info.json",
    "DeepZoom=jp2-rgb-3000x2000-5res-3layer.jp2_files/11/2_1.jpg",
    "Zoomify=svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs/TileGroup0/3-2-2.jpg",
]
ERRORS = ["FIF=no-such-image.tif&JTL=0,0", f"FIF={PYRAMID}&JTL=9,0", f"IIIF=/{PYRAMID}/full/max/0/default.gif"]
TIMEOUT = "0.05"  # MEMCACHED_IO_TIMEOUT of the failure tests
PATIENT = "1"  # of the tests that expect hits: a loaded machine must not turn into a miss


def tiles(count: int, start: int = 0) -> list[str]:
    """Distinct requests (tiles of the full-resolution level: 12 x 8), so none is cached yet."""
    assert start + count <= 96
    return [f"FIF={PYRAMID}&JTL=4,{i}" for i in range(start, start + count)]


@pytest.fixture(scope="module")
def reference() -> object:
    """An application without memcached: the bytes every pool must send."""
    return helpers.make_app()


def expected_body(reference: object, query: str) -> bytes:
    answer = helpers.call(reference, query)
    return answer.body


@pytest.fixture
def pools(workdir: str) -> Iterator[list[servers.IIPServer]]:
    """Started pools, stopped (with every worker) at the end of the test."""
    started: list[servers.IIPServer] = []
    try:
        yield started
    finally:
        for pool in started:
            pool.stop()


def start_pool(
    pools: list[servers.IIPServer], workdir: str, name: str, workers: int = 2, **env: str
) -> servers.IIPServer:
    directory = os.path.join(workdir, name)
    os.makedirs(directory)
    pool = servers.start_iipsrv(directory, ("127.0.0.1", servers.free_port()), workers, env)
    pools.append(pool)
    return pool


def wait_items(cache: Memcached, count: int) -> None:
    """Until memcached holds ``count`` items: a pool stores without waiting for the answer
    (noreply), so its response can reach the test before memcached has read the value."""
    servers.wait_until(lambda: cache.stats()["curr_items"] >= count, 5, f"{count} items in memcached")


def get(pool: servers.IIPServer, query: str) -> tuple[int, dict[str, str], bytes]:
    assert isinstance(pool.address, tuple)
    answer = fastcgi_get(pool.address, query)
    return answer.status, answer.headers, answer.body


def test_what_one_pool_rendered_another_sends_from_memcached(
    workdir: str, pools: list[servers.IIPServer], reference: object
) -> None:
    with memcached(os.path.join(workdir, "memcached")) as cache:
        # One worker each: the marker below then goes down the one connection each pool has.
        env = {"MEMCACHED_SERVERS": cache.address, "MEMCACHED_IO_TIMEOUT": PATIENT}
        first = start_pool(pools, workdir, "a", workers=1, **env)
        second = start_pool(pools, workdir, "b", workers=1, **env)
        for done, query in enumerate(SHARED, 1):
            status_a, headers_a, body_a = get(first, query)
            wait_items(cache, done)
            status_b, headers_b, body_b = get(second, query)
            assert status_a == status_b == 200, query
            assert body_a == body_b == expected_body(reference, query), query
            assert headers_a == headers_b
            assert layers(first.log(), query) == ["rendered"], query
            assert layers(second.log(), query) == ["memcached"], query
        assert cache.stats()["curr_items"] == len(SHARED)

        # Errors: never stored, so the second pool answers them by itself, with no cache named.
        sets = cache.stats()["cmd_set"]
        for query in ERRORS:
            status_a, _, body_a = get(first, query)
            status_b, _, body_b = get(second, query)
            assert status_a == status_b >= 400 and body_a == body_b == expected_body(reference, query)
            assert layers(first.log(), query) == [""] and layers(second.log(), query) == [""]
        # memcached's count: a pool sends sets without waiting for the answer, but memcached reads
        # a connection in order, so once one new rendering of each pool is counted, anything
        # either sent before it would be counted too.
        for pool, marker in ((first, tiles(1)[0]), (second, tiles(1, start=1)[0])):
            assert get(pool, marker)[0] == 200
        wait_items(cache, len(SHARED) + 2)
        assert cache.stats()["cmd_set"] == sets + 2 and cache.stats()["curr_items"] == len(SHARED) + 2
        assert not memcached_warnings(first.log() + second.log())


def test_memcached_stopped_mid_run_and_started_again(
    workdir: str, pools: list[servers.IIPServer], reference: object
) -> None:
    interval = 1.0
    cache = Memcached(os.path.join(workdir, "memcached"))
    port = cache.port
    try:
        pool = start_pool(
            pools,
            workdir,
            "pool",
            MEMCACHED_SERVERS=cache.address,
            MEMCACHED_IO_TIMEOUT="0.2",
            MEMCACHED_RETRY_INTERVAL=str(interval),
        )
        started = time.monotonic()
        before = tiles(10)
        for query in before:
            status, _, body = get(pool, query)
            assert status == 200 and body == expected_body(reference, query)
        servers.wait_until(lambda: cache.stats()["curr_items"] == 10, 5, "ten responses in memcached")
    finally:
        cache.stop()

    # Without memcached: what the workers kept, and new renderings, all correct, never a 5xx.
    for query in before + tiles(20, start=10):
        status, _, body = get(pool, query)
        assert status == 200, (query, status)
        assert body == expected_body(reference, query), query

    # Back on the same port: used again once the interval is over, by every worker that asks.
    cache = Memcached(os.path.join(workdir, "memcached-again"), port)
    try:
        time.sleep(interval + 0.1)
        for query in tiles(10, start=30):
            status, _, body = get(pool, query)
            assert status == 200 and body == expected_body(reference, query)
        servers.wait_until(lambda: cache.stats()["curr_items"] >= 5, 5, "new responses stored again")
    finally:
        cache.stop()
    elapsed = time.monotonic() - started
    warnings = memcached_warnings(pool.log())
    assert 1 <= len(warnings) <= 2 * (elapsed / interval + 1), warnings  # per worker, per interval
    assert not re.search(r" -> 5\d\d ", pool.log())  # no 5xx answered


def _timed(pool: servers.IIPServer, query: str) -> float:
    started = time.perf_counter()
    status, _, _ = get(pool, query)
    elapsed = time.perf_counter() - started
    assert status == 200, query
    return elapsed


def _race(baseline: servers.IIPServer, pool: servers.IIPServer, queries: list[str], pause: float) -> tuple[float, ...]:
    """Each query to both pools, alternating which goes first; the durations of each pool."""
    base_times, pool_times = [], []
    for i, query in enumerate(queries):
        if i % 2:
            base_times.append(_timed(baseline, query))
            pool_times.append(_timed(pool, query))
        else:
            pool_times.append(_timed(pool, query))
            base_times.append(_timed(baseline, query))
        time.sleep(pause)
    return sum(base_times), sum(pool_times), max(pool_times)


@pytest.mark.parametrize("failure", ["hung", "unreachable"])
def test_a_broken_memcached_costs_at_most_a_timeout_per_interval(
    workdir: str, pools: list[servers.IIPServer], failure: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One worker each, so that every figure is one worker's.  60 distinct tiles over about 3 s
    with a 1 s retry interval: a few requests may pay the 50 ms timeout, the others nothing."""
    interval = 1.0
    count = 60
    with HungMemcached() as hung:
        address = hung.address if failure == "hung" else f"127.0.0.1:{unused_port()}"
        baseline = start_pool(pools, workdir, "baseline", workers=1)
        pool = start_pool(
            pools,
            workdir,
            failure,
            workers=1,
            MEMCACHED_SERVERS=address,
            MEMCACHED_IO_TIMEOUT=TIMEOUT,
            MEMCACHED_RETRY_INTERVAL=str(interval),
        )
        started = time.monotonic()
        base_total, pool_total, slowest = _race(baseline, pool, tiles(count), pause=0.04)
        elapsed = time.monotonic() - started
    added = pool_total - base_total
    attempts = elapsed / interval + 1  # the most failed attempts the interval allows
    with capsys.disabled():
        print(
            f"\n{failure} memcached: {count} requests in {elapsed:.1f}s, {pool_total * 1000:.0f} ms against "
            f"{base_total * 1000:.0f} ms without memcached: {added * 1000 / count:+.2f} ms per request"
        )
    # What a timeout on every request would cost, and what one per interval costs (with 10 ms
    # of noise allowed per request on a shared machine).
    assert added < count * float(TIMEOUT)
    assert added < attempts * float(TIMEOUT) + count * 0.01
    assert slowest < 1.0
    warnings = memcached_warnings(pool.log())
    assert 1 <= len(warnings) <= attempts, warnings
    assert all(address in line for line in warnings)
    assert ("timed out" if failure == "hung" else "refused") in warnings[0].lower()


def test_two_machines_behind_one_nginx_upstream(
    workdir: str, pools: list[servers.IIPServer], reference: object
) -> None:
    """The shipped several-hosts upstream, round-robin over two pools: each request sent twice in a
    row reaches both; whichever rendered it, the other sends it from memcached."""
    with memcached(os.path.join(workdir, "memcached")) as cache:
        hosts = [
            start_pool(pools, workdir, name, MEMCACHED_SERVERS=cache.address, MEMCACHED_IO_TIMEOUT=PATIENT)
            for name in ("host-1", "host-2")
        ]
        block = servers.nginx_upstream_hosts(
            os.path.join(helpers.ROOT, "conf", "nginx", "iipsrv_py-upstream-several-hosts.conf"),
            [host.upstream for host in hosts],
        )
        nginx = servers.Nginx(workdir, hosts[0].upstream, upstream_block=block)
        try:
            with servers.http_session() as session:
                for done, query in enumerate(SHARED, 1):
                    answers = [session.get(nginx.url(query), timeout=servers.HTTP_TIMEOUT)]
                    wait_items(cache, done)
                    answers.append(session.get(nginx.url(query), timeout=servers.HTTP_TIMEOUT))
                    assert [a.status_code for a in answers] == [200, 200], query
                    assert answers[0].content == answers[1].content, query
                    if not query.startswith("IIIF=") or "info.json" not in query:
                        # info.json's id names the host it was asked of: compared between hosts only.
                        assert answers[0].content == expected_body(reference, query), query
                    assert answers[0].headers["ETag"] == answers[1].headers["ETag"]
                    served = sorted(layers(host.log(), query) for host in hosts)
                    assert served == [["memcached"], ["rendered"]], (query, served)
        finally:
            nginx.stop()
        # Round-robin: each host answered half, and rendered half of what the other one sent.
        counts = [sum(len(layers(host.log(), query)) for query in SHARED) for host in hosts]
        assert counts == [len(SHARED), len(SHARED)]
        assert cache.stats()["curr_items"] == len(SHARED)
