"""The slide REST API from an S3 root answers what it answers from a local directory holding the
same files (SPEC section 14: ROOT may be s3://bucket/prefix): the slide list, slide metadata, a
tile, a thumbnail, an associated image, DeepZoom and the errors."""

from __future__ import annotations

import json
import os

import pytest

from tests import helpers
from tests.integration.s3_fixtures import S3Images

pytestmark = pytest.mark.integration

SVS = "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs"
PATHS = [
    f"/slides/{SVS}",
    f"/tiles/{SVS}/0/3/2.jpg",
    f"/tiles/{SVS}/1/0/0.png",
    f"/slides/{SVS}/thumbnail?max_size=200",
    f"/slides/{SVS}/associated/label",
    f"/slides/{SVS}/dzi",
    f"/slides/{SVS}/dzi_files/11/1_1.jpeg",
    "/slides/small.svs",
    "/tiles/small.svs/0/0/0.jpg",
    "/slides/tif-rgb-3000x2000-5lvl-256tile-deflate.tif",
    "/tiles/tif-rgb-3000x2000-5lvl-256tile-deflate.tif/2/1/1.png",
    f"/tiles/{SVS}/9/0/0.jpg",
    f"/tiles/{SVS}/0/99/0.jpg",
    "/slides/no-such-slide.svs",
    "/slides/not-an-image.tif",
]


@pytest.fixture(scope="module")
def apps(s3_images: S3Images, fixtures: str, downloads: str):
    """``(app on the bucket, {directory: app on that directory})``: the bucket holds the files
    of both directories."""
    remote = helpers.make_app(FILESYSTEM_PREFIX=s3_images.url, S3_ENDPOINT=s3_images.store.endpoint)
    return remote, {d: helpers.make_app(FILESYSTEM_PREFIX=d + "/") for d in (fixtures, downloads)}


def local_app(apps, s3_images: S3Images, target: str):
    """The local app whose directory holds the slide ``target`` names (the fixtures' otherwise)."""
    name = target.split("?")[0].split("/")[2]
    path = s3_images.local.get(name)
    return apps[1][os.path.dirname(path)] if path else apps[1][helpers.fixture_dir()]


def call(app, target: str) -> helpers.Result:
    path, _, query = target.partition("?")
    return helpers.call(app, query, path=path)


@pytest.mark.parametrize("target", PATHS)
def test_s3_answers_equal_local_answers(apps, s3_images: S3Images, target: str) -> None:
    remote, local = apps[0], local_app(apps, s3_images, target)
    expected, got = call(local, target), call(remote, target)
    assert (got.status, got.header("content-type")) == (expected.status, expected.header("content-type"))
    assert got.body == expected.body
    for name in ("X-Tile-Quality", "X-Thumbnail-Actual-Size"):
        assert got.header(name) == expected.header(name)
    if got.status >= 400:
        assert s3_images.bucket.encode() not in got.body and s3_images.prefix.encode() not in got.body


def bucket_names(s3_images: S3Images) -> list[str]:
    """The names under the prefix as boto3 lists them (other tests of the session add objects
    to the same bucket, so the uploaded set alone is not the reference)."""
    pages = (
        s3_images.store.client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket=s3_images.bucket, Prefix=s3_images.prefix)
    )
    return [item["Key"][len(s3_images.prefix) :] for page in pages for item in page.get("Contents", [])]


def test_slide_list_from_s3(apps, s3_images: S3Images) -> None:
    remote = apps[0]
    pages = []
    cursor = ""
    while True:
        document = json.loads(call(remote, f"/slides?limit=9&search=.SVS{cursor}").body)
        pages.append(document["slides"])
        if document["next_cursor"] is None:
            break
        cursor = f"&cursor={document['next_cursor']}"
    listed = [slide for page in pages for slide in page]
    names = bucket_names(s3_images)
    assert listed == sorted(name for name in names if ".svs" in name.lower())
    assert len(listed) >= 4 and set(listed) >= {n for n in s3_images.local if n.lower().endswith(".svs")}
    everything = json.loads(call(remote, "/slides?limit=1000").body)
    images = [name for name in names if name.lower().endswith((".tif", ".tiff", ".svs", ".jp2", ".j2k", ".jpg"))]
    assert everything["slides"] == sorted(images)


def test_signed_urls_on_an_s3_root(s3_images: S3Images) -> None:
    import time

    from iipsrv_py.auth import signed_query

    secret = "s3-secret"
    app = helpers.make_app(FILESYSTEM_PREFIX=s3_images.url, S3_ENDPOINT=s3_images.store.endpoint, AUTH_SECRET=secret)
    for path, params in ((f"/tiles/{SVS}/0/1/1.jpg", []), ("/fcgi-bin/iipsrv.fcgi", [("FIF", SVS), ("JTL", "0,0")])):
        unsigned = "&".join(f"{k}={v}" for k, v in params)
        refused = helpers.call(app, unsigned, path=path)
        assert refused.status == 401 and json.loads(refused.body)["error"] == "missing_signature"
        signed = signed_query(secret, path, params, int(time.time()) + 300)[0]
        assert helpers.call(app, signed, path=path).status == 200
        stale = signed_query(secret, path, params, int(time.time()) - 1)[0]
        assert json.loads(helpers.call(app, stale, path=path).body)["error"] == "signature_expired"
