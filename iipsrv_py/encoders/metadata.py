"""What an output carries besides its pixels: ICC profile, XMP, EXIF and resolution.

``output_metadata`` decides it from the source, the plan and the settings:

* the source's ICC profile, when EMBED_ICC allows it, it is not larger than MAX_ICC (65536
  bytes by default; -1 no limit, 0 never) and no operation of the plan changed the colours
  (``Ops.changes_colours``): a profile that no longer describes the pixels is worse than none;
* XMP and EXIF only in views (IIP CVT, IIIF regions that are not tiles): tiles are fetched by
  the hundred and stay small;
* the resolution, scaled to the output: a view at half the size has half the dots per inch.

The rest of this module writes these into encoded streams whose encoder has no option for
them (libjpeg-turbo and libpng through imagecodecs): JPEG APP segments, PNG chunks and WebP's
RIFF chunks are spliced in, each format's own rules for their order kept.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ..model import ImageInfo, Ops
from ..settings import Settings

_INCHES_PER_METRE = 0.0254


@dataclass(frozen=True)
class OutputMetadata:
    icc: bytes | None = None
    xmp: bytes | None = None
    exif: bytes | None = None  # a TIFF-structured EXIF block (no "Exif\0\0" prefix)
    dpi: tuple[float, float] | None = None  # dots per inch, x and y


NONE = OutputMetadata()


def for_bands(meta: OutputMetadata, bands: int) -> OutputMetadata:
    """``meta`` for an output of ``bands`` samples per pixel (alpha included): without the
    profile when its colour space is not the output's (a grey profile on the RGB that WebP
    always writes, an RGB one on a grey JPEG): a reader would reject the file or misread it."""
    if not meta.icc:
        return meta
    space = meta.icc[16:20]
    if space == (b"GRAY" if bands <= 2 else b"RGB "):
        return meta
    return OutputMetadata(None, meta.xmp, meta.exif, meta.dpi)


def icc_allowed(size: int, settings: Settings) -> bool:
    if not settings.embed_icc or settings.max_icc == 0:
        return False
    return settings.max_icc < 0 or size <= settings.max_icc


def output_metadata(
    info: ImageInfo,
    icc: bytes | None,
    xmp: bytes | None,
    exif: bytes | None,
    *,
    ops: Ops,
    view: bool,
    out_size: tuple[int, int],
    region: tuple[float, float, float, float],
    settings: Settings,
) -> OutputMetadata:
    """What an output of ``out_size`` pixels showing ``region`` (full-size pixels) carries.

    ``icc``, ``xmp`` and ``exif`` are the source's own; a source without EXIF of its own gets
    one built from its descriptive tags (``exif_from_info``) in views.
    """
    profile = icc if icc and not ops.changes_colours and icc_allowed(len(icc), settings) else None
    if view:
        xmp = xmp or None
        exif = exif or exif_from_info(info)
    else:
        xmp = exif = None
    return OutputMetadata(profile, xmp, exif, scaled_dpi(info, out_size, region, ops))


def scaled_dpi(
    info: ImageInfo, out_size: tuple[int, int], region: tuple[float, float, float, float], ops: Ops
) -> tuple[float, float] | None:
    """The source's resolution (pixels per metre) as dots per inch of the output."""
    if info.dpi is None or region[2] <= 0 or region[3] <= 0:
        return None
    x = info.dpi[0] * _INCHES_PER_METRE * out_size[0] / region[2]
    y = info.dpi[1] * _INCHES_PER_METRE * out_size[1] / region[3]
    if round(ops.rotation % 180) == 90:
        x, y = y, x  # the output's width is the region's height now
    return x, y


# EXIF IFD0 tags that hold the same descriptive text as the source's metadata keys.
_EXIF_TAGS = {
    "description": 270,  # ImageDescription
    "make": 271,
    "model": 272,
    "software": 305,
    "date": 306,  # DateTime
    "creator": 315,  # Artist
    "rights": 33432,  # Copyright
}


def exif_from_info(info: ImageInfo) -> bytes | None:
    """An EXIF block of the source's descriptive text (TIFF tags that EXIF shares), or None."""
    values = {tag: info.meta(key) for key, tag in _EXIF_TAGS.items() if info.meta(key)}
    if not values:
        return None
    from PIL import Image  # only views with metadata need it

    exif = Image.Exif()
    for tag, value in values.items():
        exif[tag] = value
    data = bytes(exif.tobytes())
    # Pillow prefixes "Exif\0\0" (the JPEG APP1 form); the block itself starts at the TIFF header.
    return data[6:] if data.startswith(b"Exif\0\0") else data


# -- JPEG ------------------------------------------------------------------------------------

