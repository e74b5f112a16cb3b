"""IFD summaries against tifffile's own full parse, and the choice of levels and stack pages.

An image is opened from summaries of its IFDs (``sources/tiff_structure.py``: only the tags that
level and stack selection need, decoded by tifffile's TiffTag).  Every field of every summary,
for every IFD of every TIFF test file (generated and real slides, the chain and the SubIFDs),
must say what tifffile's TiffPage says when it parses the same IFD whole.
"""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
import tifffile

from iipsrv_py.sources import tiff_levels
from iipsrv_py.sources.tiff_structure import IfdReader, IfdSummary
from tests import helpers

TIFF_MAGICS = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def tiff_files() -> list[str]:
    """Every generated or downloaded file that is a TIFF whose first page tifffile reads."""
    import fetch_test_data

    paths = [os.path.join(helpers.FIXTURES, name) for name in helpers.make_test_images.BUILDERS]
    paths += [os.path.join(fetch_test_data.DEFAULT_DIRECTORY, name) for name in fetch_test_data.FILES]
    found = []
    for path in paths:
        if not os.path.exists(path):
            continue
        with open(path, "rb") as handle:
            if handle.read(4) not in TIFF_MAGICS:
                continue
        try:
            with tifffile.TiffFile(path) as tif:
                tif.pages.first  # noqa: B018
        except Exception:
            continue  # not readable at all: test_bad_input covers those
        found.append(path)
    return found


@pytest.fixture(scope="module")
def files(fixtures: str, downloads: str) -> list[str]:
    paths = tiff_files()
    assert len(paths) > 40  # the generated TIFF variety and the real slides are all here
    return paths


def tifffile_view(page: tifffile.TiffPage) -> tuple[object, ...]:
    """What tifffile's full parse says, in the order of the summary's fields."""
    return (
        page.offset,
        page.imagewidth,
        page.imagelength,
        page.imagedepth,
        page.tilewidth,
        page.tilelength,
        page.samplesperpixel,
        page.bitspersample,
        page.sampleformat,
        page.planarconfig,
        page.photometric,
        page.compression,
        page.subfiletype,
        page.rowsperstrip,
        tuple(page.subifds or ()),
        page.is_tiled,
    )


def summary_view(summary: IfdSummary) -> tuple[object, ...]:
    return (
        summary.offset,
        summary.width,
        summary.length,
        summary.depth,
        summary.tile_width,
        summary.tile_length,
        summary.samples,
        summary.bits,
        summary.sample_format,
        summary.planar,
        summary.photometric,
        summary.compression,
        summary.subfile_type,
        summary.rows_per_strip,
        summary.subifds,
        summary.is_tiled,
    )


def test_every_summary_says_what_tifffile_says(files):
    checked = 0
    for path in files:
        with tifffile.TiffFile(path) as tif:
            pages = list(tif.pages)  # every IFD of the chain parsed whole by tifffile
            reader = IfdReader(tif)
            chain = reader.chain()
            assert [s.offset for s in chain] == [p.offset for p in pages], path
            for position, (summary, page) in enumerate(zip(chain, pages, strict=True)):
                assert summary_view(summary) == tifffile_view(page), (path, position)
                assert summary.position == (position,)
                checked += 1
                if page.subifds:
                    subpages = list(page.pages)
                    subsummaries = reader.subifds(summary)
                    assert len(subsummaries) == len(subpages), path
                    for k, (sub, subpage) in enumerate(zip(subsummaries, subpages, strict=True)):
                        assert summary_view(sub) == tifffile_view(subpage), (path, position, k)
                        assert sub.position == (position, k)
                        checked += 1
    assert checked > 100


