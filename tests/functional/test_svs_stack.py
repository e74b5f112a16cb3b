"""Every page of a stack of Aperio images is an Aperio image: 33003 tiles become RGB on each.

The file: two same-size pages in the IFD chain, each followed by its reduced level, every tile a
JPEG 2000 codestream of YCbCr components without a colour transform (Aperio's 33003), every
description an Aperio one.  The reference decodes the stored codestream with imagecodecs and
converts it with the JFIF formula written out here.
"""

from __future__ import annotations

import os

import imagecodecs
import numpy as np
import pytest
import tifffile

from iipsrv_py.sources.registry import open_source
from iipsrv_py.storage.local import LocalStorage
from tests import helpers

images = helpers.make_test_images
WIDTH, HEIGHT, TILE = 1024, 768, 256
MPP = ("0.25", "0.5")  # per page


def jfif_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """Full-range YCbCr to RGB (JFIF: ITU-T T.871), rounded and clipped."""
    y, cb, cr = (ycbcr[..., i].astype(np.float64) for i in range(3))
    r = y + 1.402 * (cr - 128)
    g = y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128)
    b = y + 1.772 * (cb - 128)
    return np.clip(np.rint(np.dstack([r, g, b])), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def stack_path(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("svs-stack") / "stack-33003.svs")
    with tifffile.TiffWriter(path) as tif:
        for page, seed in enumerate((40, 41)):
            full = images.scene(WIDTH, HEIGHT, seed=seed)
            for factor in (1, 4):
                w, h = WIDTH // factor, HEIGHT // factor
                pixels = full if factor == 1 else images.reduce(full, w, h)
                description = f"Aperio Image Library vTEST \r\n{w}x{h} ({TILE}x{TILE}) J2K/YUV16|MPP = {MPP[page]}"
                tif.write(
                    images._padded_tiles(pixels, TILE, images._jp2k_ycbcr),
                    shape=pixels.shape,
                    dtype=np.uint8,
                    photometric="rgb",
                    tile=(TILE, TILE),
                    compression=33003,
                    subfiletype=0 if factor == 1 else 1,
                    description=description,
                    software=False,
                    metadata=None,
                )
    return path


def open_path(path: str):
    storage = LocalStorage(os.path.dirname(path) + "/")
    return open_source(storage.open(*storage.resolve(os.path.basename(path))))


def stored_ycbcr(path: str, chain_position: int, tile_index: int) -> np.ndarray:
    """One stored tile's components as the codestream holds them (no colour transform)."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[chain_position]
        assert page.compression == 33003
        tif.filehandle.seek(page.dataoffsets[tile_index])
        data = tif.filehandle.read(page.databytecounts[tile_index])
    return imagecodecs.jpeg2k_decode(data)


@pytest.mark.parametrize("page", [0, 1])
@pytest.mark.parametrize("level", [0, 1])
def test_each_page_of_an_aperio_stack_converts_33003_tiles(stack_path, page, level):
    source = open_path(stack_path)
    assert source.format_name == "svs" and len(source.info.pages) == 2
    image = source.page(page)
    assert image.format_name == "svs" and image.info.format == "svs"
    assert image.info.meta("aperio.MPP") == MPP[page]
    assert image.info.dpi == pytest.approx((1e6 / float(MPP[page]),) * 2)
    lvl = image.info.levels[level]
    assert (lvl.width, lvl.height) == (WIDTH // 4**level, HEIGHT // 4**level)
    col, row = (1, 1) if level == 0 else (0, 0)
    index = row * lvl.tiles_x + col
    ycbcr = stored_ycbcr(stack_path, 2 * page + level, index)
    expected = jfif_rgb(ycbcr)
    _, _, w, h = lvl.tile_rect(col, row)
    tile = image.read_tile(level, col, row)
    assert tile.shape == (h, w, 3)
    difference = np.abs(tile.astype(int) - expected[:h, :w].astype(int))
    assert difference.max() <= 1  # float rounding only
    # The conversion matters: the components as stored are far from the picture.
    assert np.abs(tile.astype(int) - ycbcr[:h, :w].astype(int)).mean() > 10


def test_the_pages_are_different_images(stack_path):
    source = open_path(stack_path)
    first, second = source.page(0).read_tile(0, 1, 1), source.page(1).read_tile(0, 1, 1)
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 5
    assert source.page(1).identity != source.identity
