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


# Markers that stand alone, without a length: TEM and RST0-7.
_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))
# Start-of-frame markers (every SOFn; C4 DHT, C8 JPG and CC DAC share the range but are not frames).
_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _scan_header(stream: bytes) -> tuple[bool, bool]:
    """``(well formed, has an Adobe APP14 marker)`` from the marker segments before the scan.

    A stored tile is sent without being decoded, so this cheap walk is what keeps a
    damaged tile from reaching a browser as a 200: the header must be a chain of marker
    segments holding a frame header and then a scan, and the stream must end with EOI.
    Only the header is walked; entropy-coded data could contain anything.
    """
    pos, end = 2, len(stream)
    frame = adobe = False
    while pos + 2 <= end:
        if stream[pos] != 0xFF:
            return False, adobe
        marker = stream[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if pos + 4 > end:
            return False, adobe
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
        if length < 2:
            return False, adobe
        if marker == 0xDA:  # start of scan: the header is over
            # Some writers pad tiles with zero bytes after EOI; decoders ignore them.
            return frame and stream.rstrip(b"\0").endswith(EOI), adobe
        if marker in (0xD8, 0xD9):
            return False, adobe
        frame = frame or marker in _FRAMES
        adobe = adobe or (marker == 0xEE and stream[pos + 4 : pos + 9] == b"Adobe")
        pos += 2 + length
    return False, adobe


def standalone_jpeg(tile: bytes, tables: bytes | None, rgb_without_transform: bool) -> bytes | None:
    """A complete JPEG file for a stored tile, or None when the tile is not a well-formed JPEG
    stream (the caller then decodes it, and a damaged tile fails there)."""
    if not tile.startswith(SOI):
        return None
    if tables and len(tables) > 4:
        if not (tables.startswith(SOI) and tables.endswith(EOI)):
            return None
        stream = tables[:-2] + tile[2:]
    else:
        stream = tile
    well_formed, adobe = _scan_header(stream)
    if not well_formed:
        return None
    if rgb_without_transform and not adobe:
        stream = SOI + ADOBE_RGB_MARKER + stream[2:]
    return stream
