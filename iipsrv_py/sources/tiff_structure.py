"""The structure of a TIFF file, read only as far as a request needs it.

Over S3 every read is a request, and a pyramid's IFDs are mostly the arrays of tile offsets and
byte counts.  tifffile's ``TiffPage`` parses every tag of an IFD and loads those arrays with it,
so opening an image from TiffPages reads (and parses) the arrays of every level.  Here an image
is opened from IFD *summaries* instead: the entry table of each IFD is read, and tifffile's
``TiffTag`` decodes only the entries that choosing levels and stack pages and the open-time
checks need (sizes, tiles, samples, compression, subfile type, SubIFDs) -- the technique of
tifffile's own ``TiffFrame``.  The full TiffPage of an IFD (offsets, JPEG tables, its decoder)
is parsed when a tile of that level is first needed (``TiffStructure.full_page``).

The first IFD is parsed whole when the file is opened: tifffile does so, and the image's
metadata, colour layout and ICC profile come from it.  Files whose pages tifffile repairs after
reading their tags (NDPI's 64-bit offsets, LSM, MetaMorph, Philips, ...) and IFDs it patches
(old-style JPEG, sizes taken from the JPEG stream) are summarised from a full TiffPage, so that
a summary always says what tifffile's page would say.
"""

from __future__ import annotations

import logging
import struct
from typing import Any, NamedTuple

import tifffile

from ..cache.store import NO_CACHE, WorkerCache
from ..model import SourceIdentity
from ..storage.base import Blob
from . import tiff_levels

log = logging.getLogger(__name__)

# The tags of a summary, by code.
NEW_SUBFILE_TYPE = 254
SUBFILE_TYPE = 255
IMAGE_WIDTH = 256
IMAGE_LENGTH = 257
BITS_PER_SAMPLE = 258
COMPRESSION = 259
PHOTOMETRIC = 262
IMAGE_DESCRIPTION = 270
SAMPLES_PER_PIXEL = 277
ROWS_PER_STRIP = 278
PLANAR_CONFIG = 284
TILE_WIDTH = 322
TILE_LENGTH = 323
SUBIFDS = 330
SAMPLE_FORMAT = 339
IMAGE_DEPTH = 32997
DOCUMENT_NAME = 269
PAGE_NAME = 285
SUMMARY_TAGS = frozenset(
    {
        NEW_SUBFILE_TYPE,
        SUBFILE_TYPE,
        IMAGE_WIDTH,
        IMAGE_LENGTH,
        BITS_PER_SAMPLE,
        COMPRESSION,
        PHOTOMETRIC,
        SAMPLES_PER_PIXEL,
        ROWS_PER_STRIP,
        PLANAR_CONFIG,
        TILE_WIDTH,
        TILE_LENGTH,
        SUBIFDS,
        SAMPLE_FORMAT,
        IMAGE_DEPTH,
    }
)
COMPRESSION_OJPEG = 6
# Kinds of file whose pages tifffile changes after reading their tags (TiffFile.is_<kind>).
REPAIRED_KINDS = ("ndpi", "lsm", "stk", "philips", "vista", "indica")
MAX_TAGS = 4096  # tifffile's limit: more entries than this is a corrupt IFD
MAX_CHAIN = 65536  # IFDs followed in the chain


class IfdSummary(NamedTuple):
    """What one IFD says about its image, as tifffile's TiffPage would say it, without the
    arrays of tile (strip) offsets and byte counts.  ``entries`` is the raw entry table, kept
    to decode further tags on demand (``IfdReader.tag``).

    A named tuple rather than a frozen dataclass: one is made per IFD of every image opened,
    and a frozen dataclass of this many fields costs several times as much to build."""

    offset: int  # of the IFD in the file
    position: tuple[int, ...]  # position in the IFD tree: (i,) in the chain, (i, k) SubIFD k of page i
    width: int
    length: int
    depth: int
    tile_width: int  # 0: stored in strips
    tile_length: int
    samples: int
    bits: int | tuple[int, ...]  # a tuple only when the samples differ, as in tifffile
    sample_format: int | tuple[int, ...]
    planar: int
    photometric: int
    compression: int
    subfile_type: int
    rows_per_strip: int  # 0 when tiled
    subifds: tuple[int, ...]
    entries: bytes = b""
    entries_offset: int = 0  # file offset of ``entries``

    @property
    def is_tiled(self) -> bool:
        return self.tile_width > 0


