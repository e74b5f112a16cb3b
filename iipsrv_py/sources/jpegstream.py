"""Turning JPEG tiles stored in a TIFF into standalone JPEG files, without re-encoding.

TIFF JPEG tiles are often "abbreviated": the quantisation and Huffman tables live once in the
JPEGTables tag and each tile carries only its scan.  Splicing the tables (without their EOI)
in front of the tile (without its SOI) gives a complete JPEG.

A TIFF whose Photometric is RGB stores JPEG data without a colour transform (Aperio does
this).  Nothing in such a stream tells a decoder so, and most assume YCbCr; an Adobe APP14
marker with transform 0 says "RGB, no transform" unambiguously to every decoder.
"""

from __future__ import annotations

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
# APP14 "Adobe": length 14, version 100, flags0 0, flags1 0, transform 0 (no transform).
ADOBE_RGB_MARKER = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


def _has_adobe_marker(stream: bytes) -> bool:
    # Markers before the first SOS are few and short; scan them properly rather than
    # searching the whole stream, where entropy-coded data could contain anything.
    pos = 2
    end = len(stream)
    while pos + 4 <= end and stream[pos] == 0xFF:
        marker = stream[pos + 1]
        if marker == 0xDA:  # start of scan: header is over
            return False
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
        if marker == 0xEE and stream[pos + 4 : pos + 9] == b"Adobe":
            return True
        pos += 2 + length
    return False


def standalone_jpeg(tile: bytes, tables: bytes | None, rgb_without_transform: bool) -> bytes | None:
    """A complete JPEG file for a stored tile, or None when the tile is not a JPEG stream."""
    if not tile.startswith(SOI):
        return None
    if tables and len(tables) > 4:
        if not (tables.startswith(SOI) and tables.endswith(EOI)):
            return None
        stream = tables[:-2] + tile[2:]
    else:
        stream = tile
    if rgb_without_transform and not _has_adobe_marker(stream):
        stream = SOI + ADOBE_RGB_MARKER + stream[2:]
    return stream