_ICC_MARKER = b"ICC_PROFILE\0"
_XMP_MARKER = b"http://ns.adobe.com/xap/1.0/\0"
_SEGMENT_MAX = 65533  # payload bytes of one APP segment (its length field counts itself)
_ICC_CHUNK = _SEGMENT_MAX - len(_ICC_MARKER) - 2


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def jpeg_with_metadata(data: bytes, meta: OutputMetadata) -> bytes:
    """The JPEG stream with EXIF and XMP (APP1) and the ICC profile (APP2, in as many chunks
    as it needs) after its JFIF header, and the JFIF density set to the resolution.

    EXIF and XMP larger than one segment are left out (extended XMP is not written)."""
    if data[:2] != b"\xff\xd8":
        return data
    head, rest = data[:2], data[2:]
    if rest[:2] == b"\xff\xe0" and rest[4:9] == b"JFIF\0":
        length = struct.unpack(">H", rest[2:4])[0]
        app0 = bytearray(rest[: 2 + length])
        rest = rest[2 + length :]
        if meta.dpi is not None:
            # Units 1 (dots per inch), then the two densities (16 bits each).
            app0[11:16] = struct.pack(">BHH", 1, *(min(max(round(d), 1), 65535) for d in meta.dpi))
        head += bytes(app0)
    segments = []
    if meta.exif and len(meta.exif) + 6 <= _SEGMENT_MAX:
        segments.append(_segment(0xE1, b"Exif\0\0" + meta.exif))
    if meta.xmp and len(meta.xmp) + len(_XMP_MARKER) <= _SEGMENT_MAX:
        segments.append(_segment(0xE1, _XMP_MARKER + meta.xmp))
    if meta.icc:
        chunks = [meta.icc[i : i + _ICC_CHUNK] for i in range(0, len(meta.icc), _ICC_CHUNK)]
        if len(chunks) <= 255:
            for number, chunk in enumerate(chunks, 1):
                segments.append(_segment(0xE2, _ICC_MARKER + bytes((number, len(chunks))) + chunk))
    return head + b"".join(segments) + rest


# -- PNG -------------------------------------------------------------------------------------


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_with_metadata(data: bytes, meta: OutputMetadata) -> bytes:
    """The PNG stream with iCCP, pHYs, eXIf and an iTXt ``XML:com.adobe.xmp`` after IHDR (all
    before PLTE and IDAT, where the PNG specification wants them)."""
    signature = b"\x89PNG\r\n\x1a\n"
    if not data.startswith(signature) or data[12:16] != b"IHDR":
        return data
    end = 8 + 12 + struct.unpack(">I", data[8:12])[0]
    chunks = []
    if meta.icc:
        chunks.append(_chunk(b"iCCP", b"icc\0\0" + zlib.compress(meta.icc)))
    if meta.dpi is not None:
        ppm = (max(round(d / _INCHES_PER_METRE), 1) for d in meta.dpi)
        chunks.append(_chunk(b"pHYs", struct.pack(">IIB", *ppm, 1)))
    if meta.exif:
        chunks.append(_chunk(b"eXIf", meta.exif))
    if meta.xmp:
        # Keyword, no compression (flag and method 0), no language tag nor translated keyword.
        chunks.append(_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + meta.xmp))
    return data[:end] + b"".join(chunks) + data[end:]


# -- WebP ------------------------------------------------------------------------------------

_VP8X_ICC, _VP8X_ALPHA, _VP8X_EXIF, _VP8X_XMP = 0x20, 0x10, 0x08, 0x04


def _riff_chunks(body: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 0
    while pos + 8 <= len(body):
        kind, size = body[pos : pos + 4], struct.unpack("<I", body[pos + 4 : pos + 8])[0]
        chunks.append((kind, body[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return chunks


def _riff_chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) & 1 else b"")


def _webp_size(kind: bytes, payload: bytes) -> tuple[int, int] | None:
    if kind == b"VP8 " and len(payload) >= 10:
        w, h = struct.unpack("<HH", payload[6:10])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L" and len(payload) >= 5:
        bits = int.from_bytes(payload[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def webp_with_metadata(data: bytes, meta: OutputMetadata) -> bytes:
    """The WebP file in the extended layout (a VP8X header) with ICCP before the image and
    EXIF and XMP after it; a WebP file has no place for a resolution."""
    if not (meta.icc or meta.exif or meta.xmp) or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return data
    chunks = _riff_chunks(data[12:])
    image = [(k, p) for k, p in chunks if k in (b"ALPH", b"VP8 ", b"VP8L")]
    if chunks and chunks[0][0] == b"VP8X":
        flags = chunks[0][1][0]
        canvas = chunks[0][1][4:10]
    else:
        size = next((s for s in (_webp_size(k, p) for k, p in image) if s), None)
        if size is None:
            return data
        flags = _VP8X_ALPHA if any(k == b"ALPH" or (k == b"VP8L" and p[4] & 0x10) for k, p in image) else 0
        canvas = (size[0] - 1).to_bytes(3, "little") + (size[1] - 1).to_bytes(3, "little")
    flags |= (_VP8X_ICC if meta.icc else 0) | (_VP8X_EXIF if meta.exif else 0) | (_VP8X_XMP if meta.xmp else 0)
    parts = [_riff_chunk(b"VP8X", bytes((flags, 0, 0, 0)) + canvas)]
    if meta.icc:
        parts.append(_riff_chunk(b"ICCP", meta.icc))
    parts.extend(_riff_chunk(k, p) for k, p in image)
    if meta.exif:
        parts.append(_riff_chunk(b"EXIF", meta.exif))
    if meta.xmp:
        parts.append(_riff_chunk(b"XMP ", meta.xmp))
    body = b"WEBP" + b"".join(parts)
    return b"RIFF" + struct.pack("<I", len(body)) + body
