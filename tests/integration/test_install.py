"""A plain install serves every format: what a new user gets from ``pip install``.

A fresh virtualenv gets ``pip install <a copy of the checkout>`` and nothing else (no test
extras: those bring packages of their own, which once hid that glymur needs ``packaging``
and every JPEG 2000 image answered 415).  ``iipsrv-py --http`` is started from that
virtualenv, and one request per supported source format and per output format is compared
with an independent decode of the source: tifffile for TIFF and SVS, glymur for JPEG 2000,
Pillow for JPEG; the responses are decoded by Pillow (tifffile for TIFF output).

Besides, every module iipsrv_py itself imports must be the standard library's or come from a
distribution that setup.cfg declares (one that only arrives as another package's dependency
may disappear with that package's next release).
"""

from __future__ import annotations

import ast
import configparser
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata

import numpy as np
import pytest
import tifffile
from PIL import Image

from tests import helpers
from tests.integration import reference, servers

pytestmark = pytest.mark.integration

# pip install with a warm download cache takes about a minute here; a cold cache several.
INSTALL_TIMEOUT = 540.0
# What the copy of the checkout needs to install: the package and what setup.cfg reads, and
# the build files a later layout may add.
CHECKOUT_FILES = ("setup.py", "setup.cfg", "README.md", "COPYING")
OPTIONAL_FILES = ("pyproject.toml", "MANIFEST.in")
URI_MAP = "iiif=>IIIF deepzoom=>DeepZoom zoomify=>Zoomify"
# Only the decoders differ between the server's pixels and the reference's (the same stored
# data, lossless PNG or deflate-TIFF output): at most rounding in a colour conversion.
SAME_DECODE = 0.5


# -- the install ------------------------------------------------------------------------------------


