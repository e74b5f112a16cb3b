"""What the deployment tests share: an installation and images a web server's user can reach,
the shipped configuration files with explicit substitutions, a reference front end, and the
requests every deployment shape must answer like it.

Apache and lighttpd, started as root, run the server as their own user (www-data on Debian).
That user must be able to run the program: the test virtualenv may have been made from a Python
in a directory it cannot enter, so a virtualenv is made here with Debian's own Python
(/usr/bin/python3) and a plain ``pip install`` of a copy of the checkout, in a directory every
user can enter, and kept between runs under a digest of what was installed.  The real console
script then runs under the web server's user, as on a server.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import requests
import tifffile

from tests import helpers
from tests.integration import reference, servers
from tests.integration.test_install import CHECKOUT_FILES, INSTALL_TIMEOUT, OPTIONAL_FILES, _run

# The web servers' user on Debian; when the tests do not run as root the web servers keep the
# tests' own user.
WEB_USER = "www-data"
SYSTEM_PYTHON = "/usr/bin/python3"
URI_MAP = "iiif=>IIIF deepzoom=>DeepZoom zoomify=>Zoomify"
# The shipped files' placeholders, replaced by the tests' own values.
SHIPPED_PROGRAM = "/opt/iipsrv_py/.venv/bin/iipsrv-py"
SHIPPED_IMAGES = "/var/www/images/"

JPEG_TILES = "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif"
DEFLATE = "tif-rgb-3000x2000-5lvl-256tile-deflate.tif"
# A copy of DEFLATE in a subdirectory: its IIIF identifier holds %2F, which a front end must pass
# on as sent.
NESTED = "nested/deflate.tif"


def as_root() -> bool:
    return os.geteuid() == 0


def web_user() -> pwd.struct_passwd:
    """The account the web servers switch to (the tests' own when not root)."""
    if not as_root():
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(WEB_USER)
    except KeyError:
        pytest.fail(f"no {WEB_USER} account: the apache2 package creates it (scripts/test installs it)")


def reachable_by_everyone(path: str) -> bool:
    """Every directory from / to ``path`` searchable by other users."""
    path = os.path.abspath(path)
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _digest() -> str:
    """What the installation depends on: the build files and every file of the package (not the
    README and licence, which pip copies but nothing runs)."""
    sha = hashlib.sha256()
    build_files = [n for n in CHECKOUT_FILES + OPTIONAL_FILES if n not in ("README.md", "COPYING")]
    names = [n for n in build_files if os.path.exists(os.path.join(helpers.ROOT, n))]
    for directory, dirs, files in os.walk(os.path.join(helpers.ROOT, "iipsrv_py")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        names += [os.path.relpath(os.path.join(directory, f), helpers.ROOT) for f in sorted(files)]
    for name in names:
        sha.update(name.encode() + b"\0")
        with open(os.path.join(helpers.ROOT, name), "rb") as f:
            sha.update(f.read())
    return sha.hexdigest()[:16]


def _cache_root() -> str:
    """tests/.cache when the web servers' user can enter the checkout, else the system's
    temporary directory (a checkout under a private home directory)."""
    inside = os.path.join(helpers.ROOT, "tests", ".cache")
    if reachable_by_everyone(helpers.ROOT):
        return inside
    return os.path.join(tempfile.gettempdir(), "iipsrv_py-tests-cache")


@dataclass(frozen=True)
class WebInstall:
    venv: str
    program: str  # the iipsrv-py console script


def web_install() -> WebInstall:
    """A virtualenv of Debian's Python with the project installed, that the web servers' user
    can run; made once per state of the project (several minutes with a cold pip cache)."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        message = f"{SYSTEM_PYTHON} is missing (Debian's python3; scripts/test installs python3-venv)"
        if helpers.IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    root = _cache_root()
    os.makedirs(root, exist_ok=True)
    os.chmod(root, 0o755)
    digest = _digest()
    venv = os.path.join(root, f"web-venv-{digest}")
    program = os.path.join(venv, "bin", "iipsrv-py")
    done = os.path.join(venv, ".installed")
    if not os.path.exists(done):
        # Earlier states of the project: nothing uses them any more.
        for name in os.listdir(root):
            if name.startswith("web-venv-"):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        # Readable by every user whatever the umask of the run (a CI's may be 077).
        umask = os.umask(0o022)
        try:
            _install(venv)
        finally:
            os.umask(umask)
        with open(done, "w") as f:
            f.write(digest + "\n")
    assert os.access(program, os.X_OK), program
    return WebInstall(venv, program)


def _install(venv: str) -> None:
    """``python3 -m venv`` and ``pip install`` of a copy of the checkout (what an sdist has)."""
    with tempfile.TemporaryDirectory() as build:
        source = os.path.join(build, "src")
        os.makedirs(source)
        for name in CHECKOUT_FILES + OPTIONAL_FILES:
            if os.path.exists(os.path.join(helpers.ROOT, name)):
                shutil.copy(os.path.join(helpers.ROOT, name), source)
        shutil.copytree(
            os.path.join(helpers.ROOT, "iipsrv_py"),
            os.path.join(source, "iipsrv_py"),
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        _run([SYSTEM_PYTHON, "-m", "venv", venv], 120, f"{SYSTEM_PYTHON} -m venv")
        python = os.path.join(venv, "bin", "python")
        _run([python, "-m", "pip", "install", "--quiet", source], INSTALL_TIMEOUT, "pip install")


# -- images and working directories the web servers' user can use -------------------------------------


@contextlib.contextmanager
def shared_directory() -> Iterator[str]:
    """A private directory every user can enter (pytest's are 0700 under root), owned by the
    web servers' user, who writes its sockets and logs there."""
    path = tempfile.mkdtemp(prefix="iip-deploy-")
    try:
        os.chmod(path, 0o755)
        user = web_user()
        os.chown(path, user.pw_uid, user.pw_gid)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def copy_images(directory: str) -> str:
    """The test images in ``directory``/images, readable by every user; the image root."""
    root = os.path.join(directory, "images")
    os.makedirs(os.path.join(root, os.path.dirname(NESTED)))
    for name, target in ((JPEG_TILES, JPEG_TILES), (DEFLATE, DEFLATE), (DEFLATE, NESTED)):
        shutil.copy(helpers.fixture(name), os.path.join(root, target))
    for directory_path, _, files in os.walk(root):
        os.chmod(directory_path, 0o755)
        for name in files:
            os.chmod(os.path.join(directory_path, name), 0o644)
    return root + "/"


def substitute(text: str, replacements: dict[str, str], what: str) -> str:
    """``text`` with each key replaced; a key the text does not hold fails the test (the file
    changed, and the test would no longer load what is shipped)."""
    for old, new in replacements.items():
        assert old in text, f"{what} no longer holds {old!r}"
        text = text.replace(old, new)
    return text


def read_conf(relative: str) -> str:
    with open(os.path.join(helpers.ROOT, relative)) as f:
        return f.read()


def write(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


def server_env(image_root: str) -> dict[str, str]:
    """The server settings of every shape (and of the reference)."""
    return {"FILESYSTEM_PREFIX": image_root, "URI_MAP": URI_MAP, "VERBOSITY": "1", "CORS": "*"}


# -- the requests, their reference answers and independent checks --------------------------------------

FULL = len(reference.levels(JPEG_TILES)) - 1
TILE_INDEX = reference.levels(JPEG_TILES)[FULL].tiles_x + 2  # second row, third column
REGION = (700, 300, 300, 200)  # x, y, w, h at full resolution
VIEW_WIDTH = 600

REQUESTS = {
    "info": f"/iiif/{DEFLATE}/info.json",
    "nested-info": "/iiif/" + NESTED.replace("/", "%2F") + "/info.json",
    "tile": f"/fcgi-bin/iipsrv.fcgi?FIF={JPEG_TILES}&JTL={FULL},{TILE_INDEX}",
    "region": f"/iiif/{DEFLATE}/{','.join(map(str, REGION))}/max/0/default.png",
    "view": f"/fcgi-bin/iipsrv.fcgi?FIF={DEFLATE}&WID={VIEW_WIDTH}&CVT=jpeg",
    "health": "/health",
}


def get(base_url: str, path: str) -> requests.Response:
    with servers.http_session() as session:
        return session.get(base_url + path, timeout=servers.HTTP_TIMEOUT, allow_redirects=False)


def answers(base_url: str) -> dict[str, requests.Response]:
    return {name: get(base_url, path) for name, path in REQUESTS.items()}


def without_host(body: bytes, base_url: str) -> dict[str, object]:
    """An info.json with the scheme and host of its ids taken out."""
    text = body.decode()
    assert base_url in text, f"the ids do not start with {base_url}: {text[:300]}"
    return dict(json.loads(text.replace(base_url, "http://HOST")))


def check_independently(got: dict[str, requests.Response], base_url: str) -> None:
    """What the answers must be, from tifffile's and Pillow's decoding of the sources."""
    for name, response in got.items():
        assert response.status_code == 200, f"{name}: {response.status_code} {response.content[:300]!r}"
    height, width = tifffile.imread(helpers.fixture(DEFLATE), key=0).shape[:2]
    for name in ("info", "nested-info"):
        info = json.loads(got[name].content)
        assert (info["width"], info["height"]) == (width, height)
        identifier = DEFLATE if name == "info" else NESTED.replace("/", "%2F")
        assert info["id"] == f"{base_url}/iiif/{identifier}", info["id"]
    tile = reference.decode(got["tile"].content, "JPEG")
    assert reference.mean_abs_diff(tile, reference.tile_pixels(JPEG_TILES, FULL, TILE_INDEX)) <= 1.0
    x, y, w, h = REGION
    full = tifffile.imread(helpers.fixture(DEFLATE), key=0)
    region = reference.decode(got["region"].content, "PNG")
    assert np.array_equal(region, full[y : y + h, x : x + w]), "the PNG region is not the stored pixels"
    view = reference.decode(got["view"].content, "JPEG")
    view_height = round(height * VIEW_WIDTH / width)
    expected = reference.lanczos(full, VIEW_WIDTH, view_height)
    assert view.shape == expected.shape
    assert reference.mean_abs_diff(view, expected) <= 1.5 * reference.jpeg_error(expected, 75) + 1.0
    assert json.loads(got["health"].content).get("status") == "healthy", got["health"].content[:200]


def check_same_answers(got: dict[str, requests.Response], base_url: str, expected: dict[str, bytes]) -> None:
    """Each answer equals the reference front end's: images byte for byte (the same settings
    and encoders), info.json after taking the host out of the ids."""
    check_independently(got, base_url)
    for name, response in got.items():
        if name.endswith("info"):
            assert without_host(response.content, base_url) == json.loads(expected[name]), name
        else:
            assert response.content == expected[name], f"{name}: the body differs from nginx's"


def reference_answers(image_root: str) -> dict[str, bytes]:
    """The answers of nginx in front of an ``iipsrv-py --bind`` pool (the project's test
    virtualenv) with the same settings, info.json ids with their host taken out."""
    with servers.short_tempdir() as workdir, servers.nginx_stack(workdir, env=server_env(image_root)) as stack:
        got = answers(stack.nginx.base_url)
        check_independently(got, stack.nginx.base_url)
    return {
        name: (
            json.dumps(without_host(response.content, stack.nginx.base_url)).encode()
            if name.endswith("info")
            else response.content
        )
        for name, response in got.items()
    }


# -- processes ----------------------------------------------------------------------------------------


def program_processes(program: str) -> list[int]:
    """Live processes running ``program`` (as argv[0], or as the script its interpreter runs)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or not servers.running(int(name)):
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if program.encode() in argv[:2]:
            found.append(int(name))
    return sorted(found)


def process_uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])  # the real uid
    raise AssertionError(f"no Uid line for {pid}")


def assert_none_left(program: str) -> None:
    servers.wait_until(lambda: not program_processes(program), servers.STOP_TIMEOUT, f"every {program} to exit")


def user_lines() -> tuple[str, str]:
    """Apache's User/Group lines and lighttpd's username/groupname lines: the web servers'
    account when started as root, nothing otherwise (they keep the tests' user)."""
    if not as_root():
        return "", ""
    return (
        f"User {WEB_USER}\nGroup {WEB_USER}\n",
        f'server.username = "{WEB_USER}"\nserver.groupname = "{WEB_USER}"\n',
    )


# Debian's place for Apache's modules (the apache2-bin package).
APACHE_MODULES = "/usr/lib/apache2/modules"


class Apache(servers.WebServer):
    """A private Apache (event MPM) on a loopback port: a whole configuration of its own that
    loads ``modules`` and includes ``site`` inside its one <VirtualHost>."""

    def __init__(self, workdir: str, modules: list[str], server_lines: str, site: str) -> None:
        binary = helpers.require_binary("apache2")
        port = servers.free_port()
        loads = "".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so\n" for m in modules)
        user, _ = user_lines()
        os.makedirs(os.path.join(workdir, "htdocs"), exist_ok=True)
        conf = write(
            os.path.join(workdir, "apache2.conf"),
            f"""# generated by tests/integration/deploy_support.py
ServerRoot "{workdir}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{workdir}/apache2.pid"
DefaultRuntimeDir "{workdir}"
Mutex file:{workdir} default
ErrorLog "{workdir}/error.log"
LogLevel warn
{user}LoadModule mpm_event_module {APACHE_MODULES}/mod_mpm_event.so
LoadModule authz_core_module {APACHE_MODULES}/mod_authz_core.so
{loads}DocumentRoot "{workdir}/htdocs"
{server_lines}
<VirtualHost 127.0.0.1:{port}>
    Include "{site}"
</VirtualHost>
""",
        )
        configtest = subprocess.run([binary, "-t", "-f", conf], capture_output=True, text=True, timeout=30)
        assert configtest.returncode == 0, f"apache2 -t: {configtest.stdout}{configtest.stderr}"
        super().__init__("apache2", [binary, "-f", conf, "-DFOREGROUND"], workdir, port, servers.base_env())


@dataclass(frozen=True)
class Site:
    """An installation, images and reference answers shared by a module's tests."""

    install: WebInstall
    directory: str  # every user can enter it; the web servers' user owns it
    image_root: str
    expected: dict[str, bytes]

    def workdir(self, name: str) -> str:
        """A new directory of the web servers' user, for one server's files."""
        path = os.path.join(self.directory, name)
        os.mkdir(path, 0o755)
        user = web_user()
        os.chown(path, user.pw_uid, user.pw_gid)
        return path


@contextlib.contextmanager
def site() -> Iterator[Site]:
    install = web_install()
    with shared_directory() as directory:
        image_root = copy_images(directory)
        yield Site(install, directory, image_root, reference_answers(image_root))


class Lighttpd(servers.WebServer):
    """A private lighttpd on a loopback port, its whole configuration including ``site``."""

    def __init__(self, workdir: str, site: str) -> None:
        binary = helpers.require_binary("lighttpd")
        port = servers.free_port()
        _, user = user_lines()
        os.makedirs(os.path.join(workdir, "htdocs"), exist_ok=True)
        conf = write(
            os.path.join(workdir, "lighttpd.conf"),
            f"""# generated by tests/integration/deploy_support.py
server.document-root = "{workdir}/htdocs"
server.bind = "127.0.0.1"
server.port = {port}
server.pid-file = "{workdir}/lighttpd.pid"
server.errorlog = "{workdir}/error.log"
{user}include "{site}"
""",
        )
        configtest = subprocess.run([binary, "-tt", "-f", conf], capture_output=True, text=True, timeout=30)
        assert configtest.returncode == 0, f"lighttpd -tt: {configtest.stdout}{configtest.stderr}"
        super().__init__("lighttpd", [binary, "-D", "-f", conf], workdir, port, servers.base_env())
