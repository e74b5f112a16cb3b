"""Object storage failing (SPEC section 11): a store that is stopped answers 502/504 within
seconds and the server recovers when it is back; a store that hangs answers 504; a missing key
is 404; a replaced object shows its new pixels after S3_IDENTITY_TTL; and no error body names
the bucket, the prefix or another key."""

from __future__ import annotations

import time

import pytest

from tests import helpers, s3_store
from tests.integration.s3_fixtures import S3Images

pytestmark = pytest.mark.integration

BUCKET = "iip-faults"
PYRAMID = "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif"
OTHER = "tif-rgb-3000x2000-5lvl-256tile-deflate.tif"  # same size, other pixels
TTL = 1.0
# Small blocks, so that opening the (half-megabyte) image leaves most of its tiles unread.
BLOCK = "16384"
COLD_TILE = "FIF={}&JTL=4,95"  # the last tile of the full-size level


def no_secrets(body: bytes, *names: str) -> None:
    for name in (BUCKET, "slides/", *names):
        assert name.encode() not in body, body


@pytest.fixture
def own_store(tmp_path, fixtures):
    """A moto server of this test's own, with one image, which the test may stop."""
    s3_store.use_dummy_credentials()
    store = s3_store.MotoServer(str(tmp_path))
    s3_store.upload(store, BUCKET, {f"slides/{PYRAMID}": helpers.fixture(PYRAMID)})
    yield store
    store.stop()


def app_on(endpoint: str, **env: str):
    return helpers.make_app(
        FILESYSTEM_PREFIX=f"s3://{BUCKET}/slides/",
        S3_ENDPOINT=endpoint,
        S3_IDENTITY_TTL=str(TTL),
        S3_BLOCK_SIZE=BLOCK,
        **env,
    )


def test_a_stopped_store_is_502_or_504_within_seconds_and_the_server_recovers(own_store, fixtures):
    app = app_on(own_store.endpoint)
    local = helpers.make_app()
    tile = COLD_TILE.format(PYRAMID)
    assert helpers.call(app, f"IIIF=/{PYRAMID}/info.json").status == 200
    own_store.stop()
    for query in (tile, f"IIIF=/{OTHER}/info.json"):  # a block never read; a key never resolved
        started = time.monotonic()
        result = helpers.call(app, query)
        assert result.status in (502, 504), (query, result.status)
        assert time.monotonic() - started < 5
        no_secrets(result.body, PYRAMID, OTHER)
    time.sleep(TTL)  # the identity must be checked again: its HEAD fails too
    result = helpers.call(app, f"IIIF=/{PYRAMID}/info.json")
    assert result.status in (502, 504)
    own_store.start()
    s3_store.upload(own_store, BUCKET, {f"slides/{PYRAMID}": helpers.fixture(PYRAMID)})
    result = helpers.call(app, tile)
    assert result.status == 200 and result.body == helpers.call(local, tile).body


@pytest.mark.parametrize(
    ("name", "cold"),
    [
        (PYRAMID, COLD_TILE),
        ("svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs", "FIF={}::macro&WID=100&CVT=jpeg"),
        ("jpeg-rgb-1001x777-q90.jpg", "FIF={}&WID=400&CVT=jpeg"),
        ("jp2-rgb-3000x2000-5res-3layer.jp2", "FIF={}&JTL=4,0"),
    ],
)
def test_a_store_that_does_not_answer_is_504(s3_images: S3Images, s3_proxy, name, cold):
    """Whatever reads the bytes (TIFF tiles, an SVS's associated image, Pillow, OpenJPEG's
    stream), a storage timeout is a 504, never a "damaged image" 500 or an "unsupported" 415."""
    app = helpers.make_app(
        FILESYSTEM_PREFIX=s3_images.url,
        S3_ENDPOINT=s3_proxy.endpoint,
        S3_READ_TIMEOUT="1",
        S3_RETRIES="1",
        S3_BLOCK_SIZE=BLOCK,
    )
    assert helpers.call(app, f"IIIF=/{name}/info.json").status == 200
    with s3_proxy.hanging():
        started = time.monotonic()
        result = helpers.call(app, cold.format(name))
        elapsed = time.monotonic() - started
    assert result.status == 504
    assert elapsed < 5
    no_secrets(result.body, name)
    assert helpers.call(app, cold.format(name)).status == 200  # and served once it answers again


def test_a_missing_key_is_404_without_naming_the_bucket(s3_images: S3Images):
    app = helpers.make_app(FILESYSTEM_PREFIX=s3_images.url, S3_ENDPOINT=s3_images.store.endpoint)
    for query in ("FIF=no-such-image.tif&OBJ=Basic-info", "IIIF=/dir/no-such.jp2/info.json", "FIF=../x.tif&JTL=0,0"):
        result = helpers.call(app, query)
        assert result.status == 404 if query.startswith("IIIF") else result.status in (400, 404)
        no_secrets(result.body, PYRAMID)
    result = helpers.call(app, "IIIF=/no-such-image.tif/info.json")
    assert result.status == 404


def test_an_unknown_bucket_is_a_server_error_not_an_answer_about_the_image(s3_images: S3Images):
    app = helpers.make_app(FILESYSTEM_PREFIX="s3://no-such-bucket-here/", S3_ENDPOINT=s3_images.store.endpoint)
    result = helpers.call(app, f"IIIF=/{PYRAMID}/info.json")
    assert result.status in (404, 502)
    no_secrets(result.body, "no-such-bucket-here")


def test_a_replaced_object_shows_its_new_pixels_after_the_ttl(own_store, fixtures):
    app = app_on(own_store.endpoint)
    local = helpers.make_app()
    query = "IIIF=/{}/full/!400,400/0/default.png"
    before = helpers.call(app, query.format(PYRAMID))
    assert before.status == 200 and before.body == helpers.call(local, query.format(PYRAMID)).body
    tile = helpers.call(app, f"FIF={PYRAMID}&JTL=2,0")
    s3_store.upload(own_store, BUCKET, {f"slides/{PYRAMID}": helpers.fixture(OTHER)})
    time.sleep(TTL + 0.1)
    after = helpers.call(app, query.format(PYRAMID))
    assert after.status == 200 and after.body == helpers.call(local, query.format(OTHER)).body
    assert after.header("etag") != before.header("etag")
    new_tile = helpers.call(app, f"FIF={PYRAMID}&JTL=2,0")
    assert new_tile.body == helpers.call(local, f"FIF={OTHER}&JTL=2,0").body != tile.body
