"""Native samples to the 8 bits per sample the rest of the server works on.

A reader decides once, when it opens a file, how its samples become 8-bit (a ``Conversion``),
and applies it to every tile it decodes.  The functions are pure numpy so that every format
with more than 8-bit or non-RGB samples (TIFF, JPEG 2000) shares the same rules:

* 8-bit unsigned samples are kept as stored (SMin/SMaxSampleValue are reported, not applied,
  as iipsrv does; the MINMAX command applies a range explicitly).
* Other integers and floats are scaled linearly from a range to 0-255, rounded and clipped.
  The range is SMin/SMaxSampleValue when the file has them (per channel), else the full range
  of the integer type (16-bit: ``round(v * 255 / 65535)``), else [0, 1] for floats (the usual
  convention for normalised float images; NaN becomes 0).
* Bilevel samples become 0/255, palette indices their colour (16-bit colormaps scaled to 8
  bits), MinIsWhite is inverted (alpha is not), CIELAB is converted to sRGB.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COPY = "copy"
SCALE = "scale"
BILEVEL = "bilevel"
PALETTE = "palette"
CIELAB = "cielab"

# CIE D65 reference white (X, Y, Z), the white point of sRGB and TIFF's default for CIELAB.
D65 = (0.95047, 1.0, 1.08883)
# Linear sRGB from CIE XYZ (IEC 61966-2-1).
XYZ_TO_LINEAR_SRGB = np.array(
    [
        [3.2406, -1.5372, -0.4986],
        [-0.9689, 1.8758, 0.0415],
        [0.0557, -0.2040, 1.0570],
    ]
)


@dataclass(frozen=True)
class Conversion:
    """How decoded samples (H x W x S, the kept bands only) become uint8 H x W x C.

    ``minimum``/``maximum`` hold one value per band for ``scale``; ``invert`` flips the colour
    band of a MinIsWhite image (never alpha); ``palette`` is an N x 3 uint8 lookup table.
    """

    kind: str = COPY
    minimum: tuple[float, ...] = ()
    maximum: tuple[float, ...] = ()
    invert: bool = False
    palette: np.ndarray | None = field(default=None, compare=False, repr=False)
    bits: int = 8  # bits per sample of the source (CIELAB: 8 or 16)


def sample_range(dtype: np.dtype, bits: int | None = None) -> tuple[float, float]:
    """The full range of ``bits``-bit samples held in an integer ``dtype`` (a 12-bit image
    decodes to uint16 but reaches only 4095); [0, 1] for floats."""
    if np.issubdtype(dtype, np.unsignedinteger):
        bits = min(bits or dtype.itemsize * 8, dtype.itemsize * 8)
        return 0.0, float((1 << bits) - 1)
    if np.issubdtype(dtype, np.integer):
        limits = np.iinfo(dtype)
        return float(limits.min), float(limits.max)
    return 0.0, 1.0


def for_samples(
    dtype: np.dtype,
    bands: int,
    minimum: tuple[float, ...] | None = None,
    maximum: tuple[float, ...] | None = None,
    invert: bool = False,
    bits: int | None = None,
) -> Conversion:
    """The conversion of plain grey/RGB(+alpha) samples of ``dtype`` (``bits`` per sample as
    stored, when fewer than the dtype holds).

    ``minimum``/``maximum`` (one per band) come from SMin/SMaxSampleValue when present; they
    are not applied to 8-bit unsigned samples (see the module text)."""
    dtype = np.dtype(dtype)
    bits = bits or dtype.itemsize * 8
    if dtype == np.bool_:
        return Conversion(BILEVEL, (0.0,) * bands, (1.0,) * bands, invert, bits=1)
    if dtype == np.uint8 and bits == 8:
        return Conversion(COPY, (0.0,) * bands, (255.0,) * bands, invert)
    low, high = sample_range(dtype, bits)
    lows = tuple(minimum) if minimum is not None else (low,) * bands
    highs = tuple(maximum) if maximum is not None else (high,) * bands
    return Conversion(SCALE, lows, highs, invert, bits=bits)


def palette_table(colormap: np.ndarray) -> np.ndarray:
    """An N x 3 uint8 table from a TIFF ColorMap (3 x N, 16-bit).

    Some writers store 8-bit values in the 16-bit fields; like libtiff's tools, a map whose
    values all fit in 8 bits is taken as such, since real 16-bit maps of any non-black colour
    have larger values."""
    table = np.asarray(colormap, dtype=np.float64).reshape(3, -1).T
    if table.max(initial=0) > 255:
        table = table * 255.0 / 65535.0
    return np.clip(np.rint(table), 0, 255).astype(np.uint8)


def for_palette(colormap: np.ndarray) -> Conversion:
    return Conversion(PALETTE, (0.0,) * 3, (255.0,) * 3, palette=palette_table(colormap))


def for_cielab(bits: int) -> Conversion:
    return Conversion(CIELAB, (0.0, -128.0, -128.0), (100.0, 127.0, 127.0), bits=bits)


def to_uint8(samples: np.ndarray, conversion: Conversion) -> np.ndarray:
    """Apply ``conversion`` to H x W x S samples; the result is a new uint8 H x W x C array
    (or ``samples`` itself for 8-bit samples stored as they are shown)."""
    kind = conversion.kind
    if kind == COPY:
        out = samples
    elif kind == SCALE:
        out = scale(samples, conversion.minimum, conversion.maximum)
    elif kind == BILEVEL:
        out = np.where(samples.astype(bool), np.uint8(255), np.uint8(0))
    elif kind == PALETTE:
        assert conversion.palette is not None
        return apply_palette(samples[:, :, 0], conversion.palette)
    elif kind == CIELAB:
        return lab_to_srgb(*lab_values(samples, conversion.bits))
    else:
        raise ValueError(f"unknown sample conversion {kind!r}")
    return invert_colour(out) if conversion.invert else out


def native(samples: np.ndarray, conversion: Conversion) -> np.ndarray | None:
    """The samples as the float stage normalises them (by ``conversion``'s range), or None
    when ``to_uint8``'s pixels are that already: 8-bit copies, palettes and CIELAB."""
    if conversion.kind == SCALE:
        return samples
    if conversion.kind == BILEVEL:
        return samples.astype(np.uint8)  # 0 and 1, the conversion's range
    return None


def scale(samples: np.ndarray, minimum: tuple[float, ...], maximum: tuple[float, ...]) -> np.ndarray:
    """Linear map of [minimum, maximum] (per band) to 0-255, rounded (half to even) and
    clipped; an empty range gives 0.

    float64, multiplying before dividing: exact for 32-bit integers, so that values half way
    between two levels round as the formula says rather than by a last-bit error."""
    low = np.asarray(minimum, dtype=np.float64)
    span = np.asarray(maximum, dtype=np.float64) - low
    values = (samples.astype(np.float64) - low) * 255.0
    np.divide(values, span, out=values, where=np.broadcast_to(span != 0, values.shape))
    values[np.broadcast_to(span == 0, values.shape)] = 0.0
    np.nan_to_num(values, copy=False, nan=0.0)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def invert_colour(pixels: np.ndarray) -> np.ndarray:
    """255 - v for the colour bands; an alpha band (the last of 2 or 4) is left alone."""
    out = 255 - pixels
    if pixels.shape[2] in (2, 4):
        out[:, :, -1] = pixels[:, :, -1]
    return out


def apply_palette(indices: np.ndarray, table: np.ndarray) -> np.ndarray:
    # Indices past the end of a short colormap take its last colour rather than failing.
    return table[np.minimum(indices, len(table) - 1)]


def lab_values(samples: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CIE L* (0-100), a*, b* from TIFF CIELAB samples: L unsigned over the whole range,
    a and b signed (two's complement), 8-bit as is, 16-bit in 1/256 units."""
    if bits == 16:
        raw = samples.astype(np.uint16)
        lightness = raw[:, :, 0] * (100.0 / 65535.0)
        a = raw[:, :, 1].view(np.int16) / 256.0
        b = raw[:, :, 2].view(np.int16) / 256.0
    else:
        raw = samples.astype(np.uint8)
        lightness = raw[:, :, 0] * (100.0 / 255.0)
        a = raw[:, :, 1].view(np.int8).astype(np.float64)
        b = raw[:, :, 2].view(np.int8).astype(np.float64)
    return lightness, a, b


def _lab_f_inverse(t: np.ndarray) -> np.ndarray:
    delta = 6.0 / 29.0
    return np.where(t > delta, t**3, 3 * delta * delta * (t - 4.0 / 29.0))


def lab_to_srgb(lightness: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65 white) to 8-bit sRGB, by the CIE and IEC 61966-2-1 formulas."""
    fy = (lightness + 16.0) / 116.0
    xyz = np.stack(
        [
            D65[0] * _lab_f_inverse(fy + a / 500.0),
            D65[1] * _lab_f_inverse(fy),
            D65[2] * _lab_f_inverse(fy - b / 200.0),
        ],
        axis=-1,
    )
    linear = np.clip(xyz @ XYZ_TO_LINEAR_SRGB.T, 0.0, 1.0)
    encoded = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.clip(np.rint(encoded * 255.0), 0, 255).astype(np.uint8)
