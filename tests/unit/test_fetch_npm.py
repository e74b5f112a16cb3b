"""scripts/fetch_npm.py: pinned npm tarballs, verified and unpacked without npm.

The tarballs are built here and served from 127.0.0.1 (the lock names the public registry;
``--registry`` points the fetcher at the local server, as an operator's mirror would).  The
expected integrity strings are computed here with hashlib, as npm computes them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import os
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import fetch_npm  # scripts/: on the path once tests/conftest.py has imported tests.helpers
import pytest

from tests import helpers

NAME = "demo-pkg"


def tarball(files: dict[str, bytes], links: dict[str, str] | None = None, mode: int = 0o644) -> bytes:
    """A gzipped tar of ``files`` (path -> content) and symbolic ``links`` (path -> target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for path, content in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(content)
            info.mode = 0o755 if path.endswith(".sh") else mode
            tar.addfile(info, io.BytesIO(content))
        for path, target in (links or {}).items():
            info = tarfile.TarInfo(path)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return out.getvalue()


def package(version: str = "1.0.0", name: str = NAME, extra: dict[str, bytes] | None = None) -> bytes:
    manifest = json.dumps({"name": name, "version": version}).encode()
    files = {"package/package.json": manifest, "package/build/lib.js": f"// {version}\n".encode()}
    files["package/bin/run.sh"] = b"#!/bin/sh\n"
    return tarball({**files, **(extra or {})})


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


class Registry:
    """Tarballs served on 127.0.0.1 under the registry's path layout, counting downloads."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: list[str] = []

    def handler(self, *args: Any, **kwargs: Any) -> BaseHTTPRequestHandler:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.hits.append(self.path)
                body = registry.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler(*args, **kwargs)


@pytest.fixture
def registry() -> Iterator[tuple[Registry, str]]:
    served = Registry()
    with ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Registry.handler, served)) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield served, f"http://127.0.0.1:{httpd.server_address[1]}/"
        finally:
            httpd.shutdown()
            thread.join(timeout=5)


def publish(served: Registry, data: bytes, version: str, name: str = NAME) -> dict[str, str]:
    """Serve ``data`` and return its lock entry, naming the public registry as npm's does."""
    path = f"/{name}/-/{name}-{version}.tgz"
    served.files[path] = data
    return {"version": version, "resolved": fetch_npm.REGISTRY + path[1:], "integrity": integrity(data)}


def write_lock(directory, entries: dict[str, dict[str, str]]) -> str:
    path = os.path.join(directory, "lock.json")
    with open(path, "w") as f:
        json.dump({"packages": entries}, f)
    return path


def run(lock: str, dest: str, base: str, *extra: str) -> int:
    return fetch_npm.main(["--lock", lock, "--dest", dest, "--registry", base, *extra])


def test_fetches_verifies_and_unpacks_like_npm(registry, tmp_path):
    served, base = registry
    lock = write_lock(tmp_path, {NAME: publish(served, package("1.0.0"), "1.0.0")})
    dest = str(tmp_path / "node_modules")
    assert run(lock, dest, base, "--check") == 1  # nothing there yet, and nothing downloaded
    assert served.hits == []
    assert run(lock, dest, base) == 0
    root = os.path.join(dest, NAME)
    # package/ became node_modules/<name>/, as npm lays it out.
    with open(os.path.join(root, "build", "lib.js")) as f:
        assert f.read() == "// 1.0.0\n"
    with open(os.path.join(root, "package.json")) as f:
        assert json.load(f)["version"] == "1.0.0"
    assert os.stat(os.path.join(root, "bin", "run.sh")).st_mode & 0o777 == 0o755
    assert os.stat(os.path.join(root, "build", "lib.js")).st_mode & 0o777 == 0o644
    assert run(lock, dest, base, "--check") == 0
    # A second run finds the pin installed and downloads nothing.
    assert run(lock, dest, base) == 0
    assert served.hits == [f"/{NAME}/-/{NAME}-1.0.0.tgz"]
    assert [n for n in os.listdir(dest) if n.startswith(".")] == []  # no work directory left


def test_a_new_pin_replaces_the_old_copy(registry, tmp_path):
    served, base = registry
    dest = str(tmp_path / "node_modules")
    old = package("1.0.0", extra={"package/only-in-old.js": b"x"})
    assert run(write_lock(tmp_path, {NAME: publish(served, old, "1.0.0")}), dest, base) == 0
    assert run(write_lock(tmp_path, {NAME: publish(served, package("2.0.0"), "2.0.0")}), dest, base) == 0
    with open(os.path.join(dest, NAME, "build", "lib.js")) as f:
        assert f.read() == "// 2.0.0\n"
    assert not os.path.exists(os.path.join(dest, NAME, "only-in-old.js"))
    assert len(served.hits) == 2


def test_a_wrong_hash_installs_nothing_and_keeps_the_old_copy(registry, tmp_path):
    served, base = registry
    dest = str(tmp_path / "node_modules")
    assert run(write_lock(tmp_path, {NAME: publish(served, package("1.0.0"), "1.0.0")}), dest, base) == 0
    entry = publish(served, package("2.0.0"), "2.0.0")
    entry["integrity"] = integrity(b"something else")
    assert run(write_lock(tmp_path, {NAME: entry}), dest, base) == 1
    with open(os.path.join(dest, NAME, "build", "lib.js")) as f:
        assert f.read() == "// 1.0.0\n"


def test_verify_accepts_one_matching_sha512_of_several(tmp_path):
    data = b"tarball bytes"
    fetch_npm.verify(data, f"sha1-AAAA {integrity(b'other')} {integrity(data)}")
    with pytest.raises(fetch_npm.FetchError, match="integrity mismatch"):
        fetch_npm.verify(data, integrity(b"other"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (tarball({"package/package.json": b"{}", "package/../../evil.js": b"x"}), "leaves its directory"),
        (tarball({"/etc/evil": b"x"}), "leaves its directory"),
        (tarball({"package/package.json": b"{}"}, links={"package/link": "/etc/passwd"}), "not a file or directory"),
        (tarball({"package/package.json": b"{}", "other/x.js": b"x"}), "2 top directories"),
        (package("1.0.1"), "the lock pins demo-pkg@1.0.0"),
        (package("1.0.0", name="another-pkg"), "the lock pins demo-pkg@1.0.0"),
    ],
    ids=["dot-dot", "absolute", "symlink", "two-tops", "wrong-version", "wrong-name"],
)
def test_refuses_unsafe_or_wrong_tarballs(registry, tmp_path, data, message, capsys):
    served, base = registry
    entry = publish(served, data, "1.0.0")  # the hash matches: the content is what is wrong
    dest = str(tmp_path / "node_modules")
    assert run(write_lock(tmp_path, {NAME: entry}), dest, base) == 1
    assert message in capsys.readouterr().err
    assert not os.path.exists(os.path.join(dest, NAME))
    assert not os.path.exists(tmp_path / "evil.js") and not os.path.exists(tmp_path.parent / "evil.js")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"version": "1.0.0", "resolved": "http://registry.npmjs.org/x.tgz", "integrity": "sha512-AA=="}, "https"),
        ({"version": "1.0.0", "resolved": "https://registry.npmjs.org/x.tgz", "integrity": "sha1-AA=="}, "sha512"),
        ({"version": "1.0.0", "resolved": "https://registry.npmjs.org/x.tgz"}, "needs version, resolved"),
    ],
)
def test_lock_entries_are_checked(tmp_path, entry, message):
    with pytest.raises(fetch_npm.FetchError, match=message):
        fetch_npm.load_lock(write_lock(tmp_path, {NAME: entry}))


@pytest.mark.parametrize("name", ["../evil", "/abs", "UPPER", "@scope/../x", ""])
def test_package_names_cannot_leave_the_directory(tmp_path, name):
    entry = {"version": "1", "resolved": "https://registry.npmjs.org/x.tgz", "integrity": "sha512-AA=="}
    with pytest.raises(fetch_npm.FetchError, match="not an npm package name"):
        fetch_npm.load_lock(write_lock(tmp_path, {name: entry}))


def test_the_browser_tests_lock_pins_openseadragon_from_the_registry():
    pins = fetch_npm.load_lock(os.path.join(helpers.ROOT, "iipsrv_py", "viewer", "npm-lock.json"))
    pin = pins["openseadragon"]
    assert pin.resolved == f"{fetch_npm.REGISTRY}openseadragon/-/openseadragon-{pin.version}.tgz"
