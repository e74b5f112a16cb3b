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
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from iipsrv_py.sources.registry import open_source
from iipsrv_py.storage.local import LocalStorage
from tests.recording import RecordingBlob


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
        blob = RecordingBlob(storage.open(*storage.resolve(name)))
        source = open_source(blob)  # type: ignore[arg-type]
        if tile:
            source.raw_tile(1, 1, 1)
        times.sort()
        print(
            f"{label}: min {times[0] * 1e3:.3f} ms, p10 {times[len(times) // 10] * 1e3:.3f} ms, "
            f"median {statistics.median(times) * 1e3:.3f} ms over {args.opens}; "
            f"{len(blob.reads)} reads, {blob.bytes_read} bytes"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
