"""Native samples to 8 bits (iipsrv_py.sources.pixels).

Expected values are computed here from the rules written out in the test (the TIFF 6.0 and CIE
definitions, IEC 61966-2-1 for sRGB) or by libvips, never by the module under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import pyvips

from iipsrv_py.sources import pixels


def column(values, dtype) -> np.ndarray:
    """Values as a 1 x N x 1 image."""
    return np.asarray(values, dtype=dtype).reshape(1, -1, 1)


def flat(array: np.ndarray) -> list[int]:
    return [int(v) for v in array.ravel()]


def test_8bit_samples_are_shown_as_stored():
    samples = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    out = pixels.to_uint8(samples, pixels.for_samples(np.dtype(np.uint8), 1))
    assert out.dtype == np.uint8 and np.array_equal(out, samples)


def test_uint16_full_range_rounds_v_times_255_over_65535():
    values = [0, 1, 128, 129, 257, 32767, 32768, 65407, 65534, 65535]
    out = pixels.to_uint8(column(values, np.uint16), pixels.for_samples(np.dtype(np.uint16), 1))
    # v * 255 / 65535 = v / 257, which is never exactly half way between two integers.
    assert flat(out) == [round(v / 257) for v in values]


def test_12bit_samples_in_uint16_use_their_own_range():
    values = [0, 1000, 2048, 4095]
    out = pixels.to_uint8(column(values, np.uint16), pixels.for_samples(np.dtype(np.uint16), 1, bits=12))
    assert flat(out) == [round(v * 255 / 4095) for v in values]


def test_4bit_samples_in_uint8_are_scaled_not_copied():
    out = pixels.to_uint8(column([0, 7, 15], np.uint8), pixels.for_samples(np.dtype(np.uint8), 1, bits=4))
    assert flat(out) == [0, 119, 255]


@pytest.mark.parametrize(
    ("dtype", "values", "expected"),
    [
        # int16: -32768 .. 32767 over 0 .. 255; 0 sits just above half way.
        (np.int16, [-32768, -1, 0, 32767], [0, 127, 128, 255]),
        (np.int8, [-128, 0, 127], [0, 128, 255]),
        (np.uint32, [0, 2**31, 2**32 - 1], [0, 128, 255]),
        (np.int32, [-(2**31), 0, 2**31 - 1], [0, 128, 255]),
    ],
)
def test_integers_scale_their_full_type_range(dtype, values, expected):
    out = pixels.to_uint8(column(values, dtype), pixels.for_samples(np.dtype(dtype), 1))
    assert flat(out) == expected


def test_floats_use_0_to_1_clipped_and_nan_is_black():
    values = [-0.5, 0.0, 0.25, 0.5, 1.0, 7.0, np.nan]
    out = pixels.to_uint8(column(values, np.float32), pixels.for_samples(np.dtype(np.float32), 1))
    # 0.25 * 255 = 63.75; 0.5 * 255 = 127.5 rounds to the even 128.
    assert flat(out) == [0, 0, 64, 128, 255, 255, 0]


def test_sample_range_tags_apply_per_channel_and_clip():
    samples = np.array([[[1000, 2000, 3000], [60000, 50000, 40000], [0, 65535, 26000]]], np.uint16)
    conversion = pixels.for_samples(np.dtype(np.uint16), 3, (1000, 2000, 3000), (60000, 50000, 40000))
    out = pixels.to_uint8(samples, conversion)
    expected = [[0, 0, 0], [255, 255, 255], [0, 255, round((26000 - 3000) * 255 / 37000)]]
    assert out.tolist() == [expected]


def test_a_zero_width_range_gives_black_not_an_error():
    out = pixels.to_uint8(column([5, 5], np.uint16), pixels.for_samples(np.dtype(np.uint16), 1, (5,), (5,)))
    assert flat(out) == [0, 0]


def test_bilevel_is_0_or_255_and_min_is_white_inverts():
    samples = column([False, True, True, False], np.bool_)
    assert flat(pixels.to_uint8(samples, pixels.for_samples(np.dtype(np.bool_), 1))) == [0, 255, 255, 0]
    white = pixels.for_samples(np.dtype(np.bool_), 1, invert=True)
    assert flat(pixels.to_uint8(samples, white)) == [255, 0, 0, 255]


def test_min_is_white_inverts_grey_but_not_alpha():
    samples = np.array([[[0, 10], [200, 250]]], np.uint8)
    out = pixels.to_uint8(samples, pixels.for_samples(np.dtype(np.uint8), 2, invert=True))
    assert out.tolist() == [[[255, 10], [55, 250]]]


def test_16bit_palette_is_scaled_to_8_bits():
    colormap = np.array([[0, 65535, 32896, 257], [65535, 0, 128, 514], [0, 0, 65535, 771]], np.uint16)
    indices = column([0, 1, 2, 3, 200], np.uint8)  # 200: past the end of a short map
    out = pixels.to_uint8(indices, pixels.for_palette(colormap))
    table = [[round(int(v) * 255 / 65535) for v in colormap[:, i]] for i in range(4)]
    assert out.tolist() == [[table[0], table[1], table[2], table[3], table[3]]]


def test_a_colormap_written_with_8bit_values_is_taken_as_such():
    colormap = np.array([[0, 255, 10], [0, 128, 20], [0, 1, 30]], np.uint16)
    out = pixels.to_uint8(column([0, 1, 2], np.uint8), pixels.for_palette(colormap))
    assert out.tolist() == [[[0, 0, 0], [255, 128, 1], [10, 20, 30]]]


def lab_samples(lab: list[tuple[float, float, float]]) -> np.ndarray:
    """TIFF 8-bit CIELAB samples: L scaled from 0-100 to 0-255, a and b as signed bytes."""
    lightness = np.array([round(v[0] * 255 / 100) for v in lab], np.uint8)
    a = np.array([round(v[1]) for v in lab], np.int8).view(np.uint8)
    b = np.array([round(v[2]) for v in lab], np.int8).view(np.uint8)
    return np.stack([lightness, a, b], axis=-1).reshape(1, -1, 3)


def test_cielab_white_black_and_primaries():
    # White and black by definition; sRGB's primaries at their CIELAB (D65) coordinates.
    lab = [(100, 0, 0), (0, 0, 0), (53.24, 80.09, 67.20), (87.73, -86.18, 83.18), (32.30, 79.19, -107.86)]
    out = pixels.to_uint8(lab_samples(lab), pixels.for_cielab(8))
    expected = np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]])
    # The primaries' coordinates are rounded to whole a/b steps and 1/2.55 L steps, which the
    # steep start of the sRGB curve turns into a few levels near 0.
    assert np.abs(out[0].astype(int) - expected).max() <= 8


def test_cielab_matches_libvips():
    rng = np.random.default_rng(4)
    samples = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    lab = np.dstack(
        [
            samples[:, :, 0] * (100 / 255),
            samples[:, :, 1].view(np.int8).astype(np.float64),
            samples[:, :, 2].view(np.int8).astype(np.float64),
        ]
    )
    image = pyvips.Image.new_from_array(lab.astype(np.float32)).copy(interpretation="lab")
    srgb = image.colourspace("srgb").cast("uchar")
    expected = np.ndarray(buffer=srgb.write_to_memory(), dtype=np.uint8, shape=(32, 32, 3))
    out = pixels.to_uint8(samples, pixels.for_cielab(8))
    # Out-of-gamut colours clip slightly differently (libvips clips in its own order).
    difference = np.abs(out.astype(int) - expected)
    assert difference.mean() <= 1.0 and np.percentile(difference, 99) <= 3


def test_16bit_cielab_matches_8bit_cielab():
    samples8 = lab_samples([(50, 20, -30), (75, -10, 40)])
    lightness = samples8[:, :, 0].astype(np.uint16) * 257
    ab = samples8[:, :, 1:].view(np.int8).astype(np.int16) * 256
    samples16 = np.dstack([lightness, ab.view(np.uint16)])
    out8 = pixels.to_uint8(samples8, pixels.for_cielab(8))
    out16 = pixels.to_uint8(samples16, pixels.for_cielab(16))
    assert np.array_equal(out8, out16)
