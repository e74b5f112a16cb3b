"""A storage blob that records every read: ``(position, length)`` of tifffile's stream reads
and of positional reads.  Used by the tests that count what opening an image reads, and by
scripts/bench_open.py."""

from __future__ import annotations

import io
from typing import Any, BinaryIO


class RecordingStream(io.RawIOBase):
    """A file object that records ``(position, length)`` of every read."""

    def __init__(self, raw: BinaryIO, reads: list[tuple[int, int]]) -> None:
        self._raw = raw
        self._reads = reads

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def,override]
        position = self._raw.tell()
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        if data:
            self._reads.append((position, len(data)))
        return len(data)


class RecordingBlob:
    """Wraps a blob (storage/base.py); every byte read through it is recorded in ``reads``."""

    def __init__(self, blob: Any) -> None:
        self._blob = blob
        self.identity = blob.identity
        self.name = blob.name
        self.reads: list[tuple[int, int]] = []
        self._stream = RecordingStream(blob.stream(), self.reads)

    def stream(self) -> BinaryIO:
        self._stream.seek(0)
        return self._stream  # type: ignore[return-value]

    @property
    def bytes_read(self) -> int:
        return sum(length for _, length in self.reads)

    def read_at(self, offset: int, length: int) -> bytes:
        data: bytes = self._blob.read_at(offset, length)
        self.reads.append((offset, len(data)))
        return data

    def close(self) -> None:
        self._blob.close()
