"""Images on the local filesystem, confined to FILESYSTEM_PREFIX.

The location of an identifier is ``FILESYSTEM_PREFIX + identifier + FILESYSTEM_SUFFIX``, as in
iipsrv, but the identifier is normalised first and may not leave the root: NUL bytes,
backslashes and ``..`` segments are refused, leading slashes only mean "from the root", and the
fully resolved path (symlinks followed) must still lie inside the resolved root.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from ..errors import NotFound, StorageUnavailable
from ..model import SourceIdentity
from .listing import local_names

_NOT_FOUND = "image not found"
# The angles part of an image sequence member's name: <hhh>_<vvv>.<ext>
_ANGLES = re.compile(r"(\d{3})_(\d{3})\.[A-Za-z0-9]+")


def sequence_members(rests: Iterable[str], relative: str, pattern: str, suffix: str) -> list[tuple[int, int, str]]:
    """``(horizontal angle, vertical angle, member identifier)`` of the names that follow
    ``<relative><pattern>`` (``rests``: what comes after it) and are sequence members,
    ``<hhh>_<vvv>.<ext>`` ending with ``suffix``; sorted.  Local and S3 storages list alike."""
    members = []
    for rest in rests:
        angles = _ANGLES.fullmatch(rest)
        if angles is None or (suffix and not rest.endswith(suffix)):
            continue
        member = relative + pattern + rest[: len(rest) - len(suffix)]
        members.append((int(angles.group(1)), int(angles.group(2)), member))
    return sorted(members)


def normalise_identifier(identifier: str) -> str:
    """The identifier as a clean relative path, or NotFound when it could escape the root."""
    if "\0" in identifier or "\\" in identifier:
        raise NotFound(_NOT_FOUND, f"refused identifier with NUL or backslash: {identifier!r}")
    parts = [part for part in identifier.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise NotFound(_NOT_FOUND, f"refused identifier: {identifier!r}")
    return "/".join(parts)


class LocalBlob:
    def __init__(self, path: str, identity: SourceIdentity) -> None:
        self.identity = identity
        self.name = os.path.basename(path)
        # For readers that can only open files by name (glymur); other storage has none.
        self.path = path
        # Unbuffered: tifffile does its own reads, and tiles use pread, which neither
        # moves nor depends on the stream position.
        self._file: BinaryIO = open(path, "rb", buffering=0)  # noqa: SIM115 - lives with the blob
        self._fd = self._file.fileno()

    def stream(self) -> BinaryIO:
        self._file.seek(0)
        return self._file

    def read_at(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def close(self) -> None:
        self._file.close()


class LocalStorage:
    # Resolved paths remembered per location, so that a warm request costs one stat instead
    # of a realpath (an lstat per path component).  Bounded: emptied when it grows past this.
    MAX_RESOLVED = 10_000

    def __init__(self, prefix: str, suffix: str = "") -> None:
        self.prefix = prefix
        self.suffix = suffix
        # A prefix that does not end in "/" is a path prefix ("/data/img_"): the root that
        # identifiers must stay in is its directory.  An empty prefix means the working
        # directory, never the whole filesystem.
        root = prefix if prefix.endswith("/") else os.path.dirname(prefix)
        self.root = os.path.realpath(root or ".")
        self._resolved: dict[str, tuple[str, int, int]] = {}
        self._paths: dict[str, str] = {}

    def _stem(self, relative: str) -> str:
        """Where a normalised identifier leads, before FILESYSTEM_SUFFIX."""
        return self.prefix + relative if self.prefix else os.path.join(self.root, relative)

    def _path(self, identifier: str) -> str:
        # Remembered: a warm request revalidates its image through this on every request.
        path = self._paths.get(identifier)
        if path is None:
            path = self._stem(normalise_identifier(identifier)) + self.suffix
            if len(self._paths) >= self.MAX_RESOLVED:
                self._paths.clear()
            self._paths[identifier] = path
        return path

    def _inside(self, path: str, identifier: str) -> str:
        real = os.path.realpath(path)
        if real != self.root and not real.startswith(self.root + os.sep):
            raise NotFound(_NOT_FOUND, f"{identifier!r} resolves outside the root")
        return real

    def resolve(self, identifier: str) -> tuple[str, SourceIdentity]:
        """``(real path, identity)`` of an identifier's file, or NotFound.

        The real path is worked out again whenever the file the path leads to (following any
        links as they are now) is not the one it led to last time: a same device and inode
        means the very file that was found inside the root before.
        """
        path = self._path(identifier)
        st = self._stat(path)
        known = self._resolved.get(path)
        if known is not None and (known[1], known[2]) == (st.st_dev, st.st_ino):
            real = known[0]
        else:
            real = self._inside(path, identifier)
            if len(self._resolved) >= self.MAX_RESOLVED:
                self._resolved.clear()
            self._resolved[path] = (real, st.st_dev, st.st_ino)
        return real, self._identity(real, st)

    def sequence(self, identifier: str, pattern: str) -> list[tuple[int, int, str]]:
        """The members of an image sequence named by ``identifier``: files called
        ``<identifier><pattern><hhh>_<vvv>.<ext>`` beside where the image itself would be, as
        ``(horizontal angle, vertical angle, member identifier)``; empty when there are none.

        A member identifier resolves like any other (FILESYSTEM_SUFFIX appended), so with a
        suffix set the member files must end with it.
        """
        if not pattern:
            return []
        relative = normalise_identifier(identifier)
        directory, head = os.path.split(self._stem(relative) + pattern)
        try:
            names = os.listdir(directory or ".")
        except OSError:
            return []
        rests = (name[len(head) :] for name in names if name.startswith(head))
        return sequence_members(rests, relative, pattern, self.suffix)

    @staticmethod
    def _stat(path: str) -> os.stat_result:
        try:
            return os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(_NOT_FOUND, f"no such file: {path}") from None
        except OSError as exc:
            raise NotFound(_NOT_FOUND, f"cannot stat {path}: {exc.strerror}") from exc

    @staticmethod
    def _identity(location: str, st: os.stat_result) -> SourceIdentity:
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(_NOT_FOUND, f"not a regular file: {location}")
        return SourceIdentity(location, st.st_mtime, st.st_size, LocalStorage._version(st))

    @staticmethod
    def _version(st: os.stat_result) -> str:
        # The change time too: it moves when the file's mode or owner changes, so that a file
        # made unreadable (chmod 000, a common takedown) is opened again, and refused, instead
        # of being served on from the caches and the descriptor a worker already holds.
        return f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}:{st.st_ctime_ns}"

    def unchanged(self, identifier: str, identity: SourceIdentity) -> bool:
        """Whether ``identifier`` still leads, inside the root, to the very file of
        ``identity``: what a cached answer is revalidated with, one stat when nothing moved."""
        try:
            path = self._path(identifier)
            st = os.stat(path)
        except (OSError, NotFound):
            return False
        known = self._resolved.get(path)
        if known is None or (known[1], known[2]) != (st.st_dev, st.st_ino):
            try:  # the path leads to another file now: the whole check again
                return self.resolve(identifier)[1] == identity
            except NotFound:
                return False
        return (
            known[0] == identity.key
            and st.st_mtime == identity.mtime
            and st.st_size == identity.size
            and identity.version == self._version(st)
            and stat.S_ISREG(st.st_mode)
        )

    def list_names(self) -> Iterator[str]:
        try:
            yield from local_names(self.prefix)
        except OSError as exc:
            raise StorageUnavailable("image storage unreachable", f"listing {self.prefix!r}: {exc}") from exc

    def clear(self) -> None:
        self._resolved.clear()
        self._paths.clear()

    def open(self, location: str, identity: SourceIdentity) -> LocalBlob:
        try:
            return LocalBlob(location, identity)
        except OSError as exc:
            raise NotFound(_NOT_FOUND, f"cannot open {location}: {exc.strerror}") from exc
