"""A seekable read-only file object over positional reads, for readers that want a stream
(tifffile, Pillow, glymur's box parsers)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any


class PositionalStream(io.RawIOBase):
    """``read(offset, length) -> bytes`` as a seekable binary file of ``size`` bytes.

    Unbuffered on purpose: every read goes to ``read`` with its own position and length, which
    is what lets the object's reader fetch only the structure a parser asks for."""

    def __init__(self, read: Callable[[int, int], bytes], size: int, name: str) -> None:
        super().__init__()
        self._read = read
        self._size = size
        self._position = 0
        self.name = name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._position + offset
        elif whence == io.SEEK_END:
            position = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if position < 0:
            raise OSError("negative seek position")
        self._position = position
        return position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._read(self._position, len(view))
        view[: len(data)] = data
        self._position += len(data)
        return len(data)

    def readall(self) -> bytes:
        data = self._read(self._position, max(0, self._size - self._position))
        self._position += len(data)
        return data
