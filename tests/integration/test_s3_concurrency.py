"""Single flight (SPEC section 11): concurrent misses of one block are fetched once.

32 concurrent requests for one cold tile of an image nobody opened yet:

* in one process, 32 threads through one S3Storage whose shared cache is an in-process fake
  (and through the whole WSGI application, which uses NO_SHARING);
* in two worker processes, 16 threads each, each process with its own block cache, sharing a
  shared-cache double that lives in a third process (a multiprocessing manager), as memcached
  would between workers.

The proxy in front of the store counts: one HEAD per process, and no byte of the object is
fetched twice (every GET range is disjoint from the others), while every thread decodes the
tile tifffile decodes.
"""

from __future__ import annotations

import itertools
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.managers import BaseManager
from typing import Any

import numpy as np
import pytest
import tifffile

from iipsrv_py.settings import from_environ
from iipsrv_py.sources.registry import open_source
from iipsrv_py.storage.s3 import S3Storage
from tests import helpers, s3_store
from tests.integration.s3_fixtures import S3Images
from tests.unit.test_s3_blocks import FakeShared

pytestmark = pytest.mark.integration

NAME = "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs"
LEVEL, COL, ROW = 1, 2, 1


def expected_tile(path: str) -> np.ndarray:
    """Tile (2, 1) of the SVS's level 1, decoded by tifffile."""
    with tifffile.TiffFile(path) as tif:
        levels = [p for p in tif.pages if p.is_tiled and "macro" not in (p.description or "")]
        page = sorted(levels, key=lambda p: -p.shape[1])[LEVEL]
        index = ROW * -(-page.shape[1] // page.tilewidth) + COL
        tif.filehandle.seek(page.dataoffsets[index])
        data = tif.filehandle.read(page.databytecounts[index])
        decoded, _, shape = page.decode(data, index, jpegtables=page.jpegtables)
        return decoded.reshape(shape[1:])


def assert_disjoint(gets: list[s3_store.Seen]) -> None:
    spans = sorted(g.span() for g in gets)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, spans


def read_tile_with(storage: S3Storage) -> np.ndarray:
    """What a request for the tile does in a worker: resolve, open, read."""
    return open_source(storage.open(*storage.resolve(NAME))).read_tile(LEVEL, COL, ROW)


def storage_for(s3_images: S3Images, proxy: s3_store.CountingProxy, shared: Any) -> S3Storage:
    settings, _ = from_environ({"FILESYSTEM_PREFIX": s3_images.url, "S3_ENDPOINT": proxy.endpoint})
    return S3Storage(settings, shared)


def test_threads_of_one_process_fetch_each_block_once(s3_images, s3_proxy):
    storage = storage_for(s3_images, s3_proxy, FakeShared())
    s3_proxy.reset()
    with ThreadPoolExecutor(32) as pool:
        tiles = list(pool.map(lambda _: read_tile_with(storage), range(32)))
    expected = expected_tile(s3_images.local[NAME])
    assert all(np.array_equal(tile, expected) for tile in tiles)
    assert len(s3_proxy.heads()) == 1
    assert s3_proxy.gets() and all(g.range for g in s3_proxy.gets())
    assert_disjoint(s3_proxy.gets())


def test_threads_through_the_application_fetch_each_block_once(s3_images, s3_proxy):
    app = helpers.make_app(FILESYSTEM_PREFIX=s3_images.url, S3_ENDPOINT=s3_proxy.endpoint)
    reference = helpers.make_app(FILESYSTEM_PREFIX=helpers.fixture_dir() + "/")
    query = f"IIIF=/{NAME}/512,256,256,256/256,/0/default.png"
    s3_proxy.reset()
    barrier = threading.Barrier(32)

    def request(_: int) -> helpers.Result:
        barrier.wait(10)
        return helpers.call(app, query)

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(request, range(32)))
    expected = helpers.call(reference, query)
    assert expected.status == 200
    assert [(r.status, r.body) for r in results] == [(200, expected.body)] * 32
    assert len(s3_proxy.heads()) == 1
    assert_disjoint(s3_proxy.gets())


# -- two processes sharing a shared-cache double ------------------------------------------------


class SharedManager(BaseManager):
    pass


SharedManager.register("FakeShared", FakeShared)


def _worker(
    url: str, endpoint: str, shared: Any, start: Any, results: Any
) -> None:  # pragma: no cover - runs in a child
    s3_store.use_dummy_credentials()
    settings, _ = from_environ({"FILESYSTEM_PREFIX": url, "S3_ENDPOINT": endpoint})
    storage = S3Storage(settings, shared)
    start.wait(20)
    with ThreadPoolExecutor(16) as pool:
        tiles = list(pool.map(lambda _: read_tile_with(storage), range(16)))
    results.put([tile.tobytes() for tile in tiles])


@pytest.mark.time_limit(60)
def test_two_processes_fetch_each_block_once_through_the_shared_cache(s3_images, s3_proxy):
    context = multiprocessing.get_context("spawn")
    with SharedManager(ctx=context) as manager:
        shared = manager.FakeShared()  # type: ignore[attr-defined]
        start = context.Event()
        results = context.Queue()
        workers = [
            context.Process(target=_worker, args=(s3_images.url, s3_proxy.endpoint, shared, start, results))
            for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        s3_proxy.reset()
        start.set()
        tiles = [results.get(timeout=40) for _ in workers]
        for worker in workers:
            worker.join(10)
            assert worker.exitcode == 0
    expected = expected_tile(s3_images.local[NAME]).tobytes()
    assert all(tile == expected for batch in tiles for tile in batch) and sum(map(len, tiles)) == 32
    assert len(s3_proxy.heads()) == 2  # one per process: identities are per worker
    assert s3_proxy.gets() and all(g.range for g in s3_proxy.gets())
    assert_disjoint(s3_proxy.gets())
