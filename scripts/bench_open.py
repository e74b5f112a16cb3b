#!/usr/bin/env python3
"""What opening an image costs: time per open (page cache warm) and the reads it makes.

    scripts/bench_open.py .bench/bench-rgb-20000x15000-256tile-jpeg.tif [--opens 2000]

Opens the file the way a worker does (storage -> blob -> source) many times and prints the
fastest, 10th percentile and median time of one open (the page cache is warm: this is the CPU
cost; on a shared machine the low percentiles are the steadiest), then opens it once more
through a blob that counts every read (tifffile's stream reads and positional reads) and
prints their number and bytes; then the same for opening plus the stored tile (1, 1) of
level 1, which is what a cold first tile costs besides its disk reads.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from typing import BinaryIO

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from iipsrv_py.sources.registry import open_source
from iipsrv_py.storage.local import LocalStorage


class CountingStream(io.RawIOBase):
    def __init__(self, raw: BinaryIO, reads: list[int]) -> None:
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
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        if data:
            self._reads.append(len(data))
        return len(data)


class CountingBlob:
    def __init__(self, blob) -> None:  # type: ignore[no-untyped-def]
        self._blob = blob
        self.identity = blob.identity
        self.name = blob.name
        self.reads: list[int] = []
        self._stream = CountingStream(blob.stream(), self.reads)

    def stream(self) -> BinaryIO:
        self._stream.seek(0)
        return self._stream  # type: ignore[return-value]

    def read_at(self, offset: int, length: int) -> bytes:
        data = self._blob.read_at(offset, length)
        self.reads.append(len(data))
        return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--opens", type=int, default=2000)
    args = parser.parse_args()
    directory, name = os.path.split(os.path.abspath(args.path))
    storage = LocalStorage(directory + "/")

    def open_once(tile: bool) -> None:
        blob = storage.open(*storage.resolve(name))
        try:
            source = open_source(blob)
            if tile:
                source.raw_tile(1, 1, 1)
        finally:
            blob.close()

    for label, tile in (("open", False), ("open + a stored tile of level 1", True)):
        for _ in range(50):
            open_once(tile)
        times = []
        for _ in range(args.opens):
            started = time.perf_counter()
            open_once(tile)
            times.append(time.perf_counter() - started)
        blob = CountingBlob(storage.open(*storage.resolve(name)))
        source = open_source(blob)  # type: ignore[arg-type]
        if tile:
            source.raw_tile(1, 1, 1)
        times.sort()
        print(
            f"{label}: min {times[0] * 1e3:.3f} ms, p10 {times[len(times) // 10] * 1e3:.3f} ms, "
            f"median {statistics.median(times) * 1e3:.3f} ms over {args.opens}; "
            f"{len(blob.reads)} reads, {sum(blob.reads)} bytes"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
