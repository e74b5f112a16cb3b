"""Colour reductions: luminance grey and bitonal (black and white)."""

from __future__ import annotations

import numpy as np


def to_grey(pixels: np.ndarray) -> np.ndarray:
    """One luminance band (alpha kept), with iipsrv's integer weights
    ``(1254097 R + 2462056 G + 478151 B) >> 22`` (0.299, 0.587, 0.114)."""
    bands = pixels.shape[2]
    if bands in (1, 2):
        return pixels
    rgb = pixels[:, :, :3].astype(np.uint32)
    grey = ((rgb[:, :, 0] * 1254097 + rgb[:, :, 1] * 2462056 + rgb[:, :, 2] * 478151) >> 22).astype(np.uint8)
    if bands == 4:
        return np.dstack([grey, pixels[:, :, 3]])
    return grey[:, :, None]


def otsu_threshold(grey: np.ndarray) -> int:
    """The threshold that best separates the grey levels into two classes (Otsu, 1979)."""
    histogram = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    total = histogram.sum()
    if total == 0:
        return 128
    levels = np.arange(256, dtype=np.float64)
    weight_low = np.cumsum(histogram)
    weight_high = total - weight_low
    mean_low_sum = np.cumsum(histogram * levels)
    mean_total = mean_low_sum[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = mean_low_sum / weight_low
        mean_high = (mean_total - mean_low_sum) / weight_high
        between = weight_low * weight_high * (mean_low - mean_high) ** 2
    between = np.nan_to_num(between)
    if not between.any():
        # One grey level only: split at it, so a uniform image keeps its side.
        return int(levels[histogram > 0][0])
    return int(np.argmax(between))


def to_bitonal(pixels: np.ndarray) -> np.ndarray:
    """Black (0) and white (255) only, split at the Otsu threshold of the luminance."""
    grey = to_grey(pixels)
    luminance = grey[:, :, 0]
    binary = np.where(luminance > otsu_threshold(luminance), 255, 0).astype(np.uint8)
    if grey.shape[2] == 2:
        return np.dstack([binary, grey[:, :, 1]])
    return binary[:, :, None]
