"""Shared test helpers: fixture images, a WSGI client, requirements that fail loudly in CI."""

from __future__ import annotations

import io
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", ".fixtures")
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import make_test_images  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def fixture_dir() -> str:
    make_test_images.build(FIXTURES)
    return FIXTURES


def fixture(name: str) -> str:
    return os.path.join(fixture_dir(), name)


def require_openslide() -> Any:
    """The openslide module (openslide-python with openslide-bin, a test extra): the pixel
    oracle.  Missing: a failure under CI=true, else a skip."""
    try:
        import openslide
    except ImportError as exc:  # pragma: no cover - depends on the environment
        message = f"openslide-python with openslide-bin is needed ({exc}); scripts/test installs them"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return openslide


def require_binary(name: str) -> str:
    """Path of a program the test needs.  Missing: a failure under CI=true, else a skip."""
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)
    if path is None:
        message = f"{name} is not installed (scripts/test installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class Result:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes
    header_list: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def make_app(**env: str) -> Any:
    """An Application configured like the server would be from these variables."""
    from iipsrv_py.app import Application
    from iipsrv_py.settings import from_environ

    variables = {"FILESYSTEM_PREFIX": fixture_dir() + "/", **env}
    settings, _ = from_environ(variables)
    return Application(settings)


def call(
    app: Any,
    query: str = "",
    method: str = "GET",
    path: str = "/fcgi-bin/iipsrv.fcgi",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> Result:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "QUERY_STRING": query,
        "REQUEST_URI": path + ("?" + query if query else ""),
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "localhost",
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    captured: dict[str, Any] = {}

    def start_response(status: str, header_list: list[tuple[str, str]], exc_info: Any = None) -> None:
        captured["status"] = status
        captured["headers"] = header_list

    chunks = app(environ, start_response)
    data = b"".join(chunks)
    header_list = captured["headers"]
    return Result(
        int(captured["status"].split()[0]),
        {k.lower(): v for k, v in header_list},
        data,
        header_list,
    )


def padded_form(form: bytes, size: int) -> bytes:
    """``form`` grown to exactly ``size`` bytes with tokens the IIP parser skips (no ``=``), each
    of 99 characters: under MAX_PARAMETER_LENGTH, so that only the body's size decides."""
    padded = form + (b"x" * 99 + b"&") * (max(0, size - len(form)) // 100 + 1)
    return padded[:size]


def write_uniform_pyramid(path: Any, width: int, height: int, tile: int, colour: tuple[int, int, int]) -> None:
    """A tiled BigTIFF pyramid (levels halving down to one tile) whose every tile is the same
    pre-compressed block of ``colour``: gigapixel geometry in a few MB, written in a second."""
    import zlib

    import numpy as np
    import tifffile

    pixels = np.empty((tile, tile, 3), np.uint8)
    pixels[:] = colour
    block = zlib.compress(pixels.tobytes())
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        first = True
        while True:
            count = -(-width // tile) * -(-height // tile)
            tif.write(
                (block for _ in range(count)),  # pre-compressed tiles, written as they are
                shape=(height, width, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                compression="zlib",
                photometric="rgb",
                subfiletype=0 if first else 1,
                metadata=None,
            )
            if width <= tile and height <= tile:
                break
            width, height, first = -(-width // 2), -(-height // 2), False
