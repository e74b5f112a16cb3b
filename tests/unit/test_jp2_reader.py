"""The JPEG 2000 reader asks OpenJPEG for no more than a tile needs, and quality layers are
chosen by planning (LYR capped by MAX_LAYERS) and key caches apart.

A spy on glymur's bindings of ``opj_setup_decoder`` and ``opj_set_decode_area`` records what
OpenJPEG itself is asked to decode: the resolution reduction, the number of layers and the
area on the full-resolution grid.
"""

from __future__ import annotations

import os
from typing import Any

import glymur
import numpy as np
import pytest
from glymur.lib import openjp2

from iipsrv_py.errors import UnsupportedImage
from iipsrv_py.model import ImageInfo, Level, SourceIdentity
from iipsrv_py.planning import Size, StoredTile, ViewRequest, plan, quality_layers
from iipsrv_py.settings import from_environ
from iipsrv_py.sources.jp2 import Jp2Source
from iipsrv_py.storage.local import LocalBlob

WIDTH, HEIGHT = 2048, 1536


@pytest.fixture(scope="module")
def jp2_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("jp2") / "rgb-2048x1536-5res-2layer.jp2")
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    glymur.Jp2k(path, data=image, numres=5, cratios=[50, 1])
    return path


def open_source(path: str) -> Jp2Source:
    st = os.stat(path)
    return Jp2Source(LocalBlob(path, SourceIdentity(path, st.st_mtime, st.st_size)))


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    setup, area = openjp2.setup_decoder, openjp2.set_decode_area

    def spy_setup(codec: Any, params: Any) -> Any:
        calls.append({"reduce": params.cp_reduce, "layers": params.cp_layer})
        return setup(codec, params)

    def spy_area(codec: Any, image: Any, x0: int, y0: int, x1: int, y1: int) -> Any:
        calls[-1]["area"] = (x0, y0, x1, y1)
        return area(codec, image, x0, y0, x1, y1)

    monkeypatch.setattr(openjp2, "setup_decoder", spy_setup)
    monkeypatch.setattr(openjp2, "set_decode_area", spy_area)
    return calls


def test_a_tile_decodes_only_its_area_at_its_resolution(jp2_path, decodes):
    source = open_source(jp2_path)
    sizes = [(lvl.width, lvl.height) for lvl in source.info.levels]
    assert sizes == [(2048, 1536), (1024, 768), (512, 384), (256, 192)]
    tile = source.read_tile(1, 2, 1)  # level 1 (1024 px), tile (2, 1): x 512-768, y 256-512
    assert decodes == [{"reduce": 1, "layers": 0, "area": (1024, 512, 1536, 1024)}]
    expected = glymur.Jp2k(jp2_path)[::2, ::2][256:512, 512:768]
    assert np.array_equal(tile, expected)


def test_an_edge_tile_stops_at_the_image(jp2_path, decodes):
    source = open_source(jp2_path)
    tile = source.read_tile(0, 7, 5)  # the last full-size tile: x 1792-2048, y 1280-1536
    assert tile.shape == (256, 256, 3)
    assert decodes[0]["area"] == (1792, 1280, 2048, 1536) and decodes[0]["reduce"] == 0


def test_layer_views_decode_fewer_layers_under_their_own_identity(jp2_path, decodes):
    source = open_source(jp2_path)
    one = source.with_layers(1)
    assert one is source.with_layers(1) and one.with_layers(2) is source and source.with_layers(0) is source
    assert one.identity != source.identity and one.identity.token != source.identity.token
    lossy = one.read_tile(2, 0, 0)
    full = source.read_tile(2, 0, 0)
    assert [c["layers"] for c in decodes] == [1, 0]
    assert not np.array_equal(lossy, full)


def test_planning_carries_lyr_capped_by_max_layers():
    assert quality_layers(0, -1) == 0 and quality_layers(2, -1) == 2
    assert quality_layers(0, 3) == 3 and quality_layers(5, 3) == 3 and quality_layers(2, 3) == 2
    settings, _ = from_environ({"MAX_LAYERS": "2"})
    info = ImageInfo(1024, 768, (Level(1024, 768, 256, 256),))
    width_100 = Size("width", width=100)
    assert plan(ViewRequest(size=width_100, layers=5), info, settings).layers == 2
    assert plan(ViewRequest(StoredTile(0, 5), layers=1), info, settings).layers == 1
    unlimited, _ = from_environ({})
    plain = plan(ViewRequest(size=width_100), info, unlimited)
    assert plain.layers == 0 and "/L" not in plain.canonical
    assert plan(ViewRequest(size=width_100, layers=1), info, unlimited).canonical == plain.canonical + "/L1"


def test_storage_without_a_local_file_is_refused(jp2_path):
    class Remote:
        name = "remote.jp2"
        identity = SourceIdentity("s3://bucket/remote.jp2", 0.0, 1)

    with pytest.raises(UnsupportedImage):
        Jp2Source(Remote())  # type: ignore[arg-type]
