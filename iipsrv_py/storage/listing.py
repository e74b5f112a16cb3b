"""What images a storage root holds, by name: files (or keys) with an image file extension.

Listing never opens an image (that would cost requests per image on an object store): a name
is an image by its extension, before FILESYSTEM_SUFFIX when one is set.  Names are identifiers
relative to the root, ``/`` between folders; dotfiles and names inside dot-folders are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

IMAGE_EXTENSIONS = (".tif", ".tiff", ".svs", ".btf", ".tf8", ".jp2", ".j2k", ".j2c", ".jpg", ".jpeg")
# An object store is listed at most this far: a bound on the time and memory of one listing.
MAX_LISTED = 100_000


def image_names(names: Iterable[str], suffix: str = "") -> Iterator[str]:
    """Identifiers of the names that look like images (by extension, before the suffix)."""
    for name in names:
        if suffix:
            if not name.endswith(suffix):
                continue
            name = name[: len(name) - len(suffix)]
        if not name or any(part.startswith(".") for part in name.split("/")):
            continue
        if name.lower().endswith(IMAGE_EXTENSIONS):
            yield name


def local_names(prefix: str) -> Iterator[str]:
    """Files under a local prefix's directory, relative to it, sorted per folder (a path prefix
    such as ``/data/img_`` keeps only names starting with ``img_``, without it).  OSError when
    the directory is not there."""
    directory, head = os.path.split(prefix or "./")
    directory = directory or "."
    if not os.path.isdir(directory):
        raise OSError(f"{directory} is not a directory")
    for parent, subdirectories, files in os.walk(directory):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in sorted(files):
            relative = os.path.relpath(os.path.join(parent, name), directory)
            if os.sep != "/":
                relative = relative.replace(os.sep, "/")
            if relative.startswith(head):
                yield relative[len(head) :]
