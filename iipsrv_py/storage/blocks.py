"""Random access to a remote object through aligned blocks: what to fetch, and who fetches it.

Every byte of an object read from a store belongs to one aligned block of ``block_size`` bytes
(S3_BLOCK_SIZE); blocks are what the per-worker cache holds, what other workers find in the
shared cache and what single flight is about.  A block may be held *partially*: as the suffix
of the block from some offset on (whole blocks are the suffix from 0).  That is what lets the
structure of a file (TIFF header and IFDs, JPEG 2000 boxes, read through ``stream()``) be read
without fetching whole blocks around every IFD -- a pyramid's IFDs are spread over the file,
one behind each level's data, and whole blocks around each would exceed 1 % of a 100 MB file
-- while every later read of the same block, before or after, still finds it:

* a *data* read (a tile, ``read_at``) needs whole blocks: a tile's neighbours lie in the same
  blocks and will be asked for next;
* a *structure* read needs its block from the 32 KiB piece (``block_size / PIECES``) that
  holds its first byte, to the end of the block.  IFD chains run forwards through a file, so
  the rest of the block holds whatever of the chain and the IFD's tag values lie in it.  The
  first block is always needed whole: it holds the header, and usually the first IFD with its
  arrays.

The missing parts of the blocks one read needs are fetched as ranges; parts that are adjacent
in the object (a block missing to its end, the next missing from its start) become one range,
so one read costs at most one request per run of adjacent missing blocks.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple

from .. import metrics

PIECES = 8  # a structure read's block is needed from a piece boundary: block_size / PIECES


class Held(NamedTuple):
    """The bytes of one block held from ``start`` (an offset within the block) to its end."""

    start: int
    data: bytes


def block_length(index: int, block_size: int, size: int) -> int:
    """Length of block ``index`` of an object of ``size`` bytes (the last one may be short)."""
    return max(0, min(block_size, size - index * block_size))


def needed(offset: int, end: int, block_size: int, structure: bool) -> dict[int, int]:
    """``{block index: first byte needed within it}`` for reading ``[offset, end)``.

    A data read needs whole blocks; a structure read needs its first block from the piece
    holding ``offset`` (from 0 in the object's first block) and whole blocks after it."""
    first, last = offset // block_size, (end - 1) // block_size
    wanted = dict.fromkeys(range(first, last + 1), 0)
    if structure and first > 0:
        piece = max(1, block_size // PIECES)
        wanted[first] = (offset - first * block_size) // piece * piece
    return wanted


def missing_ranges(wanted: dict[int, int], held: dict[int, int], block_size: int, size: int) -> list[tuple[int, int]]:
    """The object ranges ``[start, end)`` to fetch so that each wanted block is held from its
    needed offset: ``wanted`` as ``needed`` gives it, ``held`` the offset each block is held
    from now (absent: not held).  Adjacent ranges are merged into one."""
    ranges: list[tuple[int, int]] = []
    for index in sorted(wanted):
        length = block_length(index, block_size, size)
        have = held.get(index, length)
        need = wanted[index]
        if need >= have:
            continue
        start, end = index * block_size + need, index * block_size + have
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))
    return ranges


def split_range(start: int, data: bytes, block_size: int, size: int, held: dict[int, Held]) -> dict[int, Held]:
    """The blocks a fetched range ``[start, start + len(data))`` completes, each joined to the
    part of it already held (``held``), which the range must reach exactly."""
    out: dict[int, Held] = {}
    position = start
    end = start + len(data)
    while position < end:
        index = position // block_size
        block_start = index * block_size
        block_end = min(block_start + block_length(index, block_size, size), end)
        chunk = data[position - start : block_end - start]
        old = held.get(index)
        tail = old.data if old is not None and block_end - block_start == old.start else b""
        out[index] = Held(position - block_start, chunk + tail)
        position = block_end
    return out


class Flight:
    """One fetch of one block in progress in this process; the threads that need the same
    block wait for it instead of fetching it again."""

    __slots__ = ("error", "event", "held")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.held: Held | None = None
        self.error: BaseException | None = None


class BlockCache:
    """A worker's blocks of every object, bounded in bytes (S3_CACHE_SIZE), least recently
    used first out; and the fetches in flight.  Keys carry the object's identity token, so the
    blocks of a replaced object are never found for the new one.  Thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._blocks: OrderedDict[tuple[str, int], Held] = OrderedDict()
        self._flights: dict[tuple[str, int], Flight] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._blocks)

    def get(self, key: tuple[str, int]) -> Held | None:
        with self._lock:
            held = self._blocks.get(key)
            if held is not None:
                self._blocks.move_to_end(key)
        metrics.lookup("s3", held is not None)
        return held

    def put(self, key: tuple[str, int], held: Held) -> None:
        size = len(held.data)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._blocks.pop(key, None)
            if old is not None:
                self.bytes -= len(old.data)
            self._blocks[key] = held
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, evicted = self._blocks.popitem(last=False)
                self.bytes -= len(evicted.data)

    def claim(self, keys: Iterable[tuple[str, int]]) -> tuple[list[tuple[str, int]], dict[tuple[str, int], Flight]]:
        """Split ``keys`` into those this thread now fetches (a flight is registered for each)
        and the flights already fetching the others."""
        mine: list[tuple[str, int]] = []
        theirs: dict[tuple[str, int], Flight] = {}
        with self._lock:
            for key in keys:
                flight = self._flights.get(key)
                if flight is None:
                    self._flights[key] = Flight()
                    mine.append(key)
                else:
                    theirs[key] = flight
        return mine, theirs

    def land(self, key: tuple[str, int], held: Held | None = None, error: BaseException | None = None) -> None:
        """End this thread's flight for ``key`` with its block (kept) or its error; wake the
        threads waiting for it."""
        if held is not None:
            self.put(key, held)
        with self._lock:
            flight = self._flights.pop(key, None)
        if flight is not None:
            flight.held, flight.error = held, error
            flight.event.set()

    def clear(self) -> None:
        with self._lock:
            self._blocks.clear()
            self.bytes = 0
