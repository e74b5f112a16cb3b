"""Every protocol and every format from object storage answers byte for byte what the same
file answers from a local directory (SPEC section 11: FILESYSTEM_PREFIX=s3://bucket/prefix/).

The application runs in-process (WSGI) twice with the same settings but the prefix: once on
the moto bucket, once on the local copies of the very files uploaded there.  Status, type and
body must be equal (ETag and Last-Modified name the source, so they differ)."""

from __future__ import annotations

import os

import pytest

from tests import helpers
from tests.integration.s3_fixtures import S3Images

pytestmark = pytest.mark.integration

FILES = [
    # tiled TIFF pyramids: JPEG with tables, deflate, BigTIFF, SubIFDs, OME, a stack
    "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif",
    "tif-rgb-3000x2000-5lvl-256tile-deflate.tif",
    "tif-rgb-1200x800-3lvl-128tile-jpeg-bigtiff.tif",
    "tif-rgb-1200x800-4lvl-256tile-deflate-vips-subifd.tif",
    "ome-rgb-1200x800-3lvl-256tile-subifd-deflate.ome.tif",
    "tif-stack-3page-600x400-2lvl-256tile-deflate-subifd-pagenames.tif",
    "tif-grey16-600x400-2lvl-256tile-deflate.tif",
    # stripped TIFFs
    "tif-rgb-1200x800-3lvl-strip64-lzw.tif",
    "tif-rgb-600x400-strip400-none.tif",
    "tif-grey16-600x400-strip100-none-bigendian.tif",
    # Aperio SVS (JPEG, JPEG 2000 33003), and the real slides
    "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs",
    "svs-rgb-1500x1001-2lvl-step4-256tile-jp2k-33003-ycbcr.svs",
    "cmu_small_region.svs",
    "small.svs",
    "boxes.tiff",
    # JPEG and JPEG 2000 (JP2, tiled J2K, 16-bit, alpha)
    "jpeg-rgb-1001x777-q90.jpg",
    "jpeg-grey-1200x800-q90.jpg",
    "jp2-rgb-3000x2000-5res-3layer.jp2",
    "j2k-rgb-2000x1500-2res-384tile.j2k",
    "jp2-grey16-1000x700-4res.jp2",
    "jp2-rgba-800x600-4res.jp2",
    # files that are not images, or broken ones: the same errors
    "broken-truncated.tif",
    "broken-tile-1024x1024-256tile-jpeg.tif",
    "broken-truncated.jp2",
    "broken-truncated.jpg",
    "not-an-image.tif",
    "unreadable.svs",
    "unopenable.tiff",
]

QUERIES = [
    "IIIF=/{n}/info.json",
    "IIIF=/{n}/0,0,256,256/256,/0/default.jpg",
    "IIIF=/{n}/full/!300,300/0/default.png",
    "IIIF=/{n}/pct:25,25,50,50/200,/90/gray.webp",
    "DeepZoom={n}.dzi",
    "DeepZoom={n}_files/8/0_0.jpg",
    "DeepZoom={n}_files/9/1_0.jpg",
    "Zoomify={n}/ImageProperties.xml",
    "Zoomify={n}/TileGroup0/1-1-0.jpg",
    "FIF={n}&OBJ=IIP,1.0&OBJ=Basic-info&OBJ=Resolutions",
    "FIF={n}&JTL=1,0",
    "FIF={n}&JTL=2,3",
    "FIF={n}&WID=300&CVT=jpeg",
    "FIF={n}&LYR=1&RGN=0.2,0.2,0.5,0.5&WID=200&CVT=png",
]
EXTRA = {
    "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs": [
        "FIF={n}::label&WID=100&CVT=jpeg",
        "IIIF=/{n}::macro/info.json",
    ],
    "tif-stack-3page-600x400-2lvl-256tile-deflate-subifd-pagenames.tif": ["FIF={n}&SDS=2&JTL=0,0"],
}


@pytest.fixture(scope="module")
def apps(s3_images: S3Images, fixtures: str, downloads: str):
    """``(app on the bucket, {directory: app on that directory})``."""
    remote = helpers.make_app(FILESYSTEM_PREFIX=s3_images.url, S3_ENDPOINT=s3_images.store.endpoint)
    local = {d: helpers.make_app(FILESYSTEM_PREFIX=d + "/") for d in (fixtures, downloads)}
    return remote, local


@pytest.mark.parametrize("name", FILES)
def test_answers_from_s3_equal_answers_from_local_files(apps, s3_images: S3Images, name):
    remote, local = apps
    here = local[os.path.dirname(s3_images.local[name])]
    answered = set()
    for query in QUERIES + EXTRA.get(name, []):
        query = query.format(n=name)
        expected = helpers.call(here, query)
        got = helpers.call(remote, query)
        assert (got.status, got.header("content-type")) == (expected.status, expected.header("content-type")), query
        assert got.body == expected.body, query
        answered.add(got.status)
        if got.status >= 400:
            assert s3_images.bucket.encode() not in got.body and s3_images.prefix.encode() not in got.body
    if not name.startswith(("broken", "not-an", "unreadable", "unopenable")):
        assert 200 in answered, name  # the image itself was served, not only errors compared
