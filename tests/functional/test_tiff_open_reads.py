"""What opening a TIFF reads: the IFDs, not the tile offset arrays of levels nobody asked for.

Over S3 every read is a request (SPEC section 11: opening a slide reads under 1 % of a file
over 100 MB).  A blob that records every byte range read (through its stream, which tifffile
uses, and its positional reads, which tiles use) shows what opening an image and reading one
tile cost.  The arrays' positions are worked out here from tifffile's own parse of the file:
each TileOffsets/TileByteCounts (StripOffsets/StripByteCounts) tag's value offset and
count x item size.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import imagecodecs
import numpy as np
import pytest
import tifffile

from iipsrv_py.errors import UnsupportedImage
from iipsrv_py.model import SourceIdentity
from iipsrv_py.sources.registry import open_source
from iipsrv_py.storage.local import LocalBlob, LocalStorage
from tests import helpers, recording

SVS = "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs"
ARRAY_TAGS = (273, 279, 324, 325)  # StripOffsets, StripByteCounts, TileOffsets, TileByteCounts


def recording_blob(path: str) -> recording.RecordingBlob:
    """A local blob whose every byte read is recorded in ``reads``."""
    st = os.stat(path)
    return recording.RecordingBlob(LocalBlob(path, SourceIdentity(path, st.st_mtime, st.st_size, str(st.st_ino))))


def array_ranges(page: tifffile.TiffPage) -> list[tuple[int, int]]:
    """``(start, end)`` of the offset and byte-count arrays stored outside the IFD's entries."""
    ranges = []
    threshold = page.parent.tiff.tagoffsetthreshold
    for code in ARRAY_TAGS:
        tag = page.tags.get(code)
        if tag is None:
            continue
        size = tag.count * struct.calcsize("<" + tifffile.TIFF.DATA_FORMATS[tag.dtype])
        if size > threshold:
            ranges.append((tag.valueoffset, tag.valueoffset + size))
    return ranges


def touched(reads: list[tuple[int, int]], ranges: list[tuple[int, int]]) -> bool:
    return any(o < end and start < o + n for o, n in reads for start, end in ranges)


def covered(reads: list[tuple[int, int]], ranges: list[tuple[int, int]]) -> bool:
    """Every byte of every range was read."""
    return all(any(o <= start and end <= o + n for o, n in reads) for start, end in ranges)


def every_ifd(path: str) -> Iterator[tuple[tifffile.TiffPage, list[tuple[int, int]]]]:
    """Every IFD of the file (chain and SubIFDs) parsed by tifffile, with its arrays."""
    with tifffile.TiffFile(path) as tif:
        for page in tif.pages:
            assert isinstance(page, tifffile.TiffPage)
            yield page, array_ranges(page)
            for sub in page.pages or ():
                yield sub, array_ranges(sub)


