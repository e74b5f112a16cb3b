"""The watermark transform: additive, clipped, deterministic, alpha untouched, both bit depths."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from iipsrv_py.transforms.watermark import Watermark, block_choice


@pytest.fixture
def mark_file(tmp_path):
    rng = np.random.default_rng(7)
    mark = rng.integers(1, 100, (12, 20, 3), dtype=np.uint8)
    path = tmp_path / "mark.png"
    Image.fromarray(mark).save(path)
    return str(path), mark


def expected_amount(mark: np.ndarray, opacity: float) -> np.ndarray:
    return np.floor(mark.astype(np.float64) * opacity + 0.5).astype(np.int64)


def placed(before: np.ndarray, after: np.ndarray) -> tuple[slice, slice]:
    """The rectangle of pixels that changed."""
    changed = np.any(after != before, axis=2)
    rows, cols = np.nonzero(changed)
    return slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)


def test_adds_the_watermark_scaled_by_the_opacity(mark_file):
    path, mark = mark_file
    pixels = np.full((64, 64, 3), 10, np.uint8)
    out = Watermark(path, 1.0, 0.5).apply(pixels, b"seed", 0)
    rows, cols = placed(pixels, out)
    assert (rows.stop - rows.start, cols.stop - cols.start) == mark.shape[:2]
    want = np.minimum(10 + expected_amount(mark, 0.5), 255)
    assert np.array_equal(out[rows, cols], want)
    outside = np.ones((64, 64), bool)
    outside[rows, cols] = False
    assert np.all(out[outside] == 10)
    assert np.all(pixels == 10)  # the input is not written to


def test_clips_at_the_largest_value_in_8_and_16_bits(mark_file):
    path, _ = mark_file
    mark = Watermark(path, 1.0, 1.0)
    assert mark.apply(np.full((30, 30, 3), 250, np.uint8), b"s", 0).max() == 255
    wide = np.full((30, 30, 3), 65000, np.uint16)
    out = mark.apply(wide, b"s", 0)
    assert out.dtype == np.uint16 and out.max() == 65535


def test_uint16_adds_257_times_the_8_bit_amount(mark_file):
    path, _ = mark_file
    narrow = np.zeros((40, 40, 3), np.uint8)
    wide = np.zeros((40, 40, 3), np.uint16)
    a = Watermark(path, 1.0, 0.25).apply(narrow, b"k", 0).astype(np.int64)
    b = Watermark(path, 1.0, 0.25).apply(wide, b"k", 0).astype(np.int64)
    assert np.array_equal(a * 257, b)


@pytest.mark.parametrize("bands", [1, 2, 3, 4])
def test_alpha_is_untouched_and_grey_gets_luminance(mark_file, bands):
    path, mark = mark_file
    pixels = np.zeros((40, 40, bands), np.uint8)
    if bands in (2, 4):
        pixels[:, :, -1] = 77
    out = Watermark(path, 1.0, 1.0).apply(pixels, b"x", 0)
    if bands in (2, 4):
        assert np.all(out[:, :, -1] == 77)
    colour = out[:, :, : 3 if bands >= 3 else 1]
    if bands >= 3:
        assert sorted(np.unique(colour[colour > 0]).tolist()) == sorted(np.unique(mark).tolist())
    else:
        rgb = mark.astype(np.int64)
        grey = np.floor((rgb[..., 0] * 1254097 + rgb[..., 1] * 2462056 + rgb[..., 2] * 478151) / (1 << 22) + 0.5)
        rows, cols = placed(pixels, out)
        assert np.array_equal(colour[rows, cols, 0], grey[: rows.stop - rows.start, : cols.stop - cols.start])


def test_deterministic_per_seed_and_varies_between_seeds(mark_file):
    path, _ = mark_file
    pixels = np.zeros((200, 200, 3), np.uint8)
    first = Watermark(path, 1.0, 1.0).apply(pixels, b"one", 0)
    again = Watermark(path, 1.0, 1.0).apply(pixels, b"one", 0)
    assert np.array_equal(first, again)
    places = {placed(pixels, Watermark(path, 1.0, 1.0).apply(pixels, bytes([i]), 0))[0].start for i in range(20)}
    assert len(places) > 5


def test_blocks_each_get_their_own_watermark(mark_file):
    path, _ = mark_file
    pixels = np.zeros((128, 192, 3), np.uint8)
    out = Watermark(path, 1.0, 1.0).apply(pixels, b"view", 64)
    for by in range(0, 128, 64):
        for bx in range(0, 192, 64):
            assert np.count_nonzero(out[by : by + 64, bx : bx + 64]) == 12 * 20 * 3


def test_probability_is_the_fraction_of_watermarked_blocks():
    hits = sum(block_choice(b"seed", i, 0.5, 10, 10) is not None for i in range(4000))
    assert 1800 < hits < 2200
    assert all(block_choice(b"s", i, 1.0, 0, 0) == (0, 0) for i in range(100))
    assert all(block_choice(b"s", i, 0.0, 5, 5) is None for i in range(100))


def test_a_watermark_larger_than_the_block_is_cropped(mark_file):
    path, mark = mark_file
    out = Watermark(path, 1.0, 1.0).apply(np.zeros((5, 7, 3), np.uint8), b"s", 0)
    assert np.array_equal(out, mark[:5, :7])


def test_tiff_and_grey_files_are_read(tmp_path):
    import tifffile

    path = tmp_path / "mark.tif"
    tifffile.imwrite(path, np.full((4, 4), 30, np.uint8))
    out = Watermark(str(path), 1.0, 1.0).apply(np.zeros((4, 4, 3), np.uint8), b"s", 0)
    assert np.all(out == 30)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_missing_or_unreadable_file_logs_once_and_changes_nothing(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    logger = logging.getLogger("iipsrv_py.transforms.watermark")
    for path in (str(tmp_path / "missing.tif"), str(broken)):
        records = _Records()
        logger.addHandler(records)
        try:
            mark = Watermark(path, 1.0, 1.0)
        finally:
            logger.removeHandler(records)
        assert not mark.active
        assert len(records.records) == 1 and path in records.records[0].getMessage()
        pixels = np.zeros((8, 8, 3), np.uint8)
        assert mark.apply(pixels, b"s", 0) is pixels
    assert not Watermark("", 1.0, 1.0).active