def summary_of_page(page: tifffile.TiffPage, entries: bytes = b"", entries_offset: int = 0) -> IfdSummary:
    """The summary of a fully parsed page (the reference a read summary must equal)."""
    return IfdSummary(
        offset=page.offset,
        position=tuple(page._index),
        width=int(page.imagewidth),
        length=int(page.imagelength),
        depth=int(page.imagedepth),
        tile_width=int(page.tilewidth),
        tile_length=int(page.tilelength),
        samples=int(page.samplesperpixel),
        bits=_number(page.bitspersample),
        sample_format=_number(page.sampleformat),
        planar=int(page.planarconfig),
        photometric=int(page.photometric),
        compression=int(page.compression),
        subfile_type=int(page.subfiletype),
        rows_per_strip=int(page.rowsperstrip),
        subifds=tuple(int(v) for v in page.subifds or ()),
        entries=entries,
        entries_offset=entries_offset,
    )


def _number(value: Any) -> int | tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, tuple) else int(value)


def _read_ifd(tif: tifffile.TiffFile, offset: int) -> tuple[bytes, int, int]:
    """``(entry table, its file offset, offset of the next IFD)`` of the IFD at ``offset``:
    two reads, the entry count and then exactly the entries and the next-IFD pointer (a
    larger read would take in the offset arrays that writers put right after the table)."""
    tiff = tif.tiff
    fh = tif.filehandle
    if not 8 <= offset < fh.size:
        raise tifffile.TiffFileError(f"IFD offset {offset} outside the file")
    fh.seek(offset)
    head = fh.read(tiff.tagnosize)
    if len(head) != tiff.tagnosize:
        raise tifffile.TiffFileError(f"corrupted tag list @{offset}")
    count = struct.unpack(tiff.tagnoformat, head)[0]
    if count > MAX_TAGS:
        raise tifffile.TiffFileError(f"suspicious number of tags {count} @{offset}")
    size = count * tiff.tagsize
    data = fh.read(size + tiff.offsetsize)
    if len(data) < size:
        raise tifffile.TiffFileError(f"corrupted IFD structure @{offset}")
    # A table that ends with the file has no next pointer: the chain ends there.
    following = struct.unpack(tiff.offsetformat, data[size:])[0] if len(data) == size + tiff.offsetsize else 0
    return data[:size], offset + tiff.tagnosize, int(following)


def _per_sample(tag: Any, samples: int, default: int) -> int | tuple[int, ...]:
    """BitsPerSample or SampleFormat as TiffPage reduces it: one number when every sample
    agrees (LSM files may list more values than samples)."""
    if tag is None:
        return default
    value = tag.value
    if tag.count == 1:
        return int(value)
    values = tuple(int(v) for v in value[:samples])
    return values if any(v != values[0] for v in values) else values[0]


def parse_page(tif: tifffile.TiffFile, offset: int, position: tuple[int, ...]) -> tifffile.TiffPage:
    """The IFD at ``offset`` parsed whole by tifffile (offset arrays, JPEG tables, decoder)."""
    tif.filehandle.seek(offset)
    return tifffile.TiffPage(tif, index=position if len(position) > 1 else position[0])


