"""One budget for a worker's caches, files closed when their images leave the catalog, SIGHUP."""

from __future__ import annotations

import os
import shutil

import numpy as np

from iipsrv_py.cache.keys import cache_key
from iipsrv_py.cache.store import WorkerCache
from iipsrv_py.catalog import Catalog
from iipsrv_py.model import SourceIdentity
from iipsrv_py.storage.local import LocalStorage
from tests import helpers

IMAGES = ("tif-rgb-600x400-1lvl-256tile-lzw.tif", "jpeg-rgb-1001x777-q90.jpg", "jp2-rgba-800x600-4res.jp2")


def test_one_budget_holds_everything_and_no_entry_takes_more_than_a_quarter() -> None:
    cache = WorkerCache(1000)
    cache.put(("px", "a", 0), np.zeros(10, np.uint8), 251)
    assert cache.get(("px", "a", 0)) is None  # over a quarter of the budget: not kept
    for i in range(20):
        cache.put(("resp", str(i)), b"x", 100)
        assert cache.nbytes <= 1000
    assert cache.get(("resp", "19")) == b"x" and cache.get(("resp", "0")) is None
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_the_key_changes_with_the_file_the_request_and_the_settings() -> None:
    identity = SourceIdentity("/a.tif", 1.0, 10, "1:2:3")
    key = cache_key(identity, "plan", "settings")
    assert key == cache_key(SourceIdentity("/a.tif", 1.0, 10, "1:2:3"), "plan", "settings")
    assert key != cache_key(SourceIdentity("/a.tif", 2.0, 10, "1:2:3"), "plan", "settings")
    assert key != cache_key(identity, "plan2", "settings")
    assert key != cache_key(identity, "plan", "settings2")


def _open_fds() -> set[str]:
    return {
        os.readlink(f"/proc/self/fd/{fd}")
        for fd in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{fd}")
    }


def test_images_leaving_the_catalog_have_their_files_closed_before_the_next_request(tmp_path) -> None:
    for name in IMAGES:
        shutil.copy(helpers.fixture(name), tmp_path / name)
    catalog = Catalog(LocalStorage(str(tmp_path) + "/"), max_images=1, cache=WorkerCache(1 << 20))
    paths = [str(tmp_path / name) for name in IMAGES]
    first = catalog.open(IMAGES[0])
    assert paths[0] in _open_fds()
    catalog.open(IMAGES[1])  # pushes the first image out of the catalog ...
    assert paths[0] in _open_fds()  # ... but this request may still be reading it
    first.read_tile(0, 0, 0)
    catalog.begin_request()
    assert paths[0] not in _open_fds() and paths[1] in _open_fds()
    catalog.open(IMAGES[2])
    catalog.begin_request()
    assert paths[1] not in _open_fds()


def test_sighup_empties_every_cache_of_the_application(tmp_path) -> None:
    app = helpers.make_app()
    image = "tif-rgb-600x400-1lvl-256tile-lzw.tif"
    assert helpers.call(app, f"FIF={image}&WID=300&CVT=png").status == 200
    assert len(app.cache) > 0 and len(app.catalog._images) == 1
    assert app.catalog.storage._resolved
    app.request_cache_clear()  # what the SIGHUP handler does: the next request clears
    assert helpers.call(app, "").status == 200
    assert len(app.cache) == 0 and len(app.catalog._images) == 0
    assert not app.catalog.storage._resolved
