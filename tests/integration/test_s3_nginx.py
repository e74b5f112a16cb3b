"""A real ``iipsrv-py --bind`` pool behind nginx, serving a moto bucket: every protocol answers
what the in-process application answers for the local copies of the same files."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from tests import helpers, s3_store
from tests.integration import servers
from tests.integration.s3_fixtures import S3Images

pytestmark = pytest.mark.integration

FILES = [
    "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif",
    "tif-rgb-1200x800-3lvl-strip64-lzw.tif",
    "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs",
    "cmu_small_region.svs",
    "jpeg-rgb-1001x777-q90.jpg",
    "jp2-rgb-3000x2000-5res-3layer.jp2",
]
QUERIES = [
    "IIIF=/{n}/0,0,512,512/256,/0/default.jpg",
    "DeepZoom={n}.dzi",
    "DeepZoom={n}_files/9/0_0.jpg",
    "Zoomify={n}/TileGroup0/1-0-0.jpg",
    "FIF={n}&OBJ=IIP,1.0&OBJ=Basic-info",
    "FIF={n}&JTL=1,0",
    "FIF={n}&WID=400&CVT=jpeg",
]


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory: pytest.TempPathFactory, s3_images: S3Images) -> Iterator[servers.Stack]:
    workdir = str(tmp_path_factory.mktemp("s3-nginx"))
    env = {**s3_store.CREDENTIALS, "FILESYSTEM_PREFIX": s3_images.url, "S3_ENDPOINT": s3_images.store.endpoint}
    with servers.nginx_stack(workdir, workers=2, env=env) as front:
        yield front


@pytest.mark.parametrize("name", FILES)
def test_nginx_and_a_worker_pool_serve_the_bucket_like_local_files(s3_stack, s3_images: S3Images, name):
    local = helpers.make_app(FILESYSTEM_PREFIX=os.path.dirname(s3_images.local[name]) + "/")
    for query in QUERIES:
        query = query.format(n=name)
        got = s3_stack.get(query)
        expected = helpers.call(local, query)
        assert (got.status_code, got.headers.get("content-type")) == (expected.status, expected.header("content-type"))
        assert got.content == expected.body, query
    # info.json names the host the request came to: the local one is asked under the same name.
    info = s3_stack.get(f"IIIF=/{name}/info.json")
    host = f"127.0.0.1:{s3_stack.nginx.port}"
    expected_info = helpers.call(local, f"IIIF=/{name}/info.json", headers={"Host": host})
    assert info.status_code == 200 and info.content == expected_info.body
    assert json.loads(info.content)["id"].startswith(f"http://{host}/")


def test_a_missing_key_through_nginx_is_404_without_the_bucket_name(s3_stack, s3_images: S3Images):
    result = s3_stack.get("IIIF=/no-such-image.tif/info.json")
    assert result.status_code == 404
    assert s3_images.bucket.encode() not in result.content
