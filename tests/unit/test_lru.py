"""The bounded LRU behind every in-process cache."""

from __future__ import annotations

from iipsrv_py.cache.lru import LRUCache


def test_least_recently_used_item_goes_first() -> None:
    cache: LRUCache[str] = LRUCache(max_items=2)
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == "A"  # a is now the most recent
    cache.put("c", "C")
    assert cache.get("b") is None
    assert cache.get("a") == "A" and cache.get("c") == "C"


def test_byte_bound_is_never_exceeded() -> None:
    cache: LRUCache[bytes] = LRUCache(max_bytes=100)
    for i in range(50):
        cache.put(i, b"x" * 30, 30)
        assert cache.nbytes <= 100
    assert len(cache) == 3
    assert cache.get(49) is not None and cache.get(46) is None


def test_item_larger_than_the_cache_is_not_stored_and_evicts_nothing() -> None:
    cache: LRUCache[bytes] = LRUCache(max_bytes=100)
    cache.put("small", b"s", 1)
    cache.put("huge", b"h" * 200, 200)
    assert cache.get("huge") is None
    assert cache.get("small") == b"s"


def test_replacing_a_key_keeps_the_byte_count_right() -> None:
    cache: LRUCache[bytes] = LRUCache(max_bytes=100)
    cache.put("k", b"1", 60)
    cache.put("k", b"2", 30)
    assert cache.nbytes == 30 and cache.get("k") == b"2"


def test_zero_items_means_no_caching() -> None:
    cache: LRUCache[str] = LRUCache(max_items=0)
    cache.put("a", "A")
    assert cache.get("a") is None


def test_evicted_values_are_released_and_failures_ignored() -> None:
    released: list[str] = []

    def release(value: str) -> None:
        released.append(value)
        raise RuntimeError("closing failed")

    cache: LRUCache[str] = LRUCache(max_items=1, on_evict=release)
    cache.put("a", "A")
    cache.put("b", "B")
    cache.clear()
    assert released == ["A", "B"]
    assert len(cache) == 0