class IfdReader:
    """Reads the summaries of one file's IFDs.

    An entry that is byte for byte one already decoded -- same code, type, count and the same
    inline value or value offset -- has the same value, so tifffile decodes each distinct
    entry once: in a pyramid most entries repeat from level to level (compression, tiles,
    samples, photometric) and only the sizes differ.  The memo lives as long as the reader."""

    def __init__(self, tif: tifffile.TiffFile) -> None:
        self.tif = tif
        # Files whose pages tifffile repairs after reading the tags are summarised from
        # full pages (module docstring).
        self._repaired = any(getattr(tif, f"is_{kind}") for kind in REPAIRED_KINDS)
        self._decoded: dict[bytes, Any] = {}
        self._tagsize = tif.tiff.tagsize
        # The codes of a whole entry table in one unpack: each entry's first two bytes.
        self._byteorder = tif.tiff.byteorder
        self._code_format = f"H{tif.tiff.tagsize - 2}x"

    def tags(self, entries: bytes, entries_offset: int, codes: frozenset[int]) -> dict[int, Any]:
        """The tags of an entry table whose code is in ``codes``, decoded by tifffile (the
        first occurrence of a code wins, as ``TiffTags.valueof`` reads it).  A broken entry is
        left out, as TiffPage leaves it out."""
        tagsize = self._tagsize
        found: dict[int, Any] = {}
        table_format = self._byteorder + self._code_format * (len(entries) // tagsize)
        for number, code in enumerate(struct.unpack(table_format, entries)):
            if code not in codes or code in found:
                continue
            start = number * tagsize
            header = entries[start : start + tagsize]
            tag = self._decoded.get(header)
            if tag is None:
                try:
                    tag = tifffile.TiffTag.fromfile(self.tif, offset=entries_offset + start, header=header)
                except tifffile.TiffFileError as exc:
                    log.debug("IFD entry %d @%d skipped: %s", code, entries_offset + start, exc)
                    continue
                self._decoded[header] = tag
            found[code] = tag
        return found

    def tag(self, summary: IfdSummary, code: int) -> Any:
        """The value of one tag of a summarised IFD (read from the file now if it lies
        outside the entry), or None when the IFD does not have it."""
        tag = self.tags(summary.entries, summary.entries_offset, frozenset((code,))).get(code)
        return None if tag is None else tag.value

    def summary(
        self, offset: int, position: tuple[int, ...], page: tifffile.TiffPage | None = None
    ) -> tuple[IfdSummary, int]:
        """The summary of the IFD at ``offset`` and the offset of the next IFD in its chain
        (``page``: the IFD already parsed whole, as the first one is)."""
        entries, entries_offset, following = _read_ifd(self.tif, offset)
        if page is None and not self._repaired:
            tags = self.tags(entries, entries_offset, SUMMARY_TAGS)
            if not _patched_by_tifffile(tags):
                return _summary_of_tags(tags, offset, position, entries, entries_offset), following
        if page is None:
            page = parse_page(self.tif, offset, position)
        else:
            self._remember(page, entries, entries_offset)
        return summary_of_page(page, entries, entries_offset), following

    def _remember(self, page: tifffile.TiffPage, entries: bytes, entries_offset: int) -> None:
        """Take the summary tags tifffile already decoded for a page parsed whole (the first
        one) as decoded entries: the levels after it mostly repeat them."""
        tagsize = self._tagsize
        for tag in page.tags.values():
            start = tag.offset - entries_offset
            if tag.code in SUMMARY_TAGS and 0 <= start < len(entries) and start % tagsize == 0:
                self._decoded.setdefault(entries[start : start + tagsize], tag)

    def chain(self) -> tuple[IfdSummary, ...]:
        """Summaries of the IFD chain from the first IFD, following the next-IFD pointers.

        The chain ends, as tifffile ends it, at a zero pointer, at a pointer outside the file,
        at an IFD seen before (a loop) or at an IFD that cannot be read (logged); the first
        IFD must be readable."""
        summaries: list[IfdSummary] = []
        seen: set[int] = set()
        first = self.tif.pages.first
        offset = int(first.offset)
        while offset and len(summaries) < MAX_CHAIN:
            if offset in seen:
                log.warning("%s: IFD chain loops back to offset %d", self.tif.filehandle.name, offset)
                break
            seen.add(offset)
            try:
                summary, offset = self.summary(offset, (len(summaries),), None if summaries else first)
            except tifffile.TiffFileError as exc:
                if not summaries:
                    raise
                log.warning("%s: IFD chain ends at an unreadable IFD: %s", self.tif.filehandle.name, exc)
                break
            summaries.append(summary)
        return tuple(summaries)

    def subifds(self, parent: IfdSummary) -> tuple[IfdSummary, ...]:
        """Summaries of the SubIFDs of an IFD (none when the first offset is 0, as tifffile
        reads such a tag)."""
        if not parent.subifds or parent.subifds[0] == 0:
            return ()
        return tuple(self.summary(offset, (*parent.position, k))[0] for k, offset in enumerate(parent.subifds))


def _patched_by_tifffile(tags: dict[int, Any]) -> bool:
    """IFDs whose tags TiffPage changes after reading them: old-style JPEG, and sizes that
    it takes from the JPEG stream when the tags lack them."""
    compression = tags.get(COMPRESSION)
    if compression is not None and compression.value == COMPRESSION_OJPEG:
        return True
    return IMAGE_WIDTH not in tags or IMAGE_LENGTH not in tags


def _summary_of_tags(
    tags: dict[int, Any], offset: int, position: tuple[int, ...], entries: bytes, entries_offset: int
) -> IfdSummary:
    """A summary from the decoded tags, each reduced as TiffPage reduces it."""

    def value(code: int, default: int) -> int:
        tag = tags.get(code)
        return default if tag is None else int(tag.value)

    defaults = tifffile.TiffPage  # its class attributes are the defaults of absent tags
    samples = value(SAMPLES_PER_PIXEL, defaults.samplesperpixel)
    length = value(IMAGE_LENGTH, defaults.imagelength)
    subfile_type = value(NEW_SUBFILE_TYPE, defaults.subfiletype)
    if subfile_type == 0:
        # The old SubfileType: 2 is a reduced image, 3 a page of a multi-page image.
        subfile_type = {2: 0b1, 3: 0b10}.get(value(SUBFILE_TYPE, 0), 0)
    if TILE_WIDTH in tags:
        rows = 0
    else:
        strip_rows = tags.get(ROWS_PER_STRIP)
        rows = length if strip_rows is None or strip_rows.count > 1 else int(strip_rows.value)
        rows = min(rows, length)
    subifds = tags.get(SUBIFDS)
    return IfdSummary(
        offset=offset,
        position=position,
        width=value(IMAGE_WIDTH, defaults.imagewidth),
        length=length,
        depth=value(IMAGE_DEPTH, defaults.imagedepth),
        tile_width=value(TILE_WIDTH, defaults.tilewidth),
        tile_length=value(TILE_LENGTH, defaults.tilelength),
        samples=samples,
        bits=_per_sample(tags.get(BITS_PER_SAMPLE), samples, defaults.bitspersample),
        sample_format=_per_sample(tags.get(SAMPLE_FORMAT), samples, defaults.sampleformat),
        planar=value(PLANAR_CONFIG, defaults.planarconfig),
        photometric=value(PHOTOMETRIC, defaults.photometric),
        compression=value(COMPRESSION, defaults.compression),
        subfile_type=subfile_type,
        rows_per_strip=rows,
        subifds=tuple(int(v) for v in subifds.value or ()) if subifds is not None else (),
        entries=entries,
        entries_offset=entries_offset,
    )


class TiffStructure:
    """An opened TIFF file: tifffile's file with its first page parsed, the summaries of its
    IFD chain and where its stack pages start.  Shared by the sources of the file's stack
    pages; the levels of a page are read when that page is first used."""

    def __init__(self, blob: Blob, cache: WorkerCache | None = None) -> None:
        """Parse the header, the first IFD in full and the chain's summaries.  tifffile's
        exceptions propagate: the caller decides what an unreadable file means.  ``cache`` is
        the worker cache, where the file's sources keep decoded strips and pictures."""
        self.blob = blob
        self.cache = cache if cache is not None else NO_CACHE
        self.name = blob.name
        self.identity: SourceIdentity = blob.identity
        self.tif = tifffile.TiffFile(blob.stream())
        self.first: tifffile.TiffPage = self.tif.pages.first
        self._reader = IfdReader(self.tif)
        self.chain = self._reader.chain()
        self.stack = tiff_levels.stack_starts(self.chain)

    def levels(self, page: int) -> tuple[IfdSummary, ...]:
        """The pyramid of stack page ``page``: its SubIFDs, or the reduced IFDs of the chain up
        to the next stack page; full size first."""
        start = self.stack[page]
        end = self.stack[page + 1] if page + 1 < len(self.stack) else len(self.chain)
        base = self.chain[start]
        candidates = self._reader.subifds(base) if base.subifds else self.chain[start + 1 : end]
        return tiff_levels.pyramid(base, candidates)

    def full_page(self, summary: IfdSummary) -> tifffile.TiffPage:
        """The TiffPage of a summarised IFD: the first page as parsed at open, any other
        parsed now (callers keep it)."""
        if summary.offset == self.first.offset:
            return self.first
        return parse_page(self.tif, summary.offset, summary.position)

    def tag(self, summary: IfdSummary, code: int) -> Any:
        """One tag's value of a summarised IFD, or None."""
        return self._reader.tag(summary, code)

    def page_names(self) -> tuple[str, ...]:
        """Names of the stack pages (PageName, else DocumentName, else ``page N``); none for a
        single image."""
        if len(self.stack) < 2:
            return ()
        names = []
        for number, position in enumerate(self.stack):
            summary = self.chain[position]
            names.append(tiff_levels.page_name(number, self.tag(summary, PAGE_NAME), self.tag(summary, DOCUMENT_NAME)))
        return tuple(names)
