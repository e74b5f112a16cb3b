"""What a format reader needs from storage: random-access bytes and an identity.

Readers never know whether bytes come from a local disk or an object store.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol

from ..model import SourceIdentity


class Blob(Protocol):
    """One opened object: a seekable stream for tifffile and positional reads for tiles."""

    identity: SourceIdentity
    name: str  # file name for Content-Disposition; never a full server path

    def stream(self) -> BinaryIO:
        """A seekable binary file object positioned at 0 (owned by the blob)."""
        ...

    def read_at(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; fewer only at the end of the object."""
        ...

    def close(self) -> None:
        """Release the object's file handle or connection; the blob is not used again."""
        ...


class Storage(Protocol):
    def resolve(self, identifier: str) -> tuple[str, SourceIdentity]:
        """``(location, current identity)`` of an identifier; NotFound when it is refused or gone."""
        ...

    def sequence(self, identifier: str, pattern: str) -> list[tuple[int, int, str]]:
        """``(horizontal angle, vertical angle, member identifier)`` of the image sequence
        ``identifier`` names (FILENAME_PATTERN), or an empty list."""
        ...

    def open(self, location: str, identity: SourceIdentity) -> Blob: ...

    def unchanged(self, identifier: str, identity: SourceIdentity) -> bool:
        """Whether ``identifier`` still resolves, inside the root, to the object of ``identity``
        (False when it is gone or refused, never an error)."""
        ...

    def list_names(self) -> Iterator[str]:
        """Every name under the root (files, or object keys), relative to the prefix, without
        opening anything (``listing.image_names`` keeps the images).  A root that cannot be
        listed is a StorageUnavailable (or the store's own error)."""
        ...

    def clear(self) -> None:
        """Forget what was remembered of locations (SIGHUP)."""
        ...
