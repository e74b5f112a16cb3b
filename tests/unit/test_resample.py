"""Resizing keeps pixel centres where they belong (SPEC section 6): an enlargement by a pixel,
as a level one pixel short of a DeepZoom or IIIF size needs, must not shift the picture.

The expectation is the centre-to-centre mapping every resampler documents: output pixel X
samples the input at (X + 0.5) * in / out - 0.5.  On a linear ramp any interpolating filter
then gives the ramp's value there.
"""

from __future__ import annotations

import numpy as np
import pytest

from iipsrv_py.transforms.resample import resize

IN_WIDTH = 21  # a steep ramp: one pixel is 12.75 grey levels, half a pixel's shift shows


def ramp(width: int, height: int) -> np.ndarray:
    """Values 0..255 rising linearly left to right, three bands."""
    row = np.round(np.arange(width) * 255 / (width - 1)).astype(np.uint8)
    return np.ascontiguousarray(np.dstack([np.tile(row, (height, 1))] * 3))


def centre_mapped(in_width: int, out_width: int) -> np.ndarray:
    positions = np.clip((np.arange(out_width) + 0.5) * in_width / out_width - 0.5, 0, in_width - 1)
    return positions * 255 / (in_width - 1)


@pytest.mark.parametrize("out_width, out_height", [(22, 6), (42, 6), (22, 3), (200, 12)])
def test_enlarging_maps_centres_onto_centres(out_width, out_height):
    out = resize(ramp(IN_WIDTH, 6), out_width, out_height)
    assert out.shape == (out_height, out_width, 3)
    # One grey level for rounding, one for the filter's edge handling on a ramp.
    assert np.abs(out[out_height // 2, :, 0].astype(float) - centre_mapped(IN_WIDTH, out_width)).max() <= 2


def test_a_flat_picture_stays_flat_whatever_the_sizes():
    flat = np.full((125, 187, 3), (10, 120, 240), np.uint8)
    for size in [(188, 125), (187, 126), (300, 60), (40, 200), (1, 1)]:
        out = resize(flat, *size)
        assert out.shape == (size[1], size[0], 3)
        assert np.array_equal(np.unique(out.reshape(-1, 3), axis=0), [[10, 120, 240]])
