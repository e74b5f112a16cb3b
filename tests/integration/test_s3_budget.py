"""The request budget of object storage (SPEC section 11), counted by the proxy in front of the
store: every request iipsrv_py sends passes it, with its method and Range header.

The bound on opening an image is worked out here from the file itself (tifffile): the
distinct S3_BLOCK_SIZE blocks that hold the header, an IFD's entry table, or a tag value of an
IFD -- the tile and strip offset arrays only of the first IFD, which tifffile parses whole; the
other levels' arrays are read with their first tile.  Opening (an info.json) may send at most
one GET per such block, and must read under 1 % of a file over 100 MB; the first tile of a
level at most 2 GETs (its arrays, then the tile), any later tile of the level at most 1, the
same tile again none, and no GET goes without a Range.
"""

from __future__ import annotations

import os
import struct

import pytest
import tifffile

from iipsrv_py.cache.shared import NO_SHARING
from iipsrv_py.settings import from_environ
from iipsrv_py.sources.registry import open_source
from iipsrv_py.storage.s3 import S3Storage
from tests import helpers, s3_store
from tests.functional.test_tiff_open_reads import write_large_pyramid
from tests.integration.s3_fixtures import S3Images

pytestmark = pytest.mark.integration

BLOCK = 256 * 1024
ARRAYS = (273, 279, 324, 325)  # StripOffsets, StripByteCounts, TileOffsets, TileByteCounts
LARGE = "large-7lvl-bigtiff-pyramid.tif"
FILES = [
    "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif",
    "tif-rgb-1200x800-4lvl-256tile-deflate-vips-subifd.tif",
    "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs",
    "cmu_small_region.svs",
    LARGE,
]


def structure_blocks(path: str) -> set[int]:
    """The blocks holding the header, each IFD's entry table and its tag values (offset arrays
    only of the first IFD), from tifffile's parse of every IFD, SubIFDs included."""
    spans: list[tuple[int, int]] = []
    with tifffile.TiffFile(path) as tif:
        t = tif.tiff
        spans.append((0, 16 if t.is_bigtiff else 8))
        pages = []
        for page in tif.pages:
            assert isinstance(page, tifffile.TiffPage)
            pages.append(page)
            pages.extend(page.pages or ())
        for number, page in enumerate(pages):
            spans.append((page.offset, page.offset + t.tagnosize + len(page.tags) * t.tagsize + t.offsetsize))
            for tag in page.tags.values():
                size = tag.count * struct.calcsize("<" + tifffile.TIFF.DATA_FORMATS[tag.dtype])
                if size > t.tagoffsetthreshold and (number == 0 or tag.code not in ARRAYS):
                    spans.append((tag.valueoffset, tag.valueoffset + size))
    return {block for start, end in spans for block in range(start // BLOCK, (end - 1) // BLOCK + 1)}


@pytest.fixture(scope="module")
def large_pyramid(tmp_path_factory: pytest.TempPathFactory, s3_images: S3Images) -> str:
    """A BigTIFF pyramid of over 100 MB (every tile the same stored JPEG), uploaded too."""
    path = str(tmp_path_factory.mktemp("large") / LARGE)
    write_large_pyramid(path)
    assert os.path.getsize(path) > 100 * 1024 * 1024
    s3_store.upload(s3_images.store, s3_images.bucket, {s3_images.prefix + LARGE: path})
    return path


def local_path(name: str, s3_images: S3Images, large_pyramid: str) -> str:
    return large_pyramid if name == LARGE else s3_images.local[name]


def fresh_app(s3_images: S3Images, proxy: s3_store.CountingProxy):
    """An application with cold caches, reading the bucket through the counting proxy."""
    return helpers.make_app(FILESYSTEM_PREFIX=s3_images.url, S3_ENDPOINT=proxy.endpoint, S3_IDENTITY_TTL="600")


@pytest.mark.parametrize("name", FILES)
def test_opening_and_tiles_keep_to_the_request_budget(s3_images, s3_proxy, large_pyramid, name, capsys):
    path = local_path(name, s3_images, large_pyramid)
    size = os.path.getsize(path)
    app = fresh_app(s3_images, s3_proxy)
    s3_proxy.reset()
    assert helpers.call(app, f"IIIF=/{name}/info.json").status == 200
    opened = s3_proxy.gets()
    opened_bytes = sum(end - start for start, end in (g.span() for g in opened))
    allowed = structure_blocks(path)
    assert len(s3_proxy.heads()) == 1
    assert len(opened) <= len(allowed), (opened, sorted(allowed))
    if size > 100 * 1024 * 1024:
        assert opened_bytes < size / 100
    report = [f"{name}: {size / 1e6:.1f} MB, open {len(opened)} GETs (bound {len(allowed)}), {opened_bytes} bytes"]

    levels = app.catalog.open(name).info.levels
    for level in range(len(levels)):
        resolution = len(levels) - 1 - level  # IIP numbers resolutions from the smallest
        s3_proxy.reset()
        assert helpers.call(app, f"FIF={name}&JTL={resolution},0").status == 200
        first = len(s3_proxy.gets())
        assert first <= 2, (level, s3_proxy.gets())
        later = 0
        last = levels[level].tiles_x * levels[level].tiles_y - 1  # far from the first, in the file too
        if last > 0:
            s3_proxy.reset()
            assert helpers.call(app, f"FIF={name}&JTL={resolution},{last}").status == 200
            later = len(s3_proxy.gets())
            assert later <= 1, (level, s3_proxy.gets())
        s3_proxy.reset()
        assert helpers.call(app, f"FIF={name}&JTL={resolution},0").status == 200
        assert s3_proxy.seen == []  # no GET, and no HEAD within S3_IDENTITY_TTL
        report.append(f"level {level}: first tile {first}, last tile {later}")
    assert all(seen.range for seen in s3_proxy.seen if seen.method == "GET")
    with capsys.disabled():
        print("\n" + "; ".join(report))


@pytest.mark.parametrize("name", [LARGE, "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs"])
def test_a_tile_read_again_is_read_from_the_block_cache(s3_images, s3_proxy, large_pyramid, name):
    """Below the response and tile caches: the source reads a stored tile twice, the second
    time with no request at all."""
    settings, _ = from_environ({"FILESYSTEM_PREFIX": s3_images.url, "S3_ENDPOINT": s3_proxy.endpoint})
    storage = S3Storage(settings, NO_SHARING)
    source = open_source(storage.open(*storage.resolve(name)))
    level = source.info.levels[1]
    with tifffile.TiffFile(local_path(name, s3_images, large_pyramid)) as tif:
        # Level 1's first stored tile, decoded by tifffile.
        (page,) = [p for p in tif.pages if p.is_tiled and p.shape[:2] == (level.height, level.width)]
        tif.filehandle.seek(page.dataoffsets[0])
        data = tif.filehandle.read(page.databytecounts[0])
        decoded, _, shape = page.decode(data, 0, jpegtables=page.jpegtables)
        expected = decoded.reshape(shape[1:])[: level.height, : level.width]
    s3_proxy.reset()
    first = source.read_tile(1, 0, 0)
    assert 1 <= len(s3_proxy.gets()) <= 2
    assert all(seen.range for seen in s3_proxy.gets())
    s3_proxy.reset()
    again = source.read_tile(1, 0, 0)
    assert s3_proxy.seen == []
    assert (first == again).all() and (first == expected).all()
