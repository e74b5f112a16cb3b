"""The source contract, run over every fixture a source claims.

For each claimed file: the source the registry picks by content, its level geometry (full size
first, strictly decreasing, real downsample factors, tile grids covering each level), tiles of
every level (shape, dtype, channels; pixels against an independent reference decode of the
whole image, resized by the test for the smaller levels), stored tiles that decode to the same
pixels, a region across tile boundaries assembled by the pipeline, and well-formed metadata.
Every image the fixture builders make is either claimed here or is one of the deliberately
broken files.
"""

from __future__ import annotations

import io
import itertools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import pyvips
import tifffile
from PIL import Image

from iipsrv_py.cache.store import WorkerCache
from iipsrv_py.pipeline import Pipeline
from iipsrv_py.planning import Region, Size, ViewRequest, plan
from iipsrv_py.settings import Settings
from iipsrv_py.sources.registry import open_source
from iipsrv_py.storage.local import LocalStorage
from tests.functional import test_tiff_flavours as flavours

Reference = Callable[[str], np.ndarray]


def _channels_last(pixels: np.ndarray) -> np.ndarray:
    return pixels[:, :, np.newaxis] if pixels.ndim == 2 else pixels


def tifffile_page0(path: str) -> np.ndarray:
    """The first page as tifffile decodes it whole (8-bit images: the stored samples)."""
    with tifffile.TiffFile(path) as tif:
        return _channels_last(tif.pages.first.asarray())


def pillow(path: str) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        mode = "L" if image.mode in ("L", "1", "I;16", "I") else "RGB"
        return _channels_last(np.asarray(image.convert(mode)))


def openslide_level0(path: str) -> np.ndarray:
    """Level 0 as OpenSlide (openslide-python, a test extra) reads it."""
    import openslide

    with openslide.OpenSlide(path) as slide:
        return np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))


