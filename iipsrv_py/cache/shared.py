"""What the workers of a pool, and the pools of several machines, share: bytes under string keys.

Memcached (``cache/memcached.py``) when MEMCACHED_SERVERS is set, else ``NO_SHARING``.  Users:
whole responses under the one cache key (``cache/keys.py``), and S3 blocks (``storage/s3.py``),
so a second worker or machine neither renders again nor reads the store again.  A shared cache
never fails a request: every failure is a miss (or a False) and a throttled log line.
"""

from __future__ import annotations

from typing import Protocol


class SharedCache(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        """The values found, by key (missing keys left out)."""
        ...

    def set(self, key: str, value: bytes, expire: int = 0) -> None:
        """Store, unless the value is larger than the servers accept (then nothing)."""
        ...

    def add(self, key: str, value: bytes, expire: int) -> bool:
        """Store only if absent; True when this call stored it (a lock between processes)."""
        ...

    def delete(self, key: str) -> None: ...


class NoSharing:
    """Nothing shared: every get is a miss, every add succeeds (no one else competes)."""

    def get(self, key: str) -> bytes | None:
        return None

    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        return {}

    def set(self, key: str, value: bytes, expire: int = 0) -> None:
        return None

    def add(self, key: str, value: bytes, expire: int) -> bool:
        return True

    def delete(self, key: str) -> None:
        return None


NO_SHARING = NoSharing()
