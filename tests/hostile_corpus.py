"""Hostile image files, made at test time from the generated fixtures, and the requests to send
each of them.

Every specimen is a fixture damaged in one way: cut short at offsets through its header, its
directories and its pixel data; a few bits flipped (seeded, so every run makes the same files);
or one header field patched to what a broken or malicious writer would put there -- sizes of
zero or 2^31, tiles of 65535 x 65535, tile offsets past the end of the file or into its header,
byte counts of 4 GB, tags claiming a billion values, directory chains that loop, tiles whose
own compressed stream claims 65500 x 65500 pixels, JPEG frames of 65500 x 65500 in a small file,
JPEG 2000 headers declaring a single tile of a million pixels square or millions of tiles.
Crash inputs of other libraries (scripts/fetch_test_data.py's CRASH_FILES) join them.

Nothing here imports the server: the tests run the requests in a child process with a memory
limit (``python -m tests.hostile_corpus``), so an allocation bomb fails a test, not the machine.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import resource
import shutil
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import ClassVar

import tifffile

# Statuses the server may answer with (SPEC section 3); storage errors (502-504) cannot happen
# with local files.
SPEC_STATUSES = frozenset({200, 400, 404, 413, 414, 415, 500})  # 414: past MAX_REQUEST_LENGTH
REQUEST_SECONDS = 10.0  # the bound on any one request
MEMORY_LIMIT = 3 << 30  # address space of the child serving the corpus (RLIMIT_AS)
TRUNCATIONS = (8, 16, 64, 200, 1024)  # bytes kept; and 1/4, 1/2, 3/4 of the file and all but one
FLIPPED_FILES = 4  # files with flipped bits made from each fixture
FLIPPED_BITS = 8  # bits flipped in each: half of them in the first kilobyte (the headers)
SEED = 20260101

# The fixtures damaged: every source format and layout (scripts/make_test_images.py).
TIFF_SOURCES = (
    "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif",  # tiled JPEG with shared tables, IFD chain
    "tif-rgb-600x400-1lvl-256tile-lzw.tif",
    "tif-rgb-1200x800-3lvl-128tile-jpeg-bigtiff.tif",
    "tif-rgb-1200x800-4lvl-256tile-deflate-vips-subifd.tif",
    "tif-rgba-600x400-1lvl-256tile-deflate-unassalpha.tif",
    "tif-rgb-600x400-strip16-deflate.tif",  # compressed strips
    "tif-rgb-600x400-strip400-none.tif",  # one uncompressed strip
    "tif-stack-2page-600x400-2lvl-256tile-lzw-chain.tif",
    "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs",
    "svs-rgb-1500x1001-2lvl-step4-256tile-jp2k-33003-ycbcr.svs",
)
# Fixtures whose first tile is patched to declare a huge image in its own compressed stream
# (JPEG frame, JPEG 2000 SIZ, PNG IHDR, WebP header) while the TIFF tags stay right.
STREAM_SOURCES = (
    "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif",
    "svs-rgb-1500x1001-2lvl-step4-256tile-jp2k-33003-ycbcr.svs",
    "tif-rgb-600x400-1lvl-256tile-jpeg2000.tif",
    "tif-rgb-600x400-1lvl-256tile-png.tif",
    "tif-rgb-600x400-1lvl-256tile-webp.tif",
)
JPEG_SOURCES = ("jpeg-rgb-1001x777-q90.jpg", "jpeg-grey-1200x800-q90.jpg")
JP2_SOURCES = ("jp2-grey16-1000x700-4res.jp2", "j2k-rgb-2000x1500-2res-384tile.j2k")
SOURCES = TIFF_SOURCES + JPEG_SOURCES + JP2_SOURCES

# Mutations whose answer is known: a header declaring an impossible decode is refused when the
# file is opened (415), whatever is asked of it; a tile whose stream declares one is refused
# when a request needs it (413).
REFUSED_AT_OPEN = "refused-at-open"
TILE_REFUSED = "tile-refused"


@dataclass(frozen=True)
class Specimen:
    name: str  # file name in the corpus directory (the identifier)
    source: str  # the fixture (or downloaded file) it was made from
    mutation: str
    expect: str = ""  # REFUSED_AT_OPEN, or "" when any SPEC status will do


# -- damaging files ----------------------------------------------------------------------------


def _stem(name: str) -> tuple[str, str]:
    base = os.path.basename(name)
    stem, ext = os.path.splitext(base)
    return stem.replace(".", "-"), ext


def truncations(data: bytes) -> Iterator[tuple[str, bytes]]:
    size = len(data)
    keep = {n for n in TRUNCATIONS if n < size} | {size // 4, size // 2, 3 * size // 4, size - 1}
    for n in sorted(keep):
        yield f"cut{n}", data[:n]


def bit_flips(data: bytes, source: str) -> Iterator[tuple[str, bytes]]:
    for k in range(FLIPPED_FILES):
        rng = random.Random(f"{SEED}:{source}:{k}")
        damaged = bytearray(data)
        for i in range(FLIPPED_BITS):
            position = rng.randrange(min(1024, len(data)) if i % 2 == 0 else len(data))
            damaged[position] ^= 1 << rng.randrange(8)
        yield f"flip{k}", bytes(damaged)


@dataclass(frozen=True)
class _Entry:
    """One IFD entry of a parsed TIFF: where it is and how its value is stored."""

    offset: int  # of the entry
    dtype: int
    count: int
    valueoffset: int


class TiffPatcher:
    """Patches the tags and directory pointers of a TIFF file's bytes, located with tifffile."""

    TYPES: ClassVar[dict[int, str]] = {3: "H", 4: "I", 16: "Q", 13: "I", 18: "Q"}  # SHORT, LONG, LONG8, IFD, IFD8

    def __init__(self, data: bytes) -> None:
        self.data = data
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            self.order = tif.byteorder
            self.bigtiff = tif.is_bigtiff
            self.ifds: list[int] = []
            self.entries: list[dict[int, _Entry]] = []
            for page in tif.pages:
                self.ifds.append(int(page.offset))
                self.entries.append(
                    {tag.code: _Entry(tag.offset, tag.dtype, tag.count, tag.valueoffset) for tag in page.tags.values()}
                )

    def _count_format(self) -> tuple[str, int, int]:
        """(count format, its size, size of one entry)"""
        return ("Q", 8, 20) if self.bigtiff else ("H", 2, 12)

    def tag(self, code: int, value: int, page: int = 0, element: int = 0) -> bytes | None:
        """The file with element ``element`` of tag ``code`` of ``page`` set to ``value`` (a
        SHORT tag holding more than 16 bits becomes a LONG); None when the page has no such tag."""
        entry = self.entries[page].get(code) if page < len(self.entries) else None
        if entry is None or entry.dtype not in self.TYPES or element >= entry.count:
            return None
        data = bytearray(self.data)
        dtype = entry.dtype
        if dtype == 3 and value > 0xFFFF and entry.count == 1:
            dtype = 4
            data[entry.offset + 2 : entry.offset + 4] = struct.pack(self.order + "H", 4)
        fmt = self.order + self.TYPES[dtype]
        value &= (1 << (8 * struct.calcsize(fmt))) - 1
        struct.pack_into(fmt, data, entry.valueoffset + element * struct.calcsize(fmt), value)
        return bytes(data)

    def count(self, code: int, value: int, page: int = 0) -> bytes | None:
        """The file with the value count of tag ``code`` of ``page`` set to ``value`` (its values
        then run far past the end of the file); None when the page has no such tag."""
        entry = self.entries[page].get(code) if page < len(self.entries) else None
        if entry is None:
            return None
        data = bytearray(self.data)
        struct.pack_into(self.order + ("Q" if self.bigtiff else "I"), data, entry.offset + 4, value)
        return bytes(data)

    def next_pointer(self, page: int) -> int:
        """File offset of the next-IFD pointer of ``page``'s IFD."""
        fmt, size, entry_size = self._count_format()
        offset = self.ifds[page]
        (count,) = struct.unpack_from(self.order + fmt, self.data, offset)
        return offset + size + count * entry_size

    def point_next(self, page: int, target: int) -> bytes:
        data = bytearray(self.data)
        struct.pack_into(self.order + ("Q" if self.bigtiff else "I"), data, self.next_pointer(page), target)
        return bytes(data)


