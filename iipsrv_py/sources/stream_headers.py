"""The pixel size a compressed stream declares in its own header, read without decoding it.

A TIFF tile or strip compressed as JPEG, JPEG 2000, PNG or WebP carries a header of its own,
and decoders allocate their output from it, not from the TIFF tags: a 7 KB tile whose JPEG frame
claims 65500 x 65500 pixels makes libjpeg allocate 12 GB.  ``declared_size`` reads
that header so that the tile reader can refuse such a stream before decoding it.  It only reads
headers; anything it does not recognise is left to the decoder (None).
"""

from __future__ import annotations

import struct

from ..errors import ImageDecodeError, TooLarge
from .base import check_decode_unit

# Start-of-frame markers (every SOFn; C4 DHT, C8 JPG and CC DAC share the range but are not frames).
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))
# How far into a stream its header is looked for (JPEG markers before the frame, JP2 boxes).
STREAM_HEADER_BYTES = 1 << 16


def declared_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` the stream's header declares, or None when it is not a JPEG, JPEG 2000,
    PNG or WebP stream whose header could be read."""
    if data[:2] == b"\xff\xd8":
        return _jpeg(data)
    if data[:4] == b"\xff\x4f\xff\x51":
        return _j2k_siz(data, 0)
    if data[:12] == b"\0\0\0\x0cjP  \r\n\x87\n":
        start = data.find(b"\xff\x4f\xff\x51", 0, STREAM_HEADER_BYTES)
        return _j2k_siz(data, start) if start >= 0 else None
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack_from(">II", data, 16)
        return width, height
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    return None


def _jpeg(data: bytes) -> tuple[int, int] | None:
    pos, end = 2, min(len(data), STREAM_HEADER_BYTES)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in _JPEG_FRAMES:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return width, height
        if marker == 0xDA:  # a scan before any frame: not for us to judge
            return None
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    return None


def _j2k_siz(data: bytes, soc: int) -> tuple[int, int] | None:
    """Image size from the SIZ segment that follows SOC: Xsiz - XOsiz by Ysiz - YOsiz."""
    if soc + 24 > len(data):
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", data, soc + 8)
    return max(0, xsiz - xosiz), max(0, ysiz - yosiz)


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        # Canvas size minus one, 24 bits each.
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    return None


def check_stream(name: str, what: str, data: bytes, nominal: tuple[int, int], bytes_per_pixel: int) -> None:
    """Refuse a stored stream before it is decoded when its header declares more than a decode
    unit (413: the decode this request needs is too large) or more than the ``nominal``
    (width, height) of its tile or strip (500: a damaged tile)."""
    declared = declared_size(data)
    if declared is None or not (declared[0] > 0 and declared[1] > 0):
        return  # unknown, or a height defined later in the stream (JPEG's DNL): the decoder's call
    width, height = declared
    check_decode_unit(name, f"{what} stream", width, height, bytes_per_pixel, TooLarge)
    if width > nominal[0] or height > nominal[1]:
        raise ImageDecodeError(
            "damaged image", f"{name}: {what} declares {width}x{height} pixels in a {nominal[0]}x{nominal[1]} segment"
        )