def glymur_8bit(path: str) -> np.ndarray:
    """The whole image as OpenJPEG decodes it (glymur), samples scaled to 8 bits."""
    import glymur

    jp2 = glymur.Jp2k(path)
    pixels = _channels_last(jp2[:])
    bits = jp2.codestream.segment[1].bitdepth[0]
    if bits == 8:
        return pixels
    return np.floor(pixels.astype(np.float64) * 255 / (2**bits - 1) + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class Claim:
    fixture: str
    format: str  # the source's format_name
    reference: Reference
    tolerance: float  # largest mean absolute difference of a level-0 tile from the reference


CLAIMS: list[Claim] = [
    Claim("tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif", "tiff", tifffile_page0, 0.0),
    Claim("tif-rgb-3000x2000-5lvl-256tile-jpeg-subifd.tif", "tiff", tifffile_page0, 0.0),
    Claim("tif-rgb-3000x2000-5lvl-256tile-deflate.tif", "tiff", tifffile_page0, 0.0),
    Claim("tif-rgb-1500x1000-3lvl-512x256tile-jpeg.tif", "tiff", tifffile_page0, 0.0),
    Claim("tif-rgb-3000x2000-4lvl-div3-256tile-lzw.tif", "tiff", tifffile_page0, 0.0),
    Claim("tif-rgb-4099x3071-4lvl-step4-256tile-jpeg.tif", "tiff", tifffile_page0, 0.0),
    Claim("tif-grey-2000x1500-4lvl-256tile-none.tif", "tiff", tifffile_page0, 0.0),
    Claim("tif-rgb-1200x800-3lvl-128tile-jpeg-bigtiff.tif", "tiff", tifffile_page0, 0.0),
    Claim("tif-rgb-600x400-2lvl-256tile-none-sminmax-10x5dpcm.tif", "tiff", tifffile_page0, 0.0),
    # Stored RGB without the marker that says so: tifffile, told the photometric, decodes it
    # as RGB; so must we (a YCbCr reading would be far off).
    Claim("tif-rgb-1024x768-2lvl-256tile-jpeg-rgb-no-app14.tif", "tiff", tifffile_page0, 0.0),
    # Aperio SVS: OpenSlide's reading of the full level (for 33003 it converts YCbCr to RGB
    # itself; the two conversions may round a level apart: observed 0.0002).
    Claim("svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs", "svs", openslide_level0, 0.0),
    Claim("svs-rgb-1500x1001-2lvl-step4-256tile-jp2k-33003-ycbcr.svs", "svs", openslide_level0, 0.05),
    Claim("svs-rgb-1500x1001-2lvl-step4-256tile-jp2k-33005-rgb.svs", "svs", openslide_level0, 0.0),
    # JPEG 2000 (OpenJPEG through glymur, 16 bits scaled) and JPEG (Pillow's full decode).
    Claim("jp2-rgb-3000x2000-5res-3layer.jp2", "jp2", glymur_8bit, 0.0),
    Claim("j2k-rgb-2000x1500-2res-384tile.j2k", "jp2", glymur_8bit, 0.0),
    Claim("jp2-grey16-1000x700-4res.jp2", "jp2", glymur_8bit, 0.0),
    Claim("jp2-rgba-800x600-4res.jp2", "jp2", glymur_8bit, 0.0),
    Claim("jpeg-rgb-3000x2000-q90-exif.jpg", "jpeg", pillow, 0.0),
    Claim("jpeg-grey-1200x800-q90.jpg", "jpeg", pillow, 0.0),
    Claim("jpeg-rgb-1001x777-q90.jpg", "jpeg", pillow, 0.0),
    # Content, not name: a TIFF called .jpg.
    Claim("tif-named-as-jpeg-rgb-600x400.jpg", "tiff", tifffile_page0, 0.0),
    # TIFF flavours: the stored samples as tifffile decodes them, converted to 8 bits by the
    # formulas the flavour tests write out (palette lookup, range scaling, MinIsWhite, ...).
    *(Claim(name, "tiff", lambda path, name=name: flavours.EXPECTED[name](), 0.0) for name in flavours.EXPECTED),
    # CIELAB: libvips' Lab -> sRGB; the two conversions may round a level apart.
    Claim(flavours.CIELAB, "tiff", lambda path: flavours.vips_lab_to_srgb(flavours.CIELAB), 0.6),
    *(
        Claim(name, "tiff", tifffile_page0, 0.0)
        for name in (
            flavours.STRIPPED_PYRAMID,
            flavours.STRIPPED_EXTRAS,
            flavours.OME,
            flavours.VIPS_SUBIFD,
            flavours.STACK,
            flavours.STACK_CHAIN,
        )
    ),
]

# Made on purpose to fail: the bad-input tests cover them.
BROKEN_PREFIXES = ("broken-", "not-an-image")
# Lower levels are compared with the reference reduced by libvips: stored levels were made by
# some other resampler, so only gross errors (a wrong level, shifted or mis-scaled pixels) show.
LEVEL_TOLERANCE = 12.0
SETTINGS = Settings()


def _open(path: str):
    storage = LocalStorage(os.path.dirname(path) + "/")
    location, identity = storage.resolve(os.path.basename(path))
    return open_source(storage.open(location, identity))


def _reduce(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    bands = pixels.shape[2]
    image = pyvips.Image.new_from_memory(
        np.ascontiguousarray(pixels).data, pixels.shape[1], pixels.shape[0], bands, "uchar"
    )
    out = image.resize(width / pixels.shape[1], vscale=height / pixels.shape[0])
    return np.ndarray(buffer=out.write_to_memory(), dtype=np.uint8, shape=(out.height, out.width, bands))


def _sample_tiles(tiles_x: int, tiles_y: int) -> set[tuple[int, int]]:
    last_x, last_y = tiles_x - 1, tiles_y - 1
    return {(0, 0), (last_x, 0), (0, last_y), (last_x, last_y), (last_x // 2, last_y // 2)}


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def test_every_fixture_is_claimed_or_broken(fixtures: str) -> None:
    import make_test_images

    claimed = {claim.fixture for claim in CLAIMS}
    unclaimed = [
        name for name in make_test_images.BUILDERS if name not in claimed and not name.startswith(BROKEN_PREFIXES)
    ]
    assert unclaimed == [], f"fixtures no source claims: {unclaimed}"


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.fixture)
def test_source_contract(claim: Claim, fixtures: str) -> None:
    path = os.path.join(fixtures, claim.fixture)
    source = _open(path)
    assert source.format_name == claim.format
    info = source.info
    reference = claim.reference(path)

    # Geometry.
    assert (info.width, info.height) == (reference.shape[1], reference.shape[0])
    assert info.channels == reference.shape[2]
    levels = info.levels
    assert (levels[0].width, levels[0].height) == (info.width, info.height)
    for bigger, smaller in itertools.pairwise(levels):
        assert smaller.width < bigger.width and smaller.height < bigger.height
    for level in levels:
        assert level.downsample_x == pytest.approx(info.width / level.width)
        assert level.downsample_y == pytest.approx(info.height / level.height)
        assert level.tiles_x == math.ceil(level.width / level.tile_width)
        assert level.tiles_y == math.ceil(level.height / level.tile_height)

    # Tiles of every level against the reference.
    for index, level in enumerate(levels):
        expected_level = reference if index == 0 else _reduce(reference, level.width, level.height)
        tolerance = claim.tolerance if index == 0 else LEVEL_TOLERANCE
        for col, row in _sample_tiles(level.tiles_x, level.tiles_y):
            x, y, w, h = level.tile_rect(col, row)
            tile = source.read_tile(index, col, row)
            assert tile.dtype == np.uint8
            assert tile.shape == (h, w, info.channels), (index, col, row)
            assert _mad(tile, expected_level[y : y + h, x : x + w]) <= tolerance, (index, col, row)
            stored = source.raw_tile(index, col, row)
            if stored is not None:
                assert info.stored_encoding == "jpeg"
                decoded = _channels_last(np.asarray(Image.open(io.BytesIO(stored))))
                if decoded.shape[2] != tile.shape[2]:
                    decoded = decoded[:, :, : tile.shape[2]]
                # A browser decodes the stored stream: it must show what read_tile shows
                # (libjpeg versions may round a level or two apart).  Stored edge tiles keep
                # their padding (the server only passes interior tiles through).
                assert decoded.shape[:2] == (level.tile_height, level.tile_width)
                assert _mad(decoded[:h, :w], tile) < 1.5

    # A full-resolution region across tile boundaries, assembled by the pipeline from tiles.
    rw, rh = min(300, info.width), min(300, info.height)
    rx, ry = (info.width - rw) // 3, (info.height - rh) // 3
    view = ViewRequest(Region("pixels", rx, ry, rw, rh), Size("exact", rw, rh), encoding="png")
    region_plan = plan(view, info, SETTINGS)
    assert (region_plan.level, region_plan.w, region_plan.h) == (0, rw, rh)
    region = Pipeline(SETTINGS, WorkerCache(1 << 24)).region(source, region_plan)
    assert region.shape == (rh, rw, info.channels)
    assert _mad(region, reference[ry : ry + rh, rx : rx + rw]) <= claim.tolerance

    # Metadata.
    assert info.bits_per_sample > 0
    for key, value in info.metadata:
        assert isinstance(key, str) and key and isinstance(value, str) and value
