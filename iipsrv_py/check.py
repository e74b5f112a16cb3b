"""``iipsrv-py check [ROOT] [--list-slides] [--test-slide ID]``: is the image storage usable?

Reaches the storage root (an ``s3://bucket/prefix/`` or a directory; FILESYSTEM_PREFIX unless
ROOT is given): one LIST request, or a directory listing.  ``--list-slides`` lists the images
under the root *by name* -- keys or files with an image file extension (and FILESYSTEM_SUFFIX,
when set), as identifiers -- without opening them, which would cost requests per image;
``--test-slide ID`` opens one image as the server would and decodes a tile of every level.
Prints what it found and what failed; exits 0 when everything worked, 1 when something failed,
2 on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from typing import TextIO

from .cache.shared import NO_SHARING
from .errors import ServerError
from .settings import Settings, with_root
from .sources.registry import open_source
from .storage import make_storage
from .storage.base import Storage
from .storage.listing import image_names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iipsrv-py check",
        description="Check that the image storage is reachable; list images; open one and decode a tile of each level.",
    )
    parser.add_argument("root", nargs="?", help="s3://bucket/prefix/ or a directory (default: FILESYSTEM_PREFIX)")
    parser.add_argument("--list-slides", action="store_true", help="list the images under the root (by name)")
    parser.add_argument("--test-slide", metavar="ID", help="open this image and decode a tile of every level")
    return parser


def test_slide(storage: Storage, identifier: str, out: TextIO) -> bool:
    """Open ``identifier`` and decode tile (0, 0) of every level; True when all of it worked."""
    started = time.monotonic()
    try:
        source = open_source(storage.open(*storage.resolve(identifier)))
    except ServerError as exc:
        print(f"FAILED to open {identifier}: {exc.status} {exc}", file=out)
        return False
    info = source.info
    print(
        f"opened {identifier}: {info.format}, {info.width} x {info.height}, {len(info.levels)} levels "
        f"({time.monotonic() - started:.2f} s)",
        file=out,
    )
    ok = True
    for index, level in enumerate(info.levels):
        started = time.monotonic()
        try:
            tile = source.read_tile(index, 0, 0)
        except ServerError as exc:
            print(f"FAILED level {index} ({level.width} x {level.height}): {exc.status} {exc}", file=out)
            ok = False
            continue
        print(
            f"level {index}: {level.width} x {level.height}, tile {tile.shape[1]} x {tile.shape[0]} decoded "
            f"({time.monotonic() - started:.2f} s)",
            file=out,
        )
    source.close()
    return ok


def run(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    settings = with_root(settings, args.root)
    root = settings.filesystem_prefix or "."
    try:
        # One storage for the whole check: the listing's and the slide's requests share its
        # identities and blocks.
        storage = make_storage(settings, NO_SHARING)
        names = storage.list_names()
        first = next(names, None)
    except (ServerError, OSError, ValueError) as exc:
        print(f"FAILED: cannot reach {root}: {exc}", file=out)
        return 1
    print(f"reached {root}" + ("" if first is not None else " (it holds nothing)"), file=out)
    status = 0
    if args.list_slides:
        count = 0
        try:
            listed = itertools.chain([] if first is None else [first], names)
            for name in image_names(listed, settings.filesystem_suffix):
                print(name, file=out)
                count += 1
        except (ServerError, OSError) as exc:
            print(f"FAILED: listing {root}: {exc}", file=out)
            status = 1
        print(f"{count} images", file=out)
    if args.test_slide and not test_slide(storage, args.test_slide, out):
        status = 1
    return status


def main(argv: list[str], settings: Settings) -> int:
    args = build_parser().parse_args(argv)
    return run(settings, args, sys.stdout)
