"""Tone curves: the IIIF extension qualities (IIIF_EXTENSIONS=1) and their IIP equivalents.

Each works on the colour bands of 8-bit pixels and leaves an alpha band alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_LOG_TABLE = np.round(255 * np.log1p(np.arange(256, dtype=np.float64)) / np.log(256)).astype(np.uint8)


def _colour_bands(pixels: np.ndarray) -> int:
    return pixels.shape[2] - 1 if pixels.shape[2] in (2, 4) else pixels.shape[2]


def _apply(pixels: np.ndarray, curve: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    bands = _colour_bands(pixels)
    out = pixels.copy()
    out[:, :, :bands] = curve(pixels[:, :, :bands])
    return out


def negative(pixels: np.ndarray) -> np.ndarray:
    """1 - v."""
    return _apply(pixels, lambda v: 255 - v)


def log(pixels: np.ndarray) -> np.ndarray:
    """log(1 + 255 v) / log(256), v in [0, 1]."""
    return _apply(pixels, lambda v: _LOG_TABLE[v])


def stretch(pixels: np.ndarray) -> np.ndarray:
    """Contrast stretch: each band's own minimum and maximum become 0 and 255."""

    def curve(v: np.ndarray) -> np.ndarray:
        lo = v.min(axis=(0, 1), keepdims=True).astype(np.float32)
        hi = v.max(axis=(0, 1), keepdims=True).astype(np.float32)
        span = np.where(hi > lo, hi - lo, 1)
        return np.clip(np.round((v - lo) * 255 / span), 0, 255).astype(np.uint8)

    return _apply(pixels, curve)


def equalization(pixels: np.ndarray) -> np.ndarray:
    """Histogram equalisation, each colour band on its own histogram."""

    def curve(v: np.ndarray) -> np.ndarray:
        out = np.empty_like(v)
        for band in range(v.shape[2]):
            histogram = np.bincount(v[:, :, band].ravel(), minlength=256)
            cdf = np.cumsum(histogram).astype(np.float64)
            first = cdf[np.nonzero(histogram)[0][0]]
            span = max(cdf[-1] - first, 1)
            table = np.clip(np.round((cdf - first) * 255 / span), 0, 255).astype(np.uint8)
            out[:, :, band] = table[v[:, :, band]]
        return out

    return _apply(pixels, curve)


TONES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "negative": negative,
    "stretch": stretch,
    "equalization": equalization,
    "log": log,
}