def write_pyramid(path: str, bigtiff: bool, subifds: bool) -> None:
    """A 2048 x 1536 RGB pyramid of five halving levels, 64-px tiles (so that even the
    smallest level's arrays lie outside its IFD entries)."""
    y, x = np.mgrid[0:1536, 0:2048]
    full = np.dstack([x % 256, y % 256, (x // 8 + y // 8) % 256]).astype(np.uint8)
    options = {"tile": (64, 64), "photometric": "rgb", "compression": "zlib", "metadata": None}
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        tif.write(full, subifds=4 if subifds else 0, **options)  # type: ignore[arg-type]
        for k in range(1, 5):
            tif.write(full[:: 2**k, :: 2**k], subfiletype=1, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def files(tmp_path_factory, fixtures: str) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("open-reads")
    made = {"svs": os.path.join(fixtures, SVS)}
    for name, bigtiff, subifds in (("chain", False, False), ("bigtiff-subifds", True, True)):
        made[name] = str(directory / f"{name}.tif")
        write_pyramid(made[name], bigtiff, subifds)
    return made


@pytest.mark.parametrize("kind", ["chain", "bigtiff-subifds", "svs"])
def test_opening_reads_no_offset_array_but_the_first_pages(files, kind):
    path = files[kind]
    ifds = list(every_ifd(path))
    first, *others = ifds
    # The arrays of IFDs of more than one segment lie outside their entries.
    assert first[1] and all(ranges for page, ranges in others if len(page.dataoffsets) > 1)
    blob = recording_blob(path)
    source = open_source(blob)  # type: ignore[arg-type]
    assert len(source.info.levels) == (3 if kind == "svs" else 5)
    assert covered(blob.reads, first[1])  # the first page is parsed whole, arrays too
    for page, ranges in others:
        assert not touched(blob.reads, ranges), (kind, page.index)


@pytest.mark.parametrize("kind", ["chain", "bigtiff-subifds", "svs"])
def test_a_tile_of_a_level_reads_that_level_s_arrays_only(files, kind):
    path = files[kind]
    ifds = list(every_ifd(path))
    for level in (1,) if kind == "svs" else (1, 3):  # (the SVS's level 2 is one tile: no arrays)
        blob = recording_blob(path)
        source = open_source(blob)  # type: ignore[arg-type]
        lvl = source.info.levels[level]
        # The IFD of this level, found by its size among the tiled IFDs tifffile lists.
        (mine,) = [r for p, r in ifds[1:] if p.is_tiled and (p.imagewidth, p.imagelength) == (lvl.width, lvl.height)]
        others = [r for p, r in ifds[1:] if r is not mine]
        assert mine and any(others)
        blob.reads.clear()
        tile = source.read_tile(level, 0, 0)
        assert tile.shape[:2] == (min(lvl.tile_height, lvl.height), min(lvl.tile_width, lvl.width))
        assert covered(blob.reads, mine), (kind, level)
        assert not any(touched(blob.reads, r) for r in others), (kind, level)
        blob.reads.clear()
        source.read_tile(level, 1, 0)
        assert not touched(blob.reads, mine)  # the level's IFD is parsed once and kept


def write_large_pyramid(path: str) -> None:
    """A BigTIFF pyramid of over 100 MB written quickly: every tile is the same stored JPEG
    (noise, so that it is large), levels halving from 24576 x 18432 in 256-px tiles."""
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    tile = bytes(imagecodecs.jpeg8_encode(noise, level=20))
    width, height = 24576, 18432
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        level = 0
        while max(width, height) >= 256:
            count = -(-width // 256) * -(-height // 256)
            tif.write(
                iter([tile] * count),
                shape=(height, width, 3),
                dtype=np.uint8,
                tile=(256, 256),
                photometric="ycbcr",
                compression="jpeg",
                subfiletype=1 if level else 0,
                metadata=None,
            )
            width, height, level = width // 2, height // 2, level + 1


def test_opening_a_100_mb_pyramid_reads_under_one_percent(tmp_path, capsys):
    path = str(tmp_path / "large.tif")
    write_large_pyramid(path)
    size = os.path.getsize(path)
    assert size > 100 * 1024 * 1024
    blob = recording_blob(path)
    source = open_source(blob)  # type: ignore[arg-type]
    assert len(source.info.levels) == 7
    opened = blob.bytes_read
    assert opened < size / 100
    with capsys.disabled():
        print(f"\nopening a {size / 1e6:.0f} MB 7-level BigTIFF pyramid read {opened} bytes in {len(blob.reads)} reads")
    with tifffile.TiffFile(path) as tif:
        first = tif.pages.first
        tif.filehandle.seek(first.dataoffsets[0])
        expected = imagecodecs.jpeg8_decode(tif.filehandle.read(first.databytecounts[0]))
    assert np.array_equal(source.read_tile(0, 0, 0), expected)


def test_the_recording_blob_records_what_tifffile_reads():
    """The recorder itself: tifffile parsing the first page through it reads the IFD."""
    path = helpers.fixture("tif-rgb-3000x2000-5lvl-256tile-deflate.tif")
    blob = recording_blob(path)
    with tifffile.TiffFile(blob.stream()) as tif:
        offset = tif.pages.first.offset
    assert any(o <= offset < o + n for o, n in blob.reads)


@pytest.mark.parametrize("what", ["compression", "tile size"])
def test_a_reduced_level_that_cannot_be_decoded_is_refused_at_open(tmp_path, monkeypatch, what):
    """What makes a file unservable is found in the levels' summaries when it is opened (415),
    even when only a reduced level has it: a compression no installed codec decodes, or tiles
    larger than a worker decodes (the limit is lowered to the other levels' 64-px tiles)."""
    from iipsrv_py.sources import base

    path = str(tmp_path / "pyramid.tif")
    write_pyramid(path, bigtiff=False, subifds=False)
    storage = LocalStorage(str(tmp_path) + "/")
    monkeypatch.setattr(base, "MAX_DECODE_UNIT_BYTES", 64 * 64 * 3)
    assert len(open_source(storage.open(*storage.resolve("pyramid.tif"))).info.levels) == 5
    with tifffile.TiffFile(path, mode="r+b") as tif:
        level = tif.pages[2]
        if what == "compression":
            assert 34999 not in tifffile.TIFF.DECOMPRESSORS
            level.tags["Compression"].overwrite(34999)
        else:
            level.tags["TileWidth"].overwrite(128)
    with pytest.raises(UnsupportedImage):
        open_source(storage.open(*storage.resolve("pyramid.tif")))
