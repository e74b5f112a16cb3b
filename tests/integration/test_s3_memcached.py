"""Slides in S3 shared through memcached by separate pools (SPEC sections 11 and 13).

Real processes only: moto's server behind the counting proxy, Debian's memcached, and
``iipsrv-py --bind`` pools (separate processes on separate ports, as two machines would be).

* A slide one pool opened is opened by another with no GET for its structure: the blocks the
  first pool read are in memcached; the second pool asks the store only for the object's
  identity (HEAD).  Its answers are byte-identical to the local file's.
* 32 concurrent requests for one cold tile, spread over the two workers of a pool sharing
  memcached: no byte of the object is fetched twice.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests import fcgi_client, helpers, s3_store
from tests.integration import servers
from tests.integration.memcached_server import Memcached, fastcgi_get, layers
from tests.integration.s3_fixtures import S3Images

pytestmark = pytest.mark.integration

SLIDE = "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs"
PYRAMID = "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif"


@pytest.fixture
def cache(workdir: str) -> Iterator[Memcached]:
    server = Memcached(os.path.join(workdir, "memcached"))
    try:
        yield server
    finally:
        server.stop()


def start_pool(workdir: str, name: str, s3: S3Images, proxy: s3_store.CountingProxy, cache: Memcached, workers: int):
    directory = os.path.join(workdir, name)
    os.makedirs(directory)
    env = {
        **s3_store.CREDENTIALS,
        "FILESYSTEM_PREFIX": s3.url,
        "S3_ENDPOINT": proxy.endpoint,
        "MEMCACHED_SERVERS": cache.address,
        "MEMCACHED_IO_TIMEOUT": "1",  # a loaded machine must not turn an expected hit into a miss
        "URI_MAP": "iiif=>IIIF",
    }
    return servers.start_iipsrv(directory, ("127.0.0.1", servers.free_port()), workers, env)


def assert_no_byte_twice(gets: list[s3_store.Seen]) -> None:
    spans = sorted(get.span() for get in gets)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, spans


def ask(pool: servers.IIPServer, query: str, host: str) -> fcgi_client.Response:
    """``query`` to a pool over FastCGI with a Host header of its own: requests that differ
    only by Host have different cache keys (IIIF ids name the host), so each is rendered."""
    assert isinstance(pool.address, tuple)
    with socket.create_connection(pool.address, timeout=10) as sock:
        sock.sendall(fcgi_client.request(1, fcgi_client.get_params(query, HTTP_HOST=host), keep=False))
        return fcgi_client.read_response(sock, 1)


@pytest.mark.time_limit(90)
def test_a_slide_one_pool_opened_is_opened_by_another_without_structure_gets(
    workdir: str, s3_images: S3Images, s3_proxy: s3_store.CountingProxy, cache: Memcached
) -> None:
    local = helpers.make_app(URI_MAP="iiif=>IIIF")
    first = start_pool(workdir, "a", s3_images, s3_proxy, cache, workers=1)
    second = start_pool(workdir, "b", s3_images, s3_proxy, cache, workers=1)
    try:
        for name in (SLIDE, PYRAMID):
            # Pairs of requests that need the same bytes of the object but differ (by Host for
            # info.json, by quality for a tile), so that no response cache answers the second.
            pairs = ((f"IIIF=/{name}/info.json",) * 2, (f"FIF={name}&QLT=80&JTL=1,0", f"FIF={name}&QLT=81&JTL=1,0"))
            for query, other in pairs:
                s3_proxy.reset()
                items = cache.stats()["curr_items"]
                assert ask(first, query, "a.example").status == 200
                assert s3_proxy.gets(), f"the first pool read the object for {query}"
                # What a pool stores in memcached is sent without waiting for an answer: wait
                # until memcached holds a block for each GET the first pool made.
                fetched = len(s3_proxy.gets())
                servers.wait_until(
                    lambda items=items, fetched=fetched: cache.stats()["curr_items"] >= items + fetched,
                    5,
                    "the blocks in memcached",
                )
                s3_proxy.reset()
                # The same work on the other pool (another Host: nothing answers it from a
                # response cache): it asks the store for the object's identity only.
                answer = ask(second, other, "b.example")
                assert answer.status == 200
                assert layers(second.log(), other)[-1] == "rendered"
                if other.startswith("FIF"):
                    assert answer.body == helpers.call(local, other).body
                assert s3_proxy.gets() == [], [g.range for g in s3_proxy.gets()]
                assert len(s3_proxy.heads()) <= 1  # at most one HEAD per identity TTL
    finally:
        first.stop()
        second.stop()


@pytest.mark.time_limit(90)
def test_32_concurrent_requests_for_a_cold_tile_fetch_each_byte_once_across_workers(
    workdir: str, s3_images: S3Images, s3_proxy: s3_store.CountingProxy, cache: Memcached
) -> None:
    local = helpers.make_app()
    pool = start_pool(workdir, "pool", s3_images, s3_proxy, cache, workers=2)
    query = f"FIF={SLIDE}&QLT=90&JTL=1,5"
    try:
        assert isinstance(pool.address, tuple)
        address = pool.address
        s3_proxy.reset()
        with ThreadPoolExecutor(32) as threads:
            answers = list(threads.map(lambda _: fastcgi_get(address, query), range(32)))
        expected = helpers.call(local, query).body
        assert all(answer.status == 200 and answer.body == expected for answer in answers)
        gets = s3_proxy.gets()
        assert gets and all(get.range for get in gets), "every GET has a Range"
        assert_no_byte_twice(gets)
        served = layers(pool.log(), query)
        assert len(served) == 32 and served.count("rendered") >= 1
    finally:
        pool.stop()