def _install_env() -> dict[str, str]:
    """The environment pip runs in: this one (its pip configuration, proxy and certificates
    included), without what would point it at the test virtualenv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(argv: list[str], timeout: float, what: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_install_env(), check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} did not finish within {timeout:.0f}s")
    assert out.returncode == 0, f"{what} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@dataclass(frozen=True)
class PlainInstall:
    venv: str
    python: str
    server: str  # the iipsrv-py console script


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory: pytest.TempPathFactory) -> PlainInstall:
    """A fresh virtualenv with ``pip install <copy of the checkout>``, no extras.  Bounded by
    INSTALL_TIMEOUT rather than the per-test limit, which does not cover module fixtures."""
    base = tmp_path_factory.mktemp("plain-install")
    # A copy, so that the build leaves nothing in the checkout and sees only what an sdist has.
    source = base / "src"
    source.mkdir()
    for name in CHECKOUT_FILES + tuple(n for n in OPTIONAL_FILES if os.path.exists(os.path.join(helpers.ROOT, n))):
        shutil.copy(os.path.join(helpers.ROOT, name), source / name)
    shutil.copytree(
        os.path.join(helpers.ROOT, "iipsrv_py"), source / "iipsrv_py", ignore=shutil.ignore_patterns("__pycache__")
    )
    venv = str(base / "venv")
    _run([sys.executable, "-m", "venv", venv], 120, "python -m venv")
    python = os.path.join(venv, "bin", "python")
    _run([python, "-m", "pip", "install", "--quiet", str(source)], INSTALL_TIMEOUT, "pip install")
    return PlainInstall(venv, python, os.path.join(venv, "bin", "iipsrv-py"))


def test_plain_install_is_consistent_and_has_no_test_extras(plain_install: PlainInstall) -> None:
    _run([plain_install.python, "-m", "pip", "check"], 60, "pip check")
    listed = _run([plain_install.python, "-m", "pip", "list", "--format=freeze"], 60, "pip list")
    installed = {_normalise(line.split("==")[0]) for line in listed.splitlines() if "==" in line}
    assert "iipsrv-py" in installed
    # Nothing of the test extras came along: the server below runs on the plain dependencies.
    assert not installed & {"pytest", "hypothesis", "requests", "mypy", "iiif-validator", "openslide-python"}


# -- the server started from it ---------------------------------------------------------------------

# Source format -> a file of that format, from the generated fixtures or the downloads.
SOURCES = {
    "tiff-tiled-jpeg": ("fixtures", "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif"),
    "tiff-tiled-deflate": ("fixtures", "tif-rgb-3000x2000-5lvl-256tile-deflate.tif"),
    "tiff-stripped": ("fixtures", "tif-rgb-1200x800-3lvl-strip64-lzw.tif"),
    "svs-real": ("downloads", "cmu_small_region.svs"),
    "svs-jpeg": ("fixtures", "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs"),
    "svs-jp2k": ("fixtures", "svs-rgb-1500x1001-2lvl-step4-256tile-jp2k-33005-rgb.svs"),
    "jp2": ("fixtures", "jp2-rgb-3000x2000-5res-3layer.jp2"),
    "j2k": ("fixtures", "j2k-rgb-2000x1500-2res-384tile.j2k"),
    "jpeg": ("fixtures", "jpeg-rgb-3000x2000-q90-exif.jpg"),
}


@dataclass(frozen=True)
class PlainServer:
    base_url: str
    root: str
    process: servers.Managed

    def get(self, path: str) -> tuple[int, str, bytes]:
        with servers.http_session() as session:
            response = session.get(self.base_url + path, timeout=servers.HTTP_TIMEOUT, allow_redirects=False)
        return response.status_code, response.headers.get("Content-Type", ""), response.content

    def log(self) -> str:
        with open(os.path.join(self.root, "..", "iipsrv.log"), errors="replace") as f:
            return f.read()[-3000:]


@pytest.fixture(scope="module")
def plain_server(
    plain_install: PlainInstall, tmp_path_factory: pytest.TempPathFactory, fixtures: str, downloads: str
) -> Iterator[PlainServer]:
    """``iipsrv-py --http`` from the plain install, serving a copy of every SOURCES file."""
    workdir = tmp_path_factory.mktemp("plain-server")
    root = workdir / "images"
    root.mkdir()
    for where, name in SOURCES.values():
        shutil.copy(os.path.join(fixtures if where == "fixtures" else downloads, name), root / name)
    port = servers.free_port()
    env = servers.base_env(
        FILESYSTEM_PREFIX=str(root) + "/", URI_MAP=URI_MAP, VERBOSITY="1", LOGFILE=str(workdir / "iipsrv.log")
    )
    argv = [plain_install.server, "--http", f"127.0.0.1:{port}", "--workers", "1"]
    process = servers.Managed("iipsrv-py-plain", argv, str(workdir), env)
    try:
        process.wait_accepting(("127.0.0.1", port))
        yield PlainServer(f"http://127.0.0.1:{port}", str(root), process)
    finally:
        process.stop()


def source_pixels(kind: str, fixtures: str, downloads: str) -> np.ndarray:
    """Full-resolution pixels of a SOURCES file, H x W x 3, decoded without iipsrv_py."""
    where, name = SOURCES[kind]
    path = os.path.join(fixtures if where == "fixtures" else downloads, name)
    if kind in ("jp2", "j2k"):
        import glymur

        return np.asarray(glymur.Jp2k(path)[:])
    if kind == "jpeg":
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    return np.asarray(tifffile.imread(path, key=0))


def _decode(body: bytes, content_type: str) -> np.ndarray:
    if content_type == "image/tiff":
        array = tifffile.imread(io.BytesIO(body))
    else:
        with Image.open(io.BytesIO(body)) as image:
            array = np.asarray(image.convert("RGB"))
    return array


# A region of every source at full resolution (so no resampling is involved), across tile or
# strip boundaries: (x, y, w, h).
REGION = (700, 300, 300, 200)


@pytest.mark.parametrize("kind", list(SOURCES))
def test_every_source_format_from_a_plain_install(plain_server: PlainServer, fixtures: str, downloads: str, kind):
    name = SOURCES[kind][1]
    x, y, w, h = REGION
    status, content_type, body = plain_server.get(f"/iiif/{name}/{x},{y},{w},{h}/max/0/default.png")
    assert status == 200, f"{status} {body[:200]!r}\n{plain_server.log()}"
    assert content_type == "image/png"
    got = _decode(body, content_type)
    expected = source_pixels(kind, fixtures, downloads)[y : y + h, x : x + w, :3]
    assert got.shape == expected.shape
    assert reference.mean_abs_diff(got, expected) <= SAME_DECODE


def test_stored_jpeg_tile_from_a_plain_install(plain_server: PlainServer, fixtures: str, downloads: str) -> None:
    """A JTL tile of the full-resolution level: the stored JPEG tile, sent as it is."""
    name = SOURCES["tiff-tiled-jpeg"][1]
    levels = reference.levels(name)
    full = len(levels) - 1
    index = levels[full].tiles_x + 2  # second row, third column
    status, content_type, body = plain_server.get(f"/fcgi-bin/iipsrv.fcgi?FIF={name}&JTL={full},{index}")
    assert (status, content_type) == (200, "image/jpeg"), plain_server.log()
    assert reference.mean_abs_diff(_decode(body, content_type), reference.tile_pixels(name, full, index)) <= 1.0


# Output format -> (IIIF extension, content type, quality the server uses by default or None for
# lossless, the Pillow format that encodes the reference at that quality).
OUTPUTS = {
    "jpeg": ("jpg", "image/jpeg", 75, "JPEG"),
    "png": ("png", "image/png", None, None),
    "webp": ("webp", "image/webp", 50, "WEBP"),
    "avif": ("avif", "image/avif", 50, "AVIF"),
    "tiff": ("tif", "image/tiff", None, None),
}


def _encoding_error(pixels: np.ndarray, pillow_format: str, quality: int) -> float:
    """What encoding ``pixels`` with Pillow at ``quality`` costs: the error any encoder of this
    format and quality needs room for."""
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, pillow_format, quality=quality)
    return reference.mean_abs_diff(_decode(out.getvalue(), ""), pixels)


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_every_output_format_from_a_plain_install(plain_server: PlainServer, fixtures: str, downloads: str, output):
    extension, content_type, quality, pillow_format = OUTPUTS[output]
    name = SOURCES["tiff-tiled-deflate"][1]
    x, y, w, h = REGION
    status, got_type, body = plain_server.get(f"/iiif/{name}/{x},{y},{w},{h}/max/0/default.{extension}")
    assert (status, got_type) == (200, content_type), f"{status} {body[:200]!r}\n{plain_server.log()}"
    got = _decode(body, got_type)
    source = source_pixels("tiff-tiled-deflate", fixtures, downloads)
    expected = source[y : y + h, x : x + w]
    assert got.shape == expected.shape
    error = reference.mean_abs_diff(got, expected)
    if quality is None:
        assert error == 0.0
        return
    bound = 1.5 * _encoding_error(expected, pillow_format, quality) + 0.5
    assert error <= bound
    # The bound tells the right pixels from their neighbours: 8 pixels to the right is far off.
    moved = source[y : y + h, x + 8 : x + w + 8]
    assert reference.mean_abs_diff(got, moved) > bound


# -- declared dependencies --------------------------------------------------------------------------


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_requirements() -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(os.path.join(helpers.ROOT, "setup.cfg"))
    names = set()
    for line in parser["options"]["install_requires"].splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(_normalise(re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0]))
    return names


def imported_top_level_modules() -> set[str]:
    """Every absolute import in iipsrv_py's source, by its top-level name."""
    found = set()
    for directory, _, files in os.walk(os.path.join(helpers.ROOT, "iipsrv_py")):
        for file in files:
            if not file.endswith(".py"):
                continue
            with open(os.path.join(directory, file)) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"__future__", "iipsrv_py"}


def test_every_module_iipsrv_py_imports_is_declared() -> None:
    declared = declared_requirements()
    providers = metadata.packages_distributions()  # of the test virtualenv, which has them all
    undeclared = {}
    for module in sorted(imported_top_level_modules()):
        distributions = {_normalise(d) for d in providers.get(module, [])}
        assert distributions, f"no installed distribution provides {module}"
        if not distributions & declared:
            undeclared[module] = sorted(distributions)
    assert undeclared == {}, f"imported but not in setup.cfg install_requires: {undeclared}"
