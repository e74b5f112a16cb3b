"""One remote object read through the block cache: reads become ranged fetches of blocks.

A read works out the blocks it needs (``blocks.needed``), takes what the worker's block cache
holds, and fetches the rest, each block once however many threads and processes want it:

* threads of this process: the first thread to miss a block fetches it, the others wait for
  that flight (``BlockCache.claim``/``land``) and share its result or its error;
* other worker processes and machines, through the shared cache (memcached, or nothing): a
  fetched block is published there under the object's identity token and the block index;
  before fetching, a process looks there, then takes a short lock on the block with ``add``.
  A process that finds the block locked waits a little for the holder to publish it and then
  reads it from the shared cache; if the holder is slow or failed, it fetches the block itself.
  With NO_SHARING every lookup misses and every ``add`` succeeds: per process, as before.

Fetching is ``fetch(start, end)``: the bytes ``[start, end)`` of the object (one ranged GET),
raising the storage errors of ``errors.py``.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from ..cache.shared import SharedCache
from ..errors import ServerError, StorageTimeout
from .blocks import BlockCache, Held, missing_ranges, needed, split_range

Fetch = Callable[[int, int], bytes]
_START = struct.Struct(">I")  # a shared block's value: the offset it is held from, then its bytes
# Waiting for another worker's fetch: the first look after 5 ms, then at doubling intervals up
# to 100 ms, so a long wait costs tens of memcached round trips, not thousands.
POLL_SECONDS = 0.005
MAX_POLL_SECONDS = 0.1


def shared_value(held: Held) -> bytes:
    return _START.pack(held.start) + held.data


def from_shared(value: bytes | None) -> Held | None:
    if value is None or len(value) < _START.size:
        return None
    return Held(_START.unpack_from(value)[0], value[_START.size :])


class RangeReader:
    """The bytes of one object version (``token``, ``size`` bytes) through aligned blocks."""

    def __init__(
        self,
        token: str,
        size: int,
        block_size: int,
        fetch: Fetch,
        cache: BlockCache,
        shared: SharedCache,
        wait_seconds: float,
        shared_expire: int = 0,
    ) -> None:
        """``wait_seconds``: how long a thread waits for another's fetch, and a process for
        another's lock, before giving up (a bound on one fetch with its retries)."""
        self.token = token
        self.size = size
        self.block_size = block_size
        self._fetch = fetch
        self._cache = cache
        self._shared = shared
        self._wait = wait_seconds
        self._expire = shared_expire
        self._lock_seconds = max(1, int(wait_seconds + 1))

    def read(self, offset: int, length: int, structure: bool = False) -> bytes:
        """``length`` bytes at ``offset`` (fewer at the end of the object).  ``structure``:
        a read of the file's structure (header, IFDs), which needs its block only from its own
        piece on (module ``blocks``)."""
        end = min(offset + length, self.size)
        if offset < 0 or offset >= end:
            return b""
        wanted = needed(offset, end, self.block_size, structure)
        got = self._blocks(wanted)
        B = self.block_size
        parts = []
        for index in sorted(wanted):
            held = got[index]
            base = index * B + held.start
            parts.append(held.data[max(offset, base) - base : min(end, index * B + B) - base])
        return b"".join(parts)

    # -- blocks --------------------------------------------------------------------------------

    def _key(self, index: int) -> tuple[str, int]:
        return (self.token, index)

    def _shared_key(self, index: int) -> str:
        return f"s3b:{self.block_size}:{self.token}:{index}"

    def _lock_key(self, index: int) -> str:
        return f"s3l:{self.block_size}:{self.token}:{index}"

    def _blocks(self, wanted: dict[int, int]) -> dict[int, Held]:
        """Each wanted block held from (at most) its needed offset."""
        got: dict[int, Held] = {}
        for _ in range(4):  # a flight we waited for may have fetched less than we need
            partial: dict[int, Held] = {}
            lacking: dict[int, int] = {}
            for index, need in wanted.items():
                held = got.get(index) or self._cache.get(self._key(index))
                if held is not None and held.start <= need:
                    got[index] = held
                    continue
                lacking[index] = need
                if held is not None:
                    partial[index] = held
            if not lacking:
                return got
            mine, theirs = self._cache.claim(self._key(i) for i in sorted(lacking))
            if mine:
                indices = [key[1] for key in mine]
                try:
                    fetched = self._fetch_blocks({i: lacking[i] for i in indices}, partial)
                except BaseException as exc:
                    for key in mine:
                        self._cache.land(key, error=exc)
                    raise
                for key in mine:
                    self._cache.land(key, held=fetched.get(key[1]))
                got.update(fetched)
            for key, flight in theirs.items():
                if not flight.event.wait(self._wait):
                    raise StorageTimeout("storage timed out", f"waited {self._wait:.1f}s for block {key[1]}")
                if flight.error is not None:
                    raise _again(flight.error)
                if flight.held is not None and flight.held.start <= lacking[key[1]]:
                    got[key[1]] = flight.held
        missing = [i for i in wanted if i not in got]
        if missing:  # every round met a flight that fetched less: fetch what is left ourselves
            got.update(self._get({i: wanted[i] for i in missing}, {}))
        return got

    def _fetch_blocks(self, lacking: dict[int, int], partial: dict[int, Held]) -> dict[int, Held]:
        """Blocks from the shared cache, else fetched from the store under a shared lock."""
        partial = dict(partial)
        result: dict[int, Held] = {}
        pending = dict(lacking)
        for _ in range(3):
            result.update(self._from_shared(pending, partial))
            pending = {i: n for i, n in pending.items() if i not in result}
            if not pending:
                return result
            locked = {i: n for i, n in pending.items() if self._shared.add(self._lock_key(i), b"1", self._lock_seconds)}
            try:
                # Looked up again under the lock: a holder that published and unlocked between
                # our first look and our lock has fetched it already.
                result.update(self._from_shared(locked, partial))
                result.update(self._get({i: n for i, n in locked.items() if i not in result}, partial))
            finally:
                for index in locked:
                    self._shared.delete(self._lock_key(index))
            contended = {i: n for i, n in pending.items() if i not in locked}
            if not contended:
                return result
            published, pending = self._wait_for_others(contended, partial)
            result.update(published)
            if not pending:
                return result
        result.update(self._get(pending, partial))  # locked by others round after round: fetch here
        return result

    def _from_shared(self, lacking: dict[int, int], partial: dict[int, Held]) -> dict[int, Held]:
        """The blocks the shared cache holds from (at most) their needed offsets, kept here too;
        a block held there from too late an offset goes into ``partial`` when it has more."""
        if not lacking:
            return {}
        found = self._shared.get_many([self._shared_key(i) for i in lacking])
        result: dict[int, Held] = {}
        for index, need in lacking.items():
            held = from_shared(found.get(self._shared_key(index)))
            if held is None:
                continue
            if held.start <= need:
                result[index] = held
                self._cache.put(self._key(index), held)
            elif index not in partial or held.start < partial[index].start:
                partial[index] = held
        return result

    def _wait_for_others(
        self, contended: dict[int, int], partial: dict[int, Held]
    ) -> tuple[dict[int, Held], dict[int, int]]:
        """Blocks another process holds the lock of, read from the shared cache once published:
        ``(blocks, blocks whose holder finished without publishing enough of them)``, the
        latter to be locked and completed here.  A block whose holder is still at it when the
        wait ends (slow or gone) is fetched here."""
        result: dict[int, Held] = {}
        again: dict[int, int] = {}
        deadline = time.monotonic() + self._wait
        pending = dict(contended)
        pause = POLL_SECONDS
        while pending and time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(pause * 2, MAX_POLL_SECONDS)
            result.update(self._from_shared(pending, partial))
            for index in [i for i in pending if i in result]:
                del pending[index]
            if pending:
                locks = self._shared.get_many([self._lock_key(i) for i in pending])
                for index in [i for i in pending if self._lock_key(i) not in locks]:
                    again[index] = pending.pop(index)  # unlocked, but not enough was published
        if pending:
            result.update(self._get(pending, partial))
        return result, again

    def _get(self, lacking: dict[int, int], partial: dict[int, Held]) -> dict[int, Held]:
        """Fetch the missing parts of blocks from the store: one request per run of adjacent
        missing bytes.  Kept in the worker's cache and published in the shared cache."""
        if not lacking:
            return {}
        B = self.block_size
        held_from = {i: h.start for i, h in partial.items() if i in lacking}
        result: dict[int, Held] = {}
        for start, end in missing_ranges(lacking, held_from, B, self.size):
            data = self._fetch(start, end)
            if len(data) != end - start:
                raise ServerError("storage returned a short read", f"{len(data)} of {end - start} bytes at {start}")
            result.update(split_range(start, data, B, self.size, partial))
        for index, held in result.items():
            self._cache.put(self._key(index), held)
            self._shared.set(self._shared_key(index), shared_value(held), self._expire)
        return result


def _again(error: BaseException) -> BaseException:
    """The error of another thread's fetch, for this thread to raise (a new exception object:
    one object raised in several threads at once would share one traceback)."""
    if isinstance(error, ServerError):
        again = type(error).__new__(type(error))
        again.__dict__.update(error.__dict__)
        again.args = error.args
        again.__cause__ = error
        return again
    failed = ServerError("storage read failed", f"{type(error).__name__}: {error}")
    failed.__cause__ = error
    return failed