def test_big_endian_and_bigtiff_summaries(tmp_path):
    """Both byte orders and both offset sizes, with per-sample tags stored outside the entry
    (three BitsPerSample values) and a SubIFD pyramid."""
    pixels = np.zeros((300, 200, 3), np.uint16)
    for bigtiff in (False, True):
        for byteorder in ("<", ">"):
            path = tmp_path / f"f-{bigtiff}-{byteorder == '<'}.tif"
            with tifffile.TiffWriter(path, bigtiff=bigtiff, byteorder=byteorder) as tif:
                tif.write(pixels, tile=(64, 64), photometric="rgb", subifds=2, metadata=None)
                tif.write(pixels[::2, ::2], tile=(64, 64), photometric="rgb", subfiletype=1, metadata=None)
                tif.write(pixels[::4, ::4], tile=(64, 64), photometric="rgb", subfiletype=1, metadata=None)
                tif.write(pixels[:, :, 0], rowsperstrip=7, photometric="minisblack", metadata=None)
            with tifffile.TiffFile(path) as tif:
                pages = list(tif.pages)
                reader = IfdReader(tif)
                chain = reader.chain()
                assert [summary_view(s) for s in chain] == [tifffile_view(p) for p in pages]
                subs = reader.subifds(chain[0])
                assert [summary_view(s) for s in subs] == [tifffile_view(p) for p in pages[0].pages]
                assert chain[0].bits == 16 and subs[1].width == 50
                assert chain[1].rows_per_strip == 7 and not chain[1].is_tiled


def test_a_chain_that_loops_back_ends(tmp_path):
    """A next-IFD pointer back to an earlier IFD ends the chain instead of looping forever."""
    path = tmp_path / "loop.tif"
    pixels = np.zeros((64, 64), np.uint8)
    with tifffile.TiffWriter(path) as tif:
        for _ in range(3):
            tif.write(pixels, tile=(32, 32), metadata=None)
    with tifffile.TiffFile(path) as tif:
        offsets = [p.offset for p in tif.pages]
        last = tif.pages[2]
        tag_count = len(last.tags)
    with open(path, "r+b") as handle:
        handle.seek(offsets[2] + 2 + 12 * tag_count)  # classic TIFF: count, 12-byte entries, next
        assert struct.unpack("<I", handle.read(4))[0] == 0
        handle.seek(offsets[2] + 2 + 12 * tag_count)
        handle.write(struct.pack("<I", offsets[1]))
    with tifffile.TiffFile(path) as tif:
        assert [s.offset for s in IfdReader(tif).chain()] == offsets


# -- choosing levels and stack pages (pure) ---------------------------------------------------


def ifd(width: int, length: int, *, tiled: bool = True, subfile: int = 0, samples: int = 3) -> IfdSummary:
    return IfdSummary(
        offset=width * 100_000 + length,
        position=(0,),
        width=width,
        length=length,
        depth=1,
        tile_width=256 if tiled else 0,
        tile_length=256 if tiled else 0,
        samples=samples,
        bits=8,
        sample_format=1,
        planar=1,
        photometric=2,
        compression=7,
        subfile_type=subfile,
        rows_per_strip=0 if tiled else length,
        subifds=(),
    )


def test_levels_are_sorted_by_size_and_thumbnails_labels_and_other_layouts_left_out():
    base = ifd(4000, 3000)
    half, quarter = ifd(2000, 1500, subfile=1), ifd(1000, 750, subfile=1)
    thumbnail = ifd(768, 576, tiled=False)  # stripped: never a level of a tiled image
    label = ifd(400, 240, subfile=1)  # another aspect ratio
    grey = ifd(500, 375, samples=1)  # another pixel layout
    levels = tiff_levels.pyramid(base, [quarter, thumbnail, label, half, grey])
    assert levels == (base, half, quarter)


def test_aspect_ratio_allows_a_pixel_of_rounding_per_side():
    base = ifd(4001, 3001)
    assert tiff_levels.pyramid(base, [ifd(1000, 750)]) == (base, ifd(1000, 750))  # 4001/4 rounded down
    assert tiff_levels.pyramid(base, [ifd(1000, 740)]) == (base,)


def test_stack_pages_are_full_size_same_layout_and_not_reduced():
    first = ifd(600, 400)
    chain = [first, ifd(300, 200, subfile=1), ifd(600, 400), ifd(600, 400, subfile=1), ifd(600, 400, samples=1)]
    assert tiff_levels.stack_starts(chain) == (0, 2)


def test_page_names():
    assert tiff_levels.page_name(2, "Visible", "doc") == "Visible"
    assert tiff_levels.page_name(2, None, b"doc\0") == "doc"
    assert tiff_levels.page_name(2, "  ", None) == "page 2"
