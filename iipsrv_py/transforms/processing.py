"""The float stage of IIP processing (SPEC section 4): pure numpy functions on H x W x C float32
arrays of normalised values (0..1 for the image's own range).

The pipeline runs them in the SPEC's order -- normalise, SHD, CTW, GAM, INV, CMP, CNV,
contrast -- and quantises once at the end, so a chain of commands loses no precision to
intermediate 8-bit rounding (the reason iipsrv has a float stage at all).  The formulas are
iipsrv's, so its users see the same images; where iipsrv truncates, these round (half a grey
level closer to the exact value) -- stated in README.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

COLOUR_MAPS = ("hot", "cold", "jet", "blue", "green", "red")

# The named CNV kernels, row-major 3x3 (iipsrv's set; the sum-normalised ones are divided by
# their sum in ``convolve``).
NAMED_KERNELS: dict[str, tuple[float, ...]] = {
    "sobel": (-1, 0, 1, -2, 0, 2, -1, 0, 1),
    "prewitt": (-1, 0, 1, -1, 0, 1, -1, 0, 1),
    "scharr": (-3, 0, 3, -10, 0, 10, -3, 0, 3),
    "laplace": (0, 1, 0, 1, -4, 1, 0, 1, 0),
    "gaussian": (1, 2, 1, 2, 4, 2, 1, 2, 1),
    "sharpen": (0, -1, 0, -1, 5, -1, 0, -1, 0),
    "emboss": (-2, -1, 0, -1, 1, 1, 0, 1, 2),
}


def normalise(samples: np.ndarray, lows: Sequence[float], highs: Sequence[float]) -> np.ndarray:
    """``(v - low) / (high - low)`` per band as float32; a band whose range is empty maps to 0.
    Not clipped: values outside a MINMAX range go on to the later stages as they are (gamma
    and the final quantisation clip), as in iipsrv.  NaN and infinite samples become 0."""
    low = np.asarray(lows, dtype=np.float32)
    high = np.asarray(highs, dtype=np.float32)
    span = high - low
    scale = np.divide(1.0, span, out=np.zeros_like(span), where=span != 0)
    values = (samples.astype(np.float32) - low) * scale
    if samples.dtype.kind == "f":
        values[~np.isfinite(values)] = 0.0
    return values


def shade(values: np.ndarray, horizontal: float, vertical: float) -> np.ndarray:
    """Hill-shading of a normal map (bands x, y, z in 0..1 around 0.5) lit from ``horizontal``
    degrees clockwise from north, ``vertical`` degrees of elevation: one band, the clipped half
    dot product of the light vector and the (negated) normal; a zero pixel stays 0."""
    a = np.radians(horizontal)
    s_y = np.cos(a)
    s_x = np.sqrt(max(0.0, 1.0 - s_y * s_y)) * (-1.0 if horizontal % 360 > 180 else 1.0)
    s_z = -np.sin(np.radians(vertical))
    light = np.array([s_x, s_y, s_z], dtype=np.float32)
    light /= np.linalg.norm(light)
    normals = _bands(values, 3)
    dot = (-(normals - 0.5) * 2.0) @ light
    dot[~normals.any(axis=2)] = 0.0  # no data
    return np.clip(0.5 * dot, 0.0, 1.0)[:, :, None].astype(np.float32)


def twist(values: np.ndarray, matrix: Sequence[Sequence[float]]) -> np.ndarray:
    """Colour twist: output band i = sum_j matrix[i][j] * input band j (a row shorter than the
    input's bands weighs the rest by 0; weights past the input's bands are ignored)."""
    bands = values.shape[2]
    weights = np.zeros((len(matrix), bands), dtype=np.float32)
    for i, row in enumerate(matrix):
        used = list(row)[:bands]
        weights[i, : len(used)] = used
    return (values @ weights.T).astype(np.float32)


def gamma(values: np.ndarray, g: float) -> np.ndarray:
    """``max(v, 0) ** g``."""
    if g == 1.0:
        return values
    return np.power(np.maximum(values, 0.0), np.float32(g), dtype=np.float32)


def logarithm(values: np.ndarray) -> np.ndarray:
    """``log(1 + 255 v) / log(256)`` (values below 0 count as 0)."""
    return (np.log1p(255.0 * np.maximum(values, 0.0)) / np.log(256.0)).astype(np.float32)


def invert(values: np.ndarray) -> np.ndarray:
    """``1 - v``."""
    return (1.0 - values).astype(np.float32)


def colour_map(values: np.ndarray, name: str) -> np.ndarray:
    """The first band mapped to RGB by one of ``COLOUR_MAPS`` (iipsrv's piecewise-linear maps)."""
    v = values[:, :, 0]
    out = np.zeros((*v.shape, 3), dtype=np.float32)
    r, g, b = out[:, :, 0], out[:, :, 1], out[:, :, 2]
    if name in ("red", "green", "blue"):
        out[:, :, ("red", "green", "blue").index(name)] = v
        return out
    if name == "jet":
        # Blue to cyan to yellow to red, in eighths.
        b[:] = np.select([v < 1 / 8, v < 3 / 8, v < 5 / 8], [4 * v + 0.5, 1.0, 2.5 - 4 * v], 0.0)
        g[:] = np.select([v < 1 / 8, v < 3 / 8, v < 5 / 8, v < 7 / 8], [0.0, 4 * v - 0.5, 1.0, 3.5 - 4 * v], 0.0)
        r[:] = np.select([v < 3 / 8, v < 5 / 8, v < 7 / 8, v < 1], [0.0, 4 * v - 1.5, 1.0, 4.5 - 4 * v], 0.5)
        out[v < 0] = 0.0
        return out
    # hot (black, red, yellow, white) and cold (black, blue, cyan, white): thirds.
    first, second, third = (r, g, b) if name == "hot" else (b, g, r)
    first[:] = np.clip(3 * v, 0, 1)
    second[:] = np.clip(3 * v - 1, 0, 1)
    third[:] = np.clip(3 * v - 2, 0, 1)
    return out


def convolve(values: np.ndarray, kernel: Sequence[float]) -> np.ndarray:
    """Correlation of every band with a square kernel (row-major, 1x1, 3x3 or 5x5), divided by
    the kernel's sum when that is positive; the edges replicate the outermost pixels so the
    output keeps its size."""
    size = round(len(kernel) ** 0.5)
    weights = np.asarray(kernel, dtype=np.float32).reshape(size, size)
    total = float(weights.sum())
    if total > 0:
        weights = weights / total
    pad = size // 2
    padded = np.pad(values, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    height, width = values.shape[:2]
    out = np.zeros_like(values, dtype=np.float32)
    for dy in range(size):
        for dx in range(size):
            weight = weights[dy, dx]
            if weight:
                out += weight * padded[dy : dy + height, dx : dx + width]
    return out


def contrast(values: np.ndarray, factor: float) -> np.ndarray:
    """``v * factor`` (clipped when quantised)."""
    return (values * np.float32(factor)).astype(np.float32)


def quantise(values: np.ndarray, bits: int = 8) -> np.ndarray:
    """0..1 values as rounded 8- or 16-bit integers, clipped.  The values are finite:
    ``normalise`` zeroes non-finite samples and every later step is bounded (arguments are
    limited by the parser)."""
    top = np.float32(65535.0 if bits == 16 else 255.0)
    scaled = np.multiply(values, top, dtype=np.float32)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0.0, top, out=scaled)
    return scaled.astype(np.uint16 if bits == 16 else np.uint8)


def _bands(values: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` bands, a single band repeated when there are fewer."""
    if values.shape[2] >= count:
        return values[:, :, :count]
    return np.repeat(values[:, :, :1], count, axis=2)
