"""The block reader of object storage (storage/blocks.py, storage/range_reader.py), against an
in-memory object: what a read returns (the object's own bytes), what it fetches (aligned
ranges, each byte once while cached, adjacent misses in one request), and single flight
between threads and, through a shared cache, between readers of separate caches."""

from __future__ import annotations

import random
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iipsrv_py.cache.shared import NO_SHARING
from iipsrv_py.errors import StorageUnavailable
from iipsrv_py.storage.blocks import BlockCache, Held, missing_ranges, needed, split_range
from iipsrv_py.storage.range_reader import RangeReader

B = 1024  # block size of these tests
OBJECT = random.Random(5).randbytes(10 * B + 300)


class Store:
    """The object, recording every range fetched; optionally slow or failing."""

    def __init__(self, data: bytes = OBJECT, delay: float = 0.0) -> None:
        self.data = data
        self.delay = delay
        self.fetched: list[tuple[int, int]] = []
        self.fail = False
        self._lock = threading.Lock()

    def fetch(self, start: int, end: int) -> bytes:
        with self._lock:
            self.fetched.append((start, end))
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise StorageUnavailable("image storage unavailable", "test store down")
        return self.data[start:end]


class FakeShared:
    """A SharedCache in memory: what several worker processes share through memcached."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self.values.get(key)

    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        with self._lock:
            return {k: self.values[k] for k in keys if k in self.values}

    def set(self, key: str, value: bytes, expire: int = 0) -> None:
        with self._lock:
            self.values[key] = value

    def add(self, key: str, value: bytes, expire: int) -> bool:
        with self._lock:
            if key in self.values:
                return False
            self.values[key] = value
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self.values.pop(key, None)


def reader(store: Store, cache: BlockCache | None = None, shared=NO_SHARING, token: str = "t") -> RangeReader:
    cache = BlockCache(1 << 20) if cache is None else cache
    return RangeReader(token, len(store.data), B, store.fetch, cache, shared, 5.0)


def test_needed_blocks_of_data_and_structure_reads():
    assert needed(0, 10, B, structure=False) == {0: 0}
    assert needed(B + 5, 3 * B + 1, B, structure=False) == {1: 0, 2: 0, 3: 0}
    # A structure read needs its first block only from its piece (B / 8) on ...
    assert needed(B + 300, B + 310, B, structure=True) == {1: 256}
    # ... except in the first block, which is needed whole (the header).
    assert needed(300, 310, B, structure=True) == {0: 0}


def test_missing_ranges_coalesce_adjacent_blocks_only():
    size = 10 * B
    assert missing_ranges({2: 0, 3: 0, 5: 0}, {}, B, size) == [(2 * B, 4 * B), (5 * B, 6 * B)]
    # Block 3 held from 512: its missing head does not join block 2's range, which ends at 3 * B.
    assert missing_ranges({2: 0, 3: 0}, {3: 512}, B, size) == [(2 * B, 3 * B + 512)]
    assert missing_ranges({2: 0, 3: 0}, {2: 0}, B, size) == [(3 * B, 4 * B)]
    assert missing_ranges({4: 256}, {4: 256}, B, size) == []
    # The last block is short.
    assert missing_ranges({9: 0}, {}, B, 9 * B + 10) == [(9 * B, 9 * B + 10)]


def test_split_range_joins_a_partial_block():
    size = 4 * B
    held = {1: Held(512, OBJECT[B + 512 : 2 * B])}
    out = split_range(B, OBJECT[B : B + 512], B, size, held)
    assert out == {1: Held(0, OBJECT[B : 2 * B])}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(OBJECT) + 50), st.integers(0, 3 * B), st.booleans()), max_size=30))
def test_reads_return_the_object_s_bytes_and_fetch_each_byte_once(reads):
    store = Store()
    r = reader(store)
    for offset, length, structure in reads:
        assert r.read(offset, length, structure) == OBJECT[offset : offset + length]
    # Every range starts and ends at piece boundaries (B / 8), or at the object's end.
    for start, end in store.fetched:
        assert start % (B // 8) == 0
        assert end % (B // 8) == 0 or end == len(OBJECT)
    # Nothing was fetched twice: the cache (1 MiB) holds the whole object.
    covered = bytearray(len(OBJECT))
    for start, end in store.fetched:
        assert not any(covered[start:end])
        covered[start:end] = b"\1" * (end - start)


def test_a_read_over_missing_adjacent_blocks_is_one_request():
    store = Store()
    r = reader(store)
    r.read(2 * B + 10, 10)
    r.read(5 * B + 10, 10)
    store.fetched.clear()
    assert r.read(B, 6 * B) == OBJECT[B : 7 * B]
    assert store.fetched == [(B, 2 * B), (3 * B, 5 * B), (6 * B, 7 * B)]


def test_a_structure_read_fetches_the_rest_of_its_block_and_a_later_read_before_it_its_head():
    store = Store()
    r = reader(store)
    r.read(3 * B + 700, 8, structure=True)
    assert store.fetched == [(3 * B + 640, 4 * B)]
    r.read(3 * B + 900, 100, structure=True)  # further on in the block: held
    assert len(store.fetched) == 1
    assert r.read(3 * B, 16) == OBJECT[3 * B : 3 * B + 16]  # a data read needs the whole block
    assert store.fetched[1:] == [(3 * B, 3 * B + 640)]


def test_the_cache_is_bounded_in_bytes_and_keyed_by_identity():
    cache = BlockCache(3 * B)
    store = Store()
    r = reader(store, cache)
    r.read(0, 8 * B)
    assert cache.bytes <= 3 * B and len(cache) == 3
    store.fetched.clear()
    r.read(7 * B, 10)  # among the last blocks read: held
    assert store.fetched == []
    other = reader(Store(bytes(len(OBJECT))), cache, token="replaced")
    assert other.read(7 * B, 10) == bytes(10)  # another identity never reads these blocks


def run_all(threads: list[threading.Thread]) -> None:
    """Start every thread, then wait for each (10 s at most)."""
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)


def test_threads_missing_the_same_block_fetch_it_once():
    store = Store(delay=0.2)
    r = reader(store)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(r.read(4 * B + 1, 2 * B))) for _ in range(32)]
    run_all(threads)
    assert results == [OBJECT[4 * B + 1 : 6 * B + 1]] * 32
    assert store.fetched == [(4 * B, 7 * B)]


def test_a_failed_fetch_fails_its_waiters_with_the_storage_error_and_the_next_read_tries_again():
    store = Store(delay=0.2)
    store.fail = True
    r = reader(store)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            r.read(0, 10)
        except StorageUnavailable as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(8)]
    run_all(threads)
    assert len(errors) == 8 and all(e.status == 502 for e in errors)
    assert len(store.fetched) == 1
    store.fail = False
    assert r.read(0, 10) == OBJECT[:10]


def test_readers_with_separate_caches_share_blocks_through_the_shared_cache():
    shared = FakeShared()
    store = Store()
    first = reader(store, BlockCache(1 << 20), shared)
    second = reader(store, BlockCache(1 << 20), shared)
    first.read(2 * B, 3 * B)
    first.read(8 * B + 900, 10, structure=True)
    count = len(store.fetched)
    assert second.read(2 * B, 3 * B) == OBJECT[2 * B : 5 * B]
    assert second.read(8 * B + 900, 10, structure=True) == OBJECT[8 * B + 900 : 8 * B + 910]
    assert len(store.fetched) == count
    # A block shared from too late an offset is completed by a fetch of its head only.
    assert second.read(8 * B, 10) == OBJECT[8 * B : 8 * B + 10]
    assert store.fetched[count:] == [(8 * B, 8 * B + 896)]
    assert not [k for k in shared.values if k.startswith("s3l:")]  # every lock released


def test_processes_missing_the_same_block_fetch_it_once_through_the_shared_lock():
    """Two "processes" (readers with caches of their own), 16 threads each, one cold block."""
    shared = FakeShared()
    store = Store(delay=0.3)
    readers = [reader(store, BlockCache(1 << 20), shared) for _ in range(2)]
    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda r=r: results.append(r.read(6 * B + 5, 100))) for r in readers for _ in range(16)
    ]
    run_all(threads)
    assert results == [OBJECT[6 * B + 5 : 6 * B + 105]] * 32
    assert store.fetched == [(6 * B, 7 * B)]


@pytest.mark.parametrize("cache_bytes", [0, B // 2])
def test_without_room_in_the_cache_reads_are_still_right(cache_bytes):
    store = Store()
    r = reader(store, BlockCache(cache_bytes))
    assert r.read(B - 5, 2 * B) == OBJECT[B - 5 : 3 * B - 5]
    assert r.read(B - 5, 2 * B) == OBJECT[B - 5 : 3 * B - 5]
