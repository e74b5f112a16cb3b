"""WATERMARK through the whole server: tiles and views, probability, determinism, a bad file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests import helpers
from tests.functional import reference
from tests.functional.reference import DEFLATE, JPEG_TABLES

OPACITY = 0.5


@pytest.fixture(scope="module")
def mark(tmp_path_factory) -> tuple[str, np.ndarray]:
    """A watermark with no zero sample, so every one of its pixels shows where it lands."""
    rng = np.random.default_rng(11)
    pixels = rng.integers(2, 90, (40, 56, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("watermark") / "mark.png"
    Image.fromarray(pixels).save(path)
    return str(path), pixels


def app_with(path: str, probability: str = "1", opacity: str = str(OPACITY)):
    return helpers.make_app(WATERMARK=path, WATERMARK_PROBABILITY=probability, WATERMARK_OPACITY=opacity)


def png(app, query: str) -> np.ndarray:
    result = helpers.call(app, query)
    assert result.status == 200, result.body[:200]
    return reference.decode(result.body)


def test_every_tile_carries_the_watermark_at_probability_1(mark):
    path, pixels = mark
    app = app_with(path)
    amount = np.floor(pixels.astype(np.float64) * OPACITY + 0.5).astype(np.int64)
    full = reference.pixels(DEFLATE, 0)
    for index in (0, 13, 40):
        got = png(app, f"FIF={DEFLATE}&PTL=4,{index}").astype(np.int64)
        col, row = index % 12, index // 12
        want = full[row * 256 : row * 256 + 256, col * 256 : col * 256 + 256].astype(np.int64)
        changed = np.any(got != want, axis=2)
        rows, cols = np.nonzero(changed)
        top, left = rows.min(), cols.min()
        h, w = pixels.shape[:2]
        # The changed pixels lie in one watermark-sized rectangle, changed by exactly its amount.
        assert rows.max() < top + h and cols.max() < left + w
        area = (slice(top, top + h), slice(left, left + w))
        assert np.array_equal(
            got[area], np.minimum(want[area] + amount[: got[area].shape[0], : got[area].shape[1]], 255)
        )
        outside = np.ones(changed.shape, bool)
        outside[area] = False
        assert np.array_equal(got[outside], want[outside])


def test_no_watermark_at_probability_0(mark):
    app = app_with(mark[0], probability="0")
    got = png(app, f"FIF={DEFLATE}&PTL=4,0")
    assert np.array_equal(got, reference.pixels(DEFLATE, 0)[:256, :256])


def test_about_half_the_tiles_at_probability_half(mark):
    app = app_with(mark[0], probability="0.5")
    full = reference.pixels(DEFLATE, 0)
    marked = 0
    for index in range(96):  # every tile of the full-size level, 12 x 8
        col, row = index % 12, index // 12
        got = png(app, f"FIF={DEFLATE}&PTL=4,{index}")
        marked += not np.array_equal(got, full[row * 256 : row * 256 + 256, col * 256 : col * 256 + 256])
    assert 28 <= marked <= 68, marked


def test_views_are_watermarked_in_blocks_of_twice_the_tile_size(mark):
    app = app_with(mark[0])
    # 1024 x 1024 full-size pixels, at full size: four 512-pixel blocks, each with a watermark.
    got = png(app, f"FIF={DEFLATE}&RGN=0,0,{1024 / 3000},{1024 / 2000}&WID=1024&HEI=1024&CVT=png")
    want = reference.pixels(DEFLATE, 0)[:1024, :1024]
    assert got.shape == want.shape
    for by in (0, 512):
        for bx in (0, 512):
            block = np.any(got[by : by + 512, bx : bx + 512] != want[by : by + 512, bx : bx + 512], axis=2)
            rows, cols = np.nonzero(block)
            assert rows.size and rows.max() - rows.min() < 40 and cols.max() - cols.min() < 56


def test_same_request_same_bytes_across_repeats_and_apps(mark):
    queries = (f"FIF={DEFLATE}&PTL=3,5", f"FIF={DEFLATE}&WID=700&CVT=png", f"FIF={JPEG_TABLES}&JTL=4,3")
    first, second = app_with(mark[0], probability="0.5"), app_with(mark[0], probability="0.5")
    for query in queries:
        a = helpers.call(first, query)
        again = helpers.call(first, query)  # from the response cache
        b = helpers.call(second, query)  # rendered afresh by another worker
        assert a.status == 200
        assert a.body == again.body == b.body
        assert a.header("etag") == b.header("etag")


def test_stored_tiles_are_not_passed_through(mark):
    app = app_with(mark[0])
    result = helpers.call(app, f"FIF={JPEG_TABLES}&JTL=4,0")
    assert result.status == 200
    plain = helpers.call(helpers.make_app(), f"FIF={JPEG_TABLES}&JTL=4,0")  # the stored tile
    assert result.body != plain.body
    assert reference.mean_abs_diff(reference.decode(result.body), reference.decode(plain.body)) > 0.5


def test_watermark_settings_change_the_etag(mark):
    query = f"FIF={DEFLATE}&PTL=2,0"
    tags = {
        helpers.call(app, query).header("etag")
        for app in (helpers.make_app(), app_with(mark[0]), app_with(mark[0], opacity="0.3"), app_with(mark[0], "0.7"))
    }
    assert len(tags) == 4


def test_a_missing_watermark_file_serves_normally(tmp_path):
    app = app_with(str(tmp_path / "no-such-mark.tif"))
    got = png(app, f"FIF={DEFLATE}&PTL=4,0")
    assert np.array_equal(got, reference.pixels(DEFLATE, 0)[:256, :256])
    # Stored tiles are sent as they are again.
    plain = helpers.call(helpers.make_app(), f"FIF={JPEG_TABLES}&JTL=4,0")
    assert helpers.call(app, f"FIF={JPEG_TABLES}&JTL=4,0").body == plain.body


def test_sixteen_bit_outputs_carry_it_scaled(mark):
    # BIT=16 PNG of a 16-bit source: the watermark adds its amount in 16-bit steps (x 257).
    import imagecodecs

    path, pixels = mark
    name = "tif-grey16-600x400-2lvl-256tile-deflate.tif"
    body = helpers.call(app_with(path), f"FIF={name}&BIT=16&PTL=1,0").body
    decoded = imagecodecs.png_decode(body)
    assert decoded.dtype == np.uint16
    got = decoded.astype(np.int64)
    want = reference.pixels(name, 0)[:256, :256, 0].astype(np.int64)
    assert got.shape == want.shape
    difference = got - want
    assert difference.min() >= 0 and difference.max() > 255  # added, and in 16-bit units
    # One watermark-sized patch at most.
    assert np.count_nonzero(difference) <= pixels.shape[0] * pixels.shape[1]
