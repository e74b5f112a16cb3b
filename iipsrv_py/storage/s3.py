"""Images in an S3 bucket (or an S3-compatible store): ``FILESYSTEM_PREFIX=s3://bucket/prefix/``.

The key of an identifier is ``prefix + identifier + FILESYSTEM_SUFFIX``, the identifier
normalised as for local files (``..``, NUL and backslashes refused), so no identifier names a
key outside the prefix.  An object's identity is what a HEAD says: its key, Last-Modified,
size and ETag.  It keys every cache (blocks, tiles, responses, ETags), and is trusted for
S3_IDENTITY_TTL seconds: within that time an image costs no request to resolve or revalidate;
after it, one HEAD.  A replaced object therefore shows its new pixels at most that long after
the change, and never a mix: blocks are keyed by the identity, and every ranged GET carries
``If-Match`` with the ETag the blocks are filed under.

Reads go through ``RangeReader`` (aligned blocks, coalesced ranged GETs, a per-worker block
LRU of S3_CACHE_SIZE MB, single flight within and across processes).  Nothing is ever
downloaded whole unless a reader asks for every byte (a plain JPEG is decoded from all of
its bytes), and then still as ranged GETs of blocks.
"""

from __future__ import annotations

import posixpath
import threading
import time
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from ..cache.shared import SharedCache
from ..errors import NotFound, ServerError
from ..model import SourceIdentity
from ..settings import Settings
from .blocks import BlockCache
from .listing import MAX_LISTED
from .local import normalise_identifier, sequence_members
from .range_reader import RangeReader
from .s3_client import NOT_FOUND, S3Client, parse_url
from .stream import PositionalStream

MIB = 1024 * 1024


class S3Blob:
    """One version of one object, read through the worker's block cache."""

    def __init__(self, reader: RangeReader, identity: SourceIdentity, name: str) -> None:
        self.identity = identity
        self.name = name
        self.reader = reader
        self._stream = PositionalStream(self.read_structure, identity.size, name)

    def stream(self) -> BinaryIO:
        self._stream.seek(0)
        return self._stream  # type: ignore[return-value]

    def read_at(self, offset: int, length: int) -> bytes:
        return self.reader.read(offset, length)

    def read_structure(self, offset: int, length: int) -> bytes:
        """A read of the file's structure: its block is needed only from the read on."""
        return self.reader.read(offset, length, structure=True)

    def close(self) -> None:
        """Nothing to release: the blocks stay in the worker's cache, the connections in the pool."""


class S3Storage:
    # Identities remembered per identifier; the table is emptied when it grows past this.
    MAX_REMEMBERED = 10_000

    def __init__(self, settings: Settings, shared: SharedCache) -> None:
        self.bucket, self.prefix = parse_url(settings.filesystem_prefix)
        self.suffix = settings.filesystem_suffix
        self.ttl = settings.s3_identity_ttl
        self.block_size = settings.s3_block_size
        self.client = S3Client(settings)
        self.blocks = BlockCache(int(settings.s3_cache_mb * MIB))
        self.shared = shared
        self.shared_expire = settings.memcached_timeout
        # A thread waits this long for another's fetch (or a lock holder's): every attempt's
        # connect and read timeouts, and botocore's backoff between them (at most 2^n s).
        attempts = settings.s3_retries + 1
        self.wait_seconds = attempts * (settings.s3_connect_timeout + settings.s3_read_timeout) + 2.0**attempts
        # identifier -> (checked at, location, identity or None for "no such key")
        self._known: dict[str, tuple[float, str, SourceIdentity | None]] = {}
        self._listings: dict[str, tuple[float, list[tuple[int, int, str]]]] = {}
        # Threads resolving the same identifier send one HEAD: one lock per stripe of names.
        self._resolving = [threading.Lock() for _ in range(64)]

    def key_of(self, identifier: str) -> str:
        return self.prefix + normalise_identifier(identifier) + self.suffix

    def location_of(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def resolve(self, identifier: str) -> tuple[str, SourceIdentity]:
        """``(location, identity)``: from memory within S3_IDENTITY_TTL, else from one HEAD."""
        known = self._fresh(identifier)
        if known is None:
            lock = self._resolving[zlib.crc32(identifier.encode("utf-8", "surrogateescape")) % len(self._resolving)]
            with lock:
                known = self._fresh(identifier) or self._head(identifier)
        location, identity = known
        if identity is None:
            raise NotFound(NOT_FOUND, f"no such key: {location}")
        return location, identity

    def _fresh(self, identifier: str) -> tuple[str, SourceIdentity | None] | None:
        known = self._known.get(identifier)
        if known is None or time.monotonic() - known[0] >= self.ttl:
            return None
        return known[1], known[2]

    def _head(self, identifier: str) -> tuple[str, SourceIdentity | None]:
        key = self.key_of(identifier)
        location = self.location_of(key)
        identity: SourceIdentity | None
        try:
            head = self.client.head(self.bucket, key)
        except NotFound:
            identity = None  # remembered too: a missing key costs one HEAD per TTL
        else:
            identity = SourceIdentity(location, head.mtime, head.size, head.etag)
        if len(self._known) >= self.MAX_REMEMBERED:
            self._known.clear()
        self._known[identifier] = (time.monotonic(), location, identity)
        return location, identity

    def unchanged(self, identifier: str, identity: SourceIdentity) -> bool:
        """Within the TTL, from memory; after it, one HEAD.  False when the object is gone,
        replaced or cannot be checked (the request then resolves it again and reports why)."""
        try:
            return self.resolve(identifier)[1] == identity
        except ServerError:
            return False

    def sequence(self, identifier: str, pattern: str) -> list[tuple[int, int, str]]:
        """Members of an image sequence: keys ``<identifier><pattern><hhh>_<vvv>.<ext>`` (one
        LIST of that prefix, remembered for S3_IDENTITY_TTL)."""
        if not pattern:
            return []
        relative = normalise_identifier(identifier)
        head = self.prefix + relative + pattern
        cached = self._listings.get(head)
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        keys = self.client.list_keys(self.bucket, head, limit=10_000)
        members = sequence_members((key[len(head) :] for key in keys), relative, pattern, self.suffix)
        if len(self._listings) >= self.MAX_REMEMBERED:
            self._listings.clear()
        self._listings[head] = (time.monotonic(), members)
        return members

    def open(self, location: str, identity: SourceIdentity) -> S3Blob:
        key = location[len(f"s3://{self.bucket}/") :]
        etag = identity.version

        def fetch(start: int, end: int) -> bytes:
            return self.client.get_range(self.bucket, key, start, end, etag)

        reader = RangeReader(
            identity.token,
            identity.size,
            self.block_size,
            fetch,
            self.blocks,
            self.shared,
            self.wait_seconds,
            self.shared_expire,
        )
        return S3Blob(reader, identity, posixpath.basename(key))

    def list_names(self) -> Iterator[str]:
        """The keys under the prefix, without it (one LIST request per 1000 keys)."""
        for key in self.client.list_keys(self.bucket, self.prefix, MAX_LISTED):
            yield key[len(self.prefix) :]

    def clear(self) -> None:
        """SIGHUP: forget identities, listings and blocks."""
        self._known.clear()
        self._listings.clear()
        self.blocks.clear()
