#!/usr/bin/env python3
"""Install pinned npm packages without Node.js or npm: download, verify, unpack.

    python scripts/fetch_npm.py --lock LOCK.json --dest DIR [NAME ...]
    python scripts/fetch_npm.py --lock LOCK.json --dest DIR --check [NAME ...]

LOCK.json pins every package by version, tarball URL and npm's ``integrity`` (a sha512
Subresource Integrity string, as package-lock.json records it):

    {"packages": {"openseadragon": {"version": "6.1.1",
        "resolved": "https://registry.npmjs.org/openseadragon/-/openseadragon-6.1.1.tgz",
        "integrity": "sha512-..."}}}

Each package named (all of them when none is) is unpacked into DIR/<name>/, as npm installs
it into node_modules/<name>/: the tarball's single top directory (``package/``) becomes
DIR/<name>/.  The tarball is checked against the integrity hash before anything is written,
its package.json must name the pinned package and version, and its members must be plain
files and directories inside that top directory.  The new copy replaces an old one only
once it is complete.  A package whose installed pin (DIR/<name>/.fetch_npm.json) already
matches the lock is not downloaded again.

--check downloads nothing: it exits 1, saying what is missing or out of date, unless every
package is installed as pinned.  --registry URL fetches from a mirror instead of
https://registry.npmjs.org/ (the integrity check still applies).  The download honours the
usual https_proxy variables.  Exits non-zero with a message when anything fails.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import io
import json
import os
import posixpath
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass

REGISTRY = "https://registry.npmjs.org/"
STAMP = ".fetch_npm.json"  # the pin an installed copy was made from
MAX_TARBALL = 64 << 20  # bytes; a larger download is refused, not buffered
MAX_UNPACKED = 512 << 20  # bytes of files a tarball may unpack to
TIMEOUT = 60.0  # seconds without progress before a download fails
# npm package names: lower case, optionally scoped (@scope/name); nothing that could leave DIR.
NAME = re.compile(r"^(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*$")


class FetchError(Exception):
    pass


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    resolved: str  # the tarball's URL
    integrity: str  # "sha512-<base64>" (several space-separated hashes are allowed)

    def stamp(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "integrity": self.integrity}


def load_lock(path: str) -> dict[str, Pin]:
    """The pins of a lock file, checked for what this script relies on."""
    try:
        with open(path, encoding="utf-8") as f:
            packages = json.load(f)["packages"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FetchError(f"{path}: not a lock file with a 'packages' object ({exc})") from exc
    pins = {}
    for name, entry in packages.items():
        if not NAME.match(name):
            raise FetchError(f"{path}: {name!r} is not an npm package name")
        try:
            pin = Pin(name, str(entry["version"]), str(entry["resolved"]), str(entry["integrity"]))
        except (KeyError, TypeError) as exc:
            raise FetchError(f"{path}: {name} needs version, resolved and integrity") from exc
        if not pin.resolved.startswith("https://"):
            raise FetchError(f"{path}: {name} must be fetched over https, not {pin.resolved}")
        if not any(h.startswith("sha512-") for h in pin.integrity.split()):
            raise FetchError(f"{path}: {name} needs a sha512 integrity hash")
        pins[name] = pin
    return pins


def installed(pin: Pin, dest: str) -> bool:
    """True when DIR/<name> holds exactly this pin."""
    try:
        with open(os.path.join(dest, pin.name, STAMP), encoding="utf-8") as f:
            return bool(json.load(f) == pin.stamp())
    except (OSError, ValueError):
        return False


def verify(data: bytes, integrity: str) -> None:
    """Raise unless ``data`` has one of the sha512 hashes of the SRI string ``integrity``."""
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")
    expected = [h[len("sha512-") :] for h in integrity.split() if h.startswith("sha512-")]
    if not any(hmac.compare_digest(actual.encode(), e.encode()) for e in expected):
        raise FetchError(f"integrity mismatch: got sha512-{actual}, the lock says {integrity}")


def download(url: str, timeout: float = TIMEOUT, limit: int = MAX_TARBALL) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data: bytes = response.read(limit + 1)
    except OSError as exc:  # URLError, HTTPError, timeouts
        raise FetchError(f"cannot download {url}: {exc}") from exc
    if len(data) > limit:
        raise FetchError(f"{url} is larger than {limit} bytes")
    return data


def _members(tar: tarfile.TarFile) -> list[tuple[tarfile.TarInfo, str]]:
    """Every member with its path below the top directory, refusing anything that is not a
    plain file or directory inside it."""
    found = []
    for member in tar.getmembers():
        path = posixpath.normpath(member.name)
        top, _, rest = path.partition("/")
        if member.name.startswith("/") or path.startswith("..") or "/../" in f"/{path}/":
            raise FetchError(f"refusing the tarball: member {member.name!r} leaves its directory")
        if not (member.isfile() or member.isdir()):
            raise FetchError(f"refusing the tarball: {member.name!r} is not a file or directory")
        if top and rest:
            found.append((member, rest))
    if sum(member.size for member, _ in found) > MAX_UNPACKED:
        raise FetchError(f"refusing the tarball: it unpacks to more than {MAX_UNPACKED} bytes")
    tops = {posixpath.normpath(m.name).partition("/")[0] for m in tar.getmembers()}
    if len(tops) != 1:
        raise FetchError(f"the tarball has {len(tops)} top directories, not one: {sorted(tops)}")
    return found


def unpack(data: bytes, pin: Pin, target: str) -> None:
    """The package's files into the new directory ``target``."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = _members(tar)
        os.makedirs(target)
        for member, relative in members:
            path = os.path.join(target, *relative.split("/"))
            if member.isdir():
                os.makedirs(path, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                raise FetchError(f"cannot read {member.name!r} from the tarball")
            with open(path, "wb") as out:
                shutil.copyfileobj(source, out)
            os.chmod(path, 0o755 if member.mode & 0o111 else 0o644)
    try:
        with open(os.path.join(target, "package.json"), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise FetchError(f"the tarball of {pin.name} has no readable package.json ({exc})") from exc
    found = f"{manifest.get('name')}@{manifest.get('version')}"
    if found != f"{pin.name}@{pin.version}":
        raise FetchError(f"the tarball holds {found}, the lock pins {pin.name}@{pin.version}")
    with open(os.path.join(target, STAMP), "w", encoding="utf-8") as f:
        json.dump(pin.stamp(), f, indent=1)
        f.write("\n")


def fetch(pin: Pin, dest: str, registry: str | None = None) -> bool:
    """Make DIR/<name> this pin; True when it was downloaded now, False when it already was."""
    if installed(pin, dest):
        return False
    url = pin.resolved
    if registry and url.startswith(REGISTRY):
        url = registry.rstrip("/") + "/" + url[len(REGISTRY) :]
    data = download(url)
    verify(data, pin.integrity)
    final = os.path.join(dest, pin.name)
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    # Unpacked beside the final place, then swapped in: a reader never sees half a package.
    work = tempfile.mkdtemp(prefix=".fetch_npm-", dir=parent)
    try:
        unpack(data, pin, os.path.join(work, "new"))
        if os.path.exists(final):
            os.rename(final, os.path.join(work, "old"))
        os.rename(os.path.join(work, "new"), final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Install pinned npm packages (download, verify the integrity hash, unpack) without npm."
    )
    parser.add_argument("--lock", required=True, help="JSON lock file pinning the packages")
    parser.add_argument("--dest", required=True, help="directory that gets one subdirectory per package")
    parser.add_argument("--check", action="store_true", help="download nothing; exit 1 unless all are installed")
    parser.add_argument("--registry", help=f"fetch from this registry instead of {REGISTRY}")
    parser.add_argument("names", nargs="*", help="packages to install (default: every package of the lock)")
    args = parser.parse_args(argv)
    try:
        pins = load_lock(args.lock)
        unknown = sorted(set(args.names) - set(pins))
        if unknown:
            raise FetchError(f"not in {args.lock}: {', '.join(unknown)}")
        chosen = [pins[name] for name in args.names or sorted(pins)]
        if args.check:
            missing = [f"{p.name}@{p.version}" for p in chosen if not installed(p, args.dest)]
            if missing:
                print(f"fetch_npm: not installed in {args.dest}: {', '.join(missing)}", file=sys.stderr)
                return 1
            return 0
        for pin in chosen:
            if fetch(pin, args.dest, args.registry):
                print(f"fetched {pin.name}@{pin.version}")
    except (FetchError, OSError, tarfile.TarError) as exc:
        print(f"fetch_npm: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
