"""A bounded least-recently-used map, bounded by item count and/or by bytes.

Each pre-forked worker owns its caches; the lock only matters when a worker uses threads
(e.g. the plain-HTTP mode or parallel tile decoding), and costs nothing measurable otherwise.
A cache never fails a request: an item too large for it is simply not stored.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class LRUCache(Generic[V]):
    def __init__(
        self,
        max_items: int | None = None,
        max_bytes: int | None = None,
        on_evict: Callable[[V], None] | None = None,
    ) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._on_evict = on_evict
        self._data: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: V, size: int = 1) -> None:
        if self.max_items == 0 or (self.max_bytes is not None and size > self.max_bytes):
            return
        evicted: list[V] = []
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
                if old[0] is not value:
                    evicted.append(old[0])
            self._data[key] = (value, size)
            self._bytes += size
            while self._data and (
                (self.max_items is not None and len(self._data) > self.max_items)
                or (self.max_bytes is not None and self._bytes > self.max_bytes)
            ):
                _, (gone, gone_size) = self._data.popitem(last=False)
                self._bytes -= gone_size
                evicted.append(gone)
        self._release(evicted)

    def pop(self, key: Hashable) -> V | None:
        with self._lock:
            item = self._data.pop(key, None)
            if item is None:
                return None
            self._bytes -= item[1]
        return item[0]

    def clear(self) -> None:
        with self._lock:
            values = [value for value, _ in self._data.values()]
            self._data.clear()
            self._bytes = 0
        self._release(values)

    def _release(self, values: list[V]) -> None:
        # Called outside the lock: closing a file must not block other cache users.
        if self._on_evict is None:
            return
        for value in values:
            try:
                self._on_evict(value)
            except Exception:  # noqa: BLE001 - eviction must never fail a request
                pass