def tiff_mutations(data: bytes) -> Iterator[tuple[str, bytes, str]]:
    """Patched headers: (mutation, bytes, expectation)."""
    patch = TiffPatcher(data)
    first = patch.entries[0]
    tiled = 322 in first
    offsets_tag, counts_tag = (324, 325) if tiled else (273, 279)
    size = len(data)
    candidates: list[tuple[str, Callable[[], bytes | None], str]] = [
        ("width-0", lambda: patch.tag(256, 0), REFUSED_AT_OPEN),
        ("length-0", lambda: patch.tag(257, 0), REFUSED_AT_OPEN),
        ("width-2g", lambda: patch.tag(256, 0x7FFFFFFF), ""),
        ("length-2g", lambda: patch.tag(257, 0x7FFFFFFF), ""),
        ("width-4g", lambda: patch.tag(256, 0xFFFFFFFF), ""),
        ("samples-65535", lambda: patch.tag(277, 65535), ""),
        ("bits-64", lambda: patch.tag(258, 64), ""),
        ("compression-unknown", lambda: patch.tag(259, 60000), ""),
        ("photometric-unknown", lambda: patch.tag(262, 60000), ""),
        ("offset-past-eof", lambda: patch.tag(offsets_tag, size + 1_000_000), ""),
        ("offset-into-header", lambda: patch.tag(offsets_tag, 0), ""),
        ("offset-8", lambda: patch.tag(offsets_tag, 8), ""),
        ("bytecount-4g", lambda: patch.tag(counts_tag, 0xFFFFFFF0), ""),
        ("bytecount-0", lambda: patch.tag(counts_tag, 0), ""),
        ("offsets-count-1g", lambda: patch.count(offsets_tag, 0x3FFFFFFF), ""),
        ("bytecounts-count-1g", lambda: patch.count(counts_tag, 0x3FFFFFFF), ""),
        ("description-count-1g", lambda: patch.count(270, 0x3FFFFFFF), ""),
        ("ifd-loop-self", lambda: patch.point_next(0, patch.ifds[0]), ""),
        ("ifd-loop-last", lambda: patch.point_next(len(patch.ifds) - 1, patch.ifds[0]), ""),
        ("ifd-next-past-eof", lambda: patch.point_next(0, size + 12345), ""),
    ]
    if tiled:
        candidates += [
            ("tile-65535", lambda: _both(patch, 322, 323, 65535), REFUSED_AT_OPEN),
            ("tile-65535-4spp", lambda: _tile_bomb(patch), REFUSED_AT_OPEN),
            ("tile-0", lambda: _both(patch, 322, 323, 0), ""),
            ("tile-16", lambda: _both(patch, 322, 323, 16), ""),
        ]
    else:
        candidates += [
            ("rows-per-strip-0", lambda: patch.tag(278, 0), ""),
            ("rows-per-strip-4g", lambda: patch.tag(278, 0xFFFFFFFF), ""),
        ]
        if first[259] and _value(patch, 259) != 1:
            # One compressed strip of 2^31 x length pixels: a decompression bomb.
            candidates.append(("one-strip-2g-wide", lambda: _one_wide_strip(patch), REFUSED_AT_OPEN))
    if 330 in first:  # SubIFDs
        candidates.append(("subifd-self", lambda: patch.tag(330, patch.ifds[0]), ""))
    if len(patch.ifds) > 1:
        candidates.append(("level1-tile-65535", lambda: _both(patch, 322, 323, 65535, page=1), ""))
    for mutation, make, expect in candidates:
        damaged = make()
        if damaged is not None and damaged != data:
            yield mutation, damaged, expect


