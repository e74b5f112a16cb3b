"""One byte budget for everything a worker keeps of pixels and responses.

Whole responses, decoded source tiles, decoded strips of stripped TIFFs, whole decoded levels
(JPEG files, the small virtual levels of JPEG 2000 images, slides' label and macro pictures)
and the index from request text to response key all live in one ``WorkerCache`` of
``MAX_IMAGE_CACHE_SIZE`` megabytes, so the memory a worker can hold beyond its opened images
is one stated number.  The opened images themselves are counted apart
(``MAX_METADATA_CACHE_SIZE``, catalog.py).

Keys are tuples whose first item says what the entry is (``"resp"``, ``"px"``, ``"strip"``,
``"level"``, ``"alias"``) and whose second is the source identity token or the response key,
so entries of a changed file can never be found again; they age out.  An entry larger than a
quarter of the budget is not kept, so that one outsized decode cannot flush everything else.
A cache never fails a request.
"""

from __future__ import annotations

from collections.abc import Hashable

from .lru import LRUCache

MAX_ENTRY_SHARE = 4  # an entry may take at most 1/MAX_ENTRY_SHARE of the budget


class WorkerCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, max_bytes)
        self.max_entry = self.max_bytes // MAX_ENTRY_SHARE
        self._lru: LRUCache[object] = LRUCache(max_bytes=self.max_bytes)

    def get(self, key: Hashable) -> object | None:
        return self._lru.get(key)

    def put(self, key: Hashable, value: object, size: int) -> None:
        if size <= self.max_entry:
            self._lru.put(key, value, size)

    def pop(self, key: Hashable) -> None:
        self._lru.pop(key)

    def clear(self) -> None:
        self._lru.clear()

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def nbytes(self) -> int:
        return self._lru.nbytes

    @property
    def hits(self) -> int:
        return self._lru.hits

    @property
    def misses(self) -> int:
        return self._lru.misses


# For a source opened without a worker cache (tests, tools): keeps nothing.
NO_CACHE = WorkerCache(0)
