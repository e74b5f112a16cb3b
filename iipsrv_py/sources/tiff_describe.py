"""What a TIFF image is, decided once when it is opened: ``describe``.

A pure function of the image's structure -- its first IFD parsed in full (tags, colour layout,
ICC) and the summaries of its levels -- giving the ``ImageInfo`` the planner and the metadata
answers use, and the ``Decoding`` facts the tile reader needs to turn each level's stored
segments into 8-bit pixels.  Nothing is kept or set; the only reads are tifffile's own delayed
reads of the first page's tag values (ColorMap, the text tags).

Files that cannot be served are refused here, when they are opened (415), rather than on every
tile: unsupported colour layouts, compressions no installed codec decodes, and segments (tiles,
or compressed strips, which decode whole) too large for a worker's memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tifffile

from ..errors import UnsupportedImage
from ..model import METRES_PER_INCH_FACTOR, ImageInfo, Level
from . import pixels
from .base import check_decode_unit
from .tiff_levels import text
from .tiff_structure import IfdSummary

# TIFF tag code -> iipsrv metadata key (SPEC section 5).  Tags are looked up by code: a
# lookup by name makes tifffile compare the name of every tag of the page.
TAG_KEYS = {
    315: "creator",  # Artist
    33432: "rights",  # Copyright
    306: "date",  # DateTime
    270: "description",  # ImageDescription
    269: "title",  # DocumentName
    285: "pagename",  # PageName
    305: "software",  # Software
    271: "make",  # Make
    272: "model",  # Model
    700: "xmp",  # XMLPacket (tifffile's "XMP")
}
SMIN_SAMPLE_VALUE = 340
SMAX_SAMPLE_VALUE = 341
X_RESOLUTION = 282
Y_RESOLUTION = 283
RESOLUTION_UNIT = 296

PHOTOMETRIC_MINISWHITE = 0
PHOTOMETRIC_MINISBLACK = 1
PHOTOMETRIC_RGB = 2
PHOTOMETRIC_PALETTE = 3
PHOTOMETRIC_YCBCR = 6
PHOTOMETRIC_CIELAB = 8
COMPRESSION_NONE = 1
COMPRESSION_JPEG = 7
PLANAR_SEPARATE = 2
EXTRASAMPLE_ALPHA = (1, 2)  # associated, unassociated: both kept as stored
# Virtual tiles of a stripped image.
STRIP_TILE = 256

# A conversion of a level's decoded 8-bit pixels (H x W x C in, H x W x C out).
Finish = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Decoding:
    """How the stored segments of each level become the image's 8-bit pixels.

    ``bands``: the samples kept (colour, then alpha) and ``conversion`` how they become 8-bit,
    the same for every level; ``finish``: per level, what else the decoded pixels need (an
    Aperio 33003 level's YCbCr to RGB), or None; ``rgb_jpeg``: the JPEG streams hold RGB
    (Photometric RGB), which a stored tile sent as is must say."""

    levels: tuple[IfdSummary, ...]
    bands: tuple[int, ...]
    conversion: pixels.Conversion
    rgb_jpeg: bool
    finish: tuple[Finish | None, ...] = field(default=())

    def finish_of(self, level: int) -> Finish | None:
        return self.finish[level] if level < len(self.finish) else None


@dataclass(frozen=True)
class Description:
    info: ImageInfo
    decoding: Decoding


@dataclass(frozen=True)
class _Layout:
    """What a page's samples mean: which to keep (colour, then alpha) and how they become 8-bit."""

    bands: tuple[int, ...]
    conversion: pixels.Conversion
    colorspace: str
    channels: int  # of the 8-bit pixels: a palette's one band becomes three


def describe(
    first: tifffile.TiffPage, levels: Sequence[IfdSummary], page_names: tuple[str, ...], name: str
) -> Description:
    """The image whose full-size IFD is ``first`` (parsed whole) and whose levels are
    ``levels`` (full size first), or UnsupportedImage."""
    layout = _layout(first, name)
    for ifd in levels:
        # A compression no installed codec decodes is refused now rather than on every tile.
        if ifd.compression not in tifffile.TIFF.DECOMPRESSORS:
            raise UnsupportedImage("unsupported TIFF compression", f"{name}: compression {ifd.compression}")
        check_segment_size(ifd, name)
    width, height = first.imagewidth, first.imagelength
    conversion = layout.conversion
    if conversion.kind == pixels.COPY:
        # 8-bit samples are shown as stored; the tags are reported for MINMAX (iipsrv).
        tags = first.tags
        spp = first.samplesperpixel
        lows = _sample_values(tags.valueof(SMIN_SAMPLE_VALUE), 0.0, spp)
        highs = _sample_values(tags.valueof(SMAX_SAMPLE_VALUE), 255.0, spp)
        mins, maxs = tuple(lows[b] for b in layout.bands), tuple(highs[b] for b in layout.bands)
    else:
        mins, maxs = conversion.minimum, conversion.maximum
    info = ImageInfo(
        width=width,
        height=height,
        levels=tuple(_level(ifd, width, height) for ifd in levels),
        channels=layout.channels,
        bits_per_sample=int(first.bitspersample),
        colorspace=layout.colorspace,
        min_values=mins,
        max_values=maxs,
        dpi=_dpi(first),
        metadata=_metadata(first),
        format="tiff",
        stored_encoding="jpeg" if _passes_through(first, layout) else "",
        pages=page_names,
    )
    decoding = Decoding(
        levels=tuple(levels),
        bands=layout.bands,
        conversion=conversion,
        rgb_jpeg=int(first.photometric) == PHOTOMETRIC_RGB,
    )
    return Description(info, decoding)


def check_segment_size(ifd: IfdSummary, name: str) -> None:
    """UnsupportedImage when one stored segment of ``ifd`` (a tile, or a compressed strip,
    which decodes whole) is larger than a worker decodes in one piece, or when the IFD has no
    pixels.  Uncompressed strips are read row by row, never whole: their unit is the virtual
    tile read from them (all of its samples are read, before the kept bands are chosen)."""
    if ifd.width <= 0 or ifd.length <= 0:
        raise UnsupportedImage("image has no pixels", f"{name}: IFD {ifd.position} is {ifd.width}x{ifd.length}")
    if ifd.is_tiled:
        w, h = ifd.tile_width, ifd.tile_length
    elif ifd.compression == COMPRESSION_NONE:
        w, h = min(STRIP_TILE, ifd.width), min(STRIP_TILE, ifd.length)
    else:
        w, h = ifd.width, min(ifd.rows_per_strip or ifd.length, ifd.length)
    samples = 1 if ifd.planar == PLANAR_SEPARATE else ifd.samples
    bits = max(ifd.bits) if isinstance(ifd.bits, tuple) else ifd.bits
    check_decode_unit(name, f"IFD {ifd.position} segment", w, h, samples * max(1, -(-bits // 8)))


def _level(ifd: IfdSummary, width: int, height: int) -> Level:
    if ifd.is_tiled:
        tw, th = ifd.tile_width, ifd.tile_length
    else:
        tw = th = STRIP_TILE
    return Level(ifd.width, ifd.length, tw, th, width / ifd.width, height / ifd.length)


def _sample_values(value: Any, default: float, channels: int) -> tuple[float, ...]:
    """One SMin/SMaxSampleValue per channel.

    The tag's type follows the samples, so for 8-bit images it is often BYTE, which tifffile
    reads as ``bytes``; a count that is neither 1 nor one per channel is ignored.
    """
    if isinstance(value, bytes):
        value = tuple(value)
    try:
        values = [float(v) for v in np.ravel(value)] if value is not None else [default]
    except (TypeError, ValueError):
        values = [default]
    if len(values) == 1:
        return (values[0],) * channels
    return tuple(values) if len(values) == channels else (float(default),) * channels


def _alpha_band(page: tifffile.TiffPage) -> tuple[int, ...]:
    colour = page.samplesperpixel - len(page.extrasamples)
    for i, kind in enumerate(page.extrasamples):
        if int(kind) in EXTRASAMPLE_ALPHA:
            return (colour + i,)
    return ()


def _layout(page: tifffile.TiffPage, name: str) -> _Layout:
    photometric = int(page.photometric)
    spp = page.samplesperpixel
    if photometric == PHOTOMETRIC_PALETTE and page.colormap is not None:
        return _Layout((0,), pixels.for_palette(page.colormap), "srgb", 3)
    if photometric == PHOTOMETRIC_CIELAB and spp >= 3:
        return _Layout((0, 1, 2), pixels.for_cielab(page.bitspersample), "cielab", 3)
    if photometric in (PHOTOMETRIC_MINISBLACK, PHOTOMETRIC_MINISWHITE):
        colour: tuple[int, ...] = (0,)
        colorspace = "grey"
    elif photometric in (PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR) and spp >= 3:
        if photometric == PHOTOMETRIC_YCBCR and int(page.compression) != COMPRESSION_JPEG:
            raise UnsupportedImage("unsupported TIFF colour layout", f"{name}: YCbCr without JPEG")
        colour, colorspace = (0, 1, 2), "srgb"
    else:
        raise UnsupportedImage("unsupported TIFF colour layout", f"{name}: photometric {photometric}, {spp} samples")
    bands = colour + _alpha_band(page)
    dtype = np.dtype(page.dtype)
    minimum = maximum = None
    tags = page.tags
    if tags.get(SMIN_SAMPLE_VALUE) is not None and tags.get(SMAX_SAMPLE_VALUE) is not None:
        low, high = pixels.sample_range(dtype, page.bitspersample)
        lows = _sample_values(tags.valueof(SMIN_SAMPLE_VALUE), low, spp)
        highs = _sample_values(tags.valueof(SMAX_SAMPLE_VALUE), high, spp)
        minimum, maximum = tuple(lows[b] for b in bands), tuple(highs[b] for b in bands)
    conversion = pixels.for_samples(
        dtype, len(bands), minimum, maximum, photometric == PHOTOMETRIC_MINISWHITE, page.bitspersample
    )
    return _Layout(bands, conversion, colorspace, len(bands))


def _passes_through(page: tifffile.TiffPage, layout: _Layout) -> bool:
    """Stored tiles a browser shows as they are: 8-bit grey or colour JPEG, nothing to
    convert, crop out or invert."""
    return (
        page.is_tiled
        and int(page.compression) == COMPRESSION_JPEG
        and layout.conversion.kind == pixels.COPY
        and not layout.conversion.invert
        and page.planarconfig != PLANAR_SEPARATE
        and page.samplesperpixel == layout.channels
        and layout.channels in (1, 3)
    )


def _dpi(page: tifffile.TiffPage) -> tuple[float, float] | None:
    xres = page.tags.valueof(X_RESOLUTION)
    yres = page.tags.valueof(Y_RESOLUTION)
    unit = int(page.tags.valueof(RESOLUTION_UNIT, 2))
    if not xres or not yres or unit not in (2, 3):
        return None
    try:
        x = xres[0] / xres[1]
        y = yres[0] / yres[1]
    except (TypeError, ZeroDivisionError, IndexError):
        return None
    if x <= 0 or y <= 0:
        return None
    factor = METRES_PER_INCH_FACTOR if unit == 2 else 100.0
    return x * factor, y * factor


def _metadata(page: tifffile.TiffPage) -> tuple[tuple[str, str], ...]:
    found: dict[str, str] = {}
    for code, key in TAG_KEYS.items():
        tag = page.tags.get(code)
        if tag is not None:
            value = text(tag.value)
            if value:
                found[key] = value
    return tuple(sorted(found.items()))