def _value(patch: TiffPatcher, code: int, page: int = 0) -> int:
    entry = patch.entries[page][code]
    fmt = patch.order + patch.TYPES.get(entry.dtype, "H")
    return int(struct.unpack_from(fmt, patch.data, entry.valueoffset)[0])


def _both(patch: TiffPatcher, a: int, b: int, value: int, page: int = 0) -> bytes | None:
    once = patch.tag(a, value, page)
    if once is None:
        return None
    return TiffPatcher(once).tag(b, value, page)


def _tile_bomb(patch: TiffPatcher) -> bytes | None:
    tiles = _both(patch, 322, 323, 65535)
    return None if tiles is None else TiffPatcher(tiles).tag(277, 4)


def _one_wide_strip(patch: TiffPatcher) -> bytes | None:
    wide = patch.tag(256, 0x80000000)
    if wide is None:
        return None
    again = TiffPatcher(wide)
    return again.tag(278, _value(again, 257))


def jpeg_mutations(data: bytes) -> Iterator[tuple[str, bytes, str]]:
    frame = _jpeg_frame(data)
    if frame is None:
        return
    for mutation, height, width, expect in (
        ("frame-65500", 65500, 65500, REFUSED_AT_OPEN),
        ("frame-height-0", 0, None, ""),
        ("frame-width-0", None, 0, REFUSED_AT_OPEN),
        ("frame-1x65500", 1, 65500, ""),
    ):
        damaged = bytearray(data)
        if height is not None:
            struct.pack_into(">H", damaged, frame + 5, height)
        if width is not None:
            struct.pack_into(">H", damaged, frame + 7, width)
        yield mutation, bytes(damaged), expect
    damaged = bytearray(data)
    damaged[frame + 9] = 0  # no components
    yield "frame-0-components", bytes(damaged), REFUSED_AT_OPEN


