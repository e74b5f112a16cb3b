"""A worker's open images: identifier -> location -> opened source.

Opening a pyramid (parsing IFDs, building decoders) is the expensive part of a metadata
request, so opened sources are kept in an LRU of MAX_METADATA_CACHE_SIZE entries.  Every use
revalidates the entry against a fresh stat of the file (one syscall), so a replaced or
rewritten file is reopened, never served stale.  An image that leaves the LRU has its file
closed before the next request (not at once: the request that pushed it out may still be
reading it).
"""

from __future__ import annotations

import logging

from . import metrics
from .cache.lru import LRUCache
from .cache.store import WorkerCache
from .errors import NotFound
from .model import SourceIdentity
from .sources.base import ImageSource
from .sources.registry import open_source
from .sources.sequence import SequenceSource
from .storage.base import Storage

log = logging.getLogger(__name__)

ASSOCIATED_SEPARATOR = "::"


class Catalog:
    def __init__(
        self, storage: Storage, max_images: int, filename_pattern: str = "", cache: WorkerCache | None = None
    ) -> None:
        self.storage = storage
        self.filename_pattern = filename_pattern
        self.cache = cache  # the worker cache, where sources keep whole decoded levels
        self._closing: list[ImageSource] = []
        self._images: LRUCache[ImageSource] = LRUCache(max_items=max_images, on_evict=self._closing.append)
        # (identifier, identity) of every image opened since begin_request(): what a response
        # cached for reuse must be revalidated against.
        self.opened: list[tuple[str, SourceIdentity]] = []

    def begin_request(self) -> None:
        self.opened.clear()
        self._close_evicted()

    def _close_evicted(self) -> None:
        closing, self._closing[:] = list(self._closing), []
        for source in closing:
            try:
                source.close()
            except Exception:
                log.warning("closing %s failed", source.name, exc_info=True)

    def open(self, identifier: str) -> ImageSource:
        """The image an identifier names.  When no file has that name: an image sequence
        (``<identifier><FILENAME_PATTERN><hhh>_<vvv>.<ext>`` files), or, for
        ``<identifier>::<name>``, one of the image's associated images (a slide's label,
        macro or thumbnail)."""
        try:
            return self._open(identifier)
        except NotFound:
            members = self.storage.sequence(identifier, self.filename_pattern)
            if members:
                return SequenceSource(members, self._open)
            base, separator, name = identifier.rpartition(ASSOCIATED_SEPARATOR)
            if not separator or not base or not name:
                raise
        return self._open(base).associated(name)

    def _open(self, identifier: str) -> ImageSource:
        location, identity = self.storage.resolve(identifier)
        self.opened.append((identifier, identity))
        source = self._images.get(location)
        if source is not None:
            if source.identity == identity:
                metrics.lookup("metadata", True)
                return source
            log.info("image changed on storage, reopening: %s", location)
        metrics.lookup("metadata", False)
        source = open_source(self.storage.open(location, identity), self.cache)
        self._images.put(location, source)
        return source

    def still_current(self, sources: tuple[tuple[str, SourceIdentity], ...]) -> bool:
        """Whether each identifier still resolves, inside the root, to the same bytes."""
        return all(self.storage.unchanged(ident, identity) for ident, identity in sources)

    def clear(self) -> None:
        """Forget every opened image (SIGHUP) and what storage remembers of paths."""
        self._images.clear()
        self._close_evicted()
        self.storage.clear()