def _tiny_jpeg(width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(out, "JPEG")
    data = bytearray(out.getvalue())
    frame = _jpeg_frame(bytes(data))
    assert frame is not None
    struct.pack_into(">HH", data, frame + 5, height, width)
    return bytes(data)


def _jpeg_frame(data: bytes) -> int | None:
    """Offset of the first start-of-frame marker (walking the marker segments)."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker in (0xC0, 0xC1, 0xC2):
            return pos
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    return None


# SIZ fields after the SOC marker (ISO/IEC 15444-1 A.5.1): Xsiz, Ysiz, XOsiz, YOsiz, XTsiz,
# YTsiz, XTOsiz, YTOsiz (32-bit each), from the SIZ marker's Lsiz and Rsiz on.
SIZ_FIELDS = {"x": 8, "y": 12, "xo": 16, "yo": 20, "xt": 24, "yt": 28}


def jp2_mutations(data: bytes) -> Iterator[tuple[str, bytes, str]]:
    soc = data.find(b"\xff\x4f\xff\x51")
    if soc < 0:
        return
    siz_length = struct.unpack_from(">H", data, soc + 4)[0]
    x, y = (struct.unpack_from(">I", data, soc + SIZ_FIELDS[f])[0] for f in ("x", "y"))
    patches: list[tuple[str, dict[str, int], str]] = [
        ("siz-2g", {"x": 0x7FFFFFFF, "y": 0x7FFFFFFF}, ""),
        ("siz-one-tile-1m", {"x": 1_000_000, "y": 1_000_000, "xt": 1_000_000, "yt": 1_000_000}, REFUSED_AT_OPEN),
        ("siz-one-tile-2g", {"x": 0x7FFFFFFF, "y": 0x7FFFFFFF, "xt": 0x7FFFFFFF, "yt": 0x7FFFFFFF}, REFUSED_AT_OPEN),
        ("siz-tiles-1px", {"xt": 1, "yt": 1}, REFUSED_AT_OPEN),
        ("siz-tiles-0", {"xt": 0, "yt": 0}, REFUSED_AT_OPEN),
        ("siz-width-0", {"x": 0}, REFUSED_AT_OPEN),
        ("siz-offset-past-size", {"xo": x + 10, "yo": y + 10}, REFUSED_AT_OPEN),
    ]
    for mutation, fields, expect in patches:
        damaged = bytearray(data)
        for field, value in fields.items():
            struct.pack_into(">I", damaged, soc + SIZ_FIELDS[field], value)
        yield mutation, bytes(damaged), expect
    cod = data.find(b"\xff\x52", soc + 4 + siz_length)
    if cod > 0:
        for mutation, offset, value in (
            ("cod-levels-32", 9, b"\x20"),
            ("cod-layers-65535", 6, b"\xff\xff"),
            ("cod-layers-0", 6, b"\x00\x00"),
        ):
            damaged = bytearray(data)
            damaged[cod + offset : cod + offset + len(value)] = value
            yield mutation, bytes(damaged), ""


def stream_bomb(data: bytes) -> bytes | None:
    """The file with the stream of its first tile declaring 65500 x 65500 pixels (WebP: the most
    its header can say), or None when that stream is not one of the four kinds."""
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages.first
        offset, count = int(page.dataoffsets[0]), int(page.databytecounts[0])
    tile = data[offset : offset + count]
    damaged = bytearray(data)
    if tile[:2] == b"\xff\xd8":
        frame = _jpeg_frame(tile)
        if frame is None:
            return None
        struct.pack_into(">HH", damaged, offset + frame + 5, 65500, 65500)
    elif tile[:4] == b"\xff\x4f\xff\x51":
        struct.pack_into(">II", damaged, offset + SIZ_FIELDS["x"], 65500, 65500)
    elif tile[:8] == b"\x89PNG\r\n\x1a\n":
        struct.pack_into(">II", damaged, offset + 16, 65500, 65500)
        # With its CRC made right again, so that only the size is wrong.
        struct.pack_into(">I", damaged, offset + 29, zlib.crc32(damaged[offset + 12 : offset + 29]))
    elif tile[:4] == b"RIFF" and tile[12:16] == b"VP8L":
        bits = int.from_bytes(tile[21:25], "little") & ~0xFFFFFFF | 0xFFFFFFF  # 16384 x 16384
        damaged[offset + 21 : offset + 25] = bits.to_bytes(4, "little")
    elif tile[:4] == b"RIFF" and tile[12:16] == b"VP8X":
        damaged[offset + 24 : offset + 30] = (65499).to_bytes(3, "little") * 2
    else:
        return None
    return bytes(damaged)


def structural(source: str, data: bytes) -> Iterator[tuple[str, bytes, str]]:
    if source in TIFF_SOURCES:
        yield from tiff_mutations(data)
    elif source in JPEG_SOURCES:
        yield from jpeg_mutations(data)
    else:
        yield from jp2_mutations(data)


def build(directory: str, fixtures: str, crash_files: list[str] | None = None) -> list[Specimen]:
    """Write the corpus into ``directory``: every fixture of SOURCES damaged in every way, and
    ``crash_files`` (paths) as they are.  Returns the specimens, in a stable order."""
    os.makedirs(directory, exist_ok=True)
    specimens = []

    def add(source: str, mutation: str, data: bytes, expect: str = "") -> None:
        stem, ext = _stem(source)
        name = f"{stem}--{mutation}{ext}"
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
        specimens.append(Specimen(name, source, mutation, expect))

    for source in SOURCES:
        with open(os.path.join(fixtures, source), "rb") as f:
            data = f.read()
        for mutation, damaged in truncations(data):
            add(source, mutation, damaged)
        for mutation, damaged in bit_flips(data, source):
            add(source, mutation, damaged)
        for mutation, damaged, expect in structural(source, data):
            add(source, mutation, damaged, expect)
    for source in STREAM_SOURCES:
        with open(os.path.join(fixtures, source), "rb") as f:
            damaged = stream_bomb(f.read())
        assert damaged is not None, source
        add(source, "tile0-stream-65500", damaged, TILE_REFUSED)
    # A JPEG of a few hundred bytes whose frame header claims 65500 x 65500 pixels.
    add("tiny-16x16.jpg", "frame-65500", _tiny_jpeg(65500, 65500), REFUSED_AT_OPEN)
    for path in crash_files or ():
        name = os.path.basename(path)
        shutil.copyfile(path, os.path.join(directory, name))
        specimens.append(Specimen(name, name, "published-crash-input"))
    return specimens


# -- requests ------------------------------------------------------------------------------------

FCGI_PATH = "/fcgi-bin/iipsrv.fcgi"


@dataclass(frozen=True)
class Probe:
    label: str
    path: str
    query: str
    kind: str  # what a 200 must be: "image", "json", "text"
    width: int = 0  # exact output width of a 200 image, when the request fixes it


def probes(name: str) -> list[Probe]:
    """The requests sent for every specimen: metadata, tiles, views and regions through each
    protocol and the slide REST API."""
    return [
        Probe("iiif-info", FCGI_PATH, f"IIIF=/{name}/info.json", "json"),
        Probe("iip-obj", FCGI_PATH, f"FIF={name}&OBJ=IIP,1.0&OBJ=Max-size", "text"),
        Probe("iip-tile-smallest", FCGI_PATH, f"FIF={name}&JTL=0,0", "image"),
        Probe("iip-tile-png", FCGI_PATH, f"FIF={name}&PTL=1,0", "image"),
        Probe("iip-cvt", FCGI_PATH, f"FIF={name}&WID=200&CVT=jpeg", "image", 200),
        Probe("iip-region", FCGI_PATH, f"FIF={name}&RGN=0.25,0.25,0.5,0.5&WID=300&CVT=png", "image", 300),
        Probe("iiif-full-res-region", FCGI_PATH, f"IIIF=/{name}/0,0,256,256/max/0/default.jpg", "image"),
        Probe("deepzoom-tile", FCGI_PATH, f"DeepZoom={name}_files/8/0_0.jpg", "image"),
        Probe("rest-slide", f"/slides/{name}", "", "json"),
        Probe("rest-thumbnail", f"/slides/{name}/thumbnail", "max_size=128", "image"),
        Probe("rest-tile", f"/tiles/{name}/0/0/0.jpg", "", "image"),
    ]


LEAKS = re.compile(rb"Traceback|File \"|\.py\b")


def check(probe: Probe, status: int, headers: dict[str, str], body: bytes, elapsed: float, root: str) -> list[str]:
    """What is wrong with one answer (nothing: an empty list)."""
    problems = []
    if status not in SPEC_STATUSES:
        problems.append(f"status {status}")
    if headers.get("content-length") != str(len(body)):
        problems.append(f"Content-Length {headers.get('content-length')} for {len(body)} bytes")
    if elapsed > REQUEST_SECONDS:
        problems.append(f"took {elapsed:.1f} s")
    if status != 200:
        if LEAKS.search(body) or any(place.encode() in body for place in (root, tempfile.gettempdir(), sys.prefix)):
            problems.append(f"error body leaks: {body[:200]!r}")
        return problems
    problems += _check_ok(probe, headers.get("content-type", ""), body)
    return problems


def _check_ok(probe: Probe, content_type: str, body: bytes) -> list[str]:
    """A 200 must be what was asked for: an image that decodes (at the width asked), JSON, or
    the OBJ lines."""
    if probe.kind == "image":
        from PIL import Image

        try:
            with Image.open(io.BytesIO(body)) as im:
                im.load()
                width = im.width
        except Exception as exc:
            return [f"200 image does not decode ({content_type}): {type(exc).__name__}: {exc}"]
        if probe.width and width != probe.width:
            return [f"200 image is {width} wide, {probe.width} asked"]
        return []
    if probe.kind == "json":
        try:
            document = json.loads(body)
        except ValueError:
            return [f"200 JSON does not parse: {body[:100]!r}"]
        width = document.get("width") if isinstance(document, dict) else None
        if not isinstance(width, int) or width <= 0:
            return [f"200 JSON without a positive width: {body[:200]!r}"]
        return []
    if not re.fullmatch(rb"Max-size:[1-9]\d* [1-9]\d*\r\n", body):
        return [f"200 OBJ answer malformed: {body[:100]!r}"]
    return []


@dataclass
class Record:
    name: str
    label: str
    status: int
    elapsed: float
    problems: list[str]
    error: str  # the first line of an error's body


def serve(directory: str, names: list[str], out: io.TextIOBase) -> None:
    """Send every probe for every name to an app serving ``directory``, writing one JSON line
    per answer (and a ``begin`` line before each request, so that a hang names its request)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests import helpers

    app = helpers.make_app(FILESYSTEM_PREFIX=directory + "/")
    for name in names:
        for probe in probes(name):
            out.write(json.dumps({"begin": [name, probe.label]}) + "\n")
            out.flush()
            started = time.perf_counter()
            result = helpers.call(app, probe.query, path=probe.path)
            elapsed = time.perf_counter() - started
            problems = check(probe, result.status, result.headers, result.body, elapsed, directory)
            error = "" if result.status == 200 else result.body[:100].decode("utf-8", "replace").split("\n")[0]
            record = Record(name, probe.label, result.status, round(elapsed, 3), problems, error)
            out.write(json.dumps(asdict(record)) + "\n")
            out.flush()
    out.write(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}) + "\n")


def main(argv: list[str]) -> int:
    """``python -m tests.hostile_corpus DIRECTORY NAME...``: serve the names under a memory
    limit, one JSON line per answer on stdout."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    serve(argv[1], argv[2:], sys.stdout)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
