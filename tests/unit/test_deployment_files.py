"""The shipped deployment files and the README agree on where the FastCGI pool listens.

An operator switches nginx, Apache, systemd or spawn-fcgi to the unix socket by uncommenting
the line each file offers; that only works when every one of them names the same path (and
the same TCP address for the default).  Commented lines count: they are the alternatives.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping

import pytest

from iipsrv_py import settings
from tests import helpers

SOCKET_UNIT = "systemd/iipsrv_py.socket"
SERVICE = "systemd/iipsrv_py.service"
NGINX_UPSTREAM = "conf/nginx/iipsrv_py-upstream.conf"
NGINX_LOCATION = "conf/nginx/iipsrv_py.conf"
APACHE_FCGID = "conf/apache/iipsrv_py-fcgid.conf"
APACHE_PROXY = "conf/apache/iipsrv_py-proxy-fcgi.conf"
LIGHTTPD = "conf/lighttpd/iipsrv_py.conf"
ENV = "conf/iipsrv_py.env"


def read(relative: str) -> str:
    with open(os.path.join(helpers.ROOT, relative)) as f:
        return f.read()


def readme_deployment() -> str:
    """The README's Deployment section (the rest of it has the demo's addresses)."""
    text = read("README.md")
    match = re.search(r"^## Deployment\n(.*?)^## ", text, re.DOTALL | re.MULTILINE)
    assert match, "README.md has no '## Deployment' section"
    return match.group(1)


# A path as the files write it; prose may follow it with punctuation, which is not part of it.
PATH = r"(/[\w./-]*\w)"


# Where each file names a unix socket, as the program reading it would take it.
def socket_unit_paths(text: str) -> list[str]:
    return re.findall(rf"^\s*#?\s*ListenStream={PATH}", text, re.MULTILINE)


def nginx_paths(text: str) -> list[str]:
    return re.findall(rf"\bserver\s+unix:{PATH};", text)


def apache_paths(text: str) -> list[str]:
    return re.findall(rf'"unix:{PATH}\|fcgi://', text)


def bind_paths(text: str) -> list[str]:
    """``--bind PATH`` of iipsrv-py and ``-s PATH`` of spawn-fcgi."""
    return re.findall(rf"--bind\s+{PATH}", text) + re.findall(rf"spawn-fcgi\b[^\n]*?\s-s\s+{PATH}", text)


SOCKET_PATHS = {
    SOCKET_UNIT: socket_unit_paths,
    NGINX_UPSTREAM: nginx_paths,
    APACHE_PROXY: apache_paths,
    SERVICE: bind_paths,
    "README.md": lambda text: nginx_paths(text) + bind_paths(text) + re.findall(rf"unix:{PATH}", text),
}


def _text(name: str) -> str:
    return readme_deployment() if name == "README.md" else read(name)


@pytest.mark.parametrize("name", list(SOCKET_PATHS))
def test_every_file_names_the_unix_socket(name):
    assert SOCKET_PATHS[name](_text(name)), f"{name} names no unix socket path"


def test_one_unix_socket_path_everywhere():
    found = {name: set(extract(_text(name))) for name, extract in SOCKET_PATHS.items()}
    # Any path ending in .sock anywhere in these files, in whatever form, counts too.
    names = [*SOCKET_PATHS, NGINX_LOCATION, ENV, APACHE_FCGID, LIGHTTPD]
    anywhere = {name: set(re.findall(r"(/[\w./-]+\.sock)\b", _text(name))) for name in names}
    paths = set().union(*found.values(), *anywhere.values())
    assert len(paths) == 1, f"more than one socket path: {found} {anywhere}"
    (path,) = paths
    assert path.startswith("/run/"), path  # a runtime directory, emptied at boot


def test_runtime_directory_is_the_sockets_directory():
    """Without the socket unit the service creates the socket's directory itself."""
    (path,) = set(bind_paths(read(SERVICE)))
    directories = re.findall(r"^\s*#?\s*RuntimeDirectory=(\S+)", read(SERVICE), re.MULTILINE)
    assert directories == [os.path.relpath(os.path.dirname(path), "/run")]


def test_one_tcp_address_everywhere():
    """The default: the same loopback address and port in every file."""
    addresses = {}
    for name in [SOCKET_UNIT, SERVICE, NGINX_UPSTREAM, NGINX_LOCATION, APACHE_FCGID, APACHE_PROXY, "README.md"]:
        addresses[name] = set(re.findall(r"\b(\d{1,3}(?:\.\d{1,3}){3}:\d+)", _text(name)))
    assert set().union(*addresses.values()) == {"127.0.0.1:9000"}, addresses
    assert re.search(r"^ListenStream=127\.0\.0\.1:9000$", read(SOCKET_UNIT), re.MULTILINE)
    assert re.search(r"^\s*server 127\.0\.0\.1:9000;", read(NGINX_UPSTREAM), re.MULTILINE)


def test_lighttpd_names_the_pool_address_as_its_alternative():
    """lighttpd writes host and port apart; they are the same default address."""
    text = read(LIGHTTPD)
    assert re.search(r'^\s*#\s*"host" => "127\.0\.0\.1",$', text, re.MULTILINE)
    assert re.search(r'^\s*#\s*"port" => 9000,$', text, re.MULTILINE)


# -- the paths sent to the server ----------------------------------------------------------------

# How each front end names the paths that go to the server, as a regular expression.
PATH_PATTERNS = {
    NGINX_LOCATION: r"^location ~ (\S+) \{$",
    APACHE_FCGID: r'^AliasMatch "([^"]+)"',
    APACHE_PROXY: r'^#? ?ProxyPassMatch "([^"]+)"',
    LIGHTTPD: r'^\$HTTP\["url"\] =~ "([^"]+)"',
}


def test_every_front_end_sends_the_same_paths():
    found = {name: set(re.findall(pattern, read(name), re.MULTILINE)) for name, pattern in PATH_PATTERNS.items()}
    assert all(found.values()), found
    (regex,) = set().union(*found.values())
    compiled = re.compile(regex)
    for path in ("/fcgi-bin/iipsrv.fcgi", "/iiif/a.tif/info.json", "/deepzoom/a.tif.dzi", "/zoomify/a/x.jpg"):
        assert compiled.match(path), path
    for path in ("/health", "/slides", "/slides/a.svs", "/tiles/a.svs/0/0/0.jpg", "/view/a.svs"):
        assert compiled.match(path), path
    for path in ("/", "/index.html", "/healthz", "/slidesx", "/metrics", "/fcgi-bin/other", "/iiif"):
        assert not compiled.match(path), path


def test_metrics_is_for_local_clients_only():
    """The nginx location of /metrics lets the loopback addresses in and nobody else."""
    match = re.search(r"^location = /metrics \{\n(.*?)^\}", read(NGINX_LOCATION), re.DOTALL | re.MULTILINE)
    assert match, "conf/nginx/iipsrv_py.conf has no 'location = /metrics'"
    rules = re.findall(r"^\s*((?:allow|deny)\s+[^;]+);", match.group(1), re.MULTILINE)
    assert rules == ["allow 127.0.0.1", "allow ::1", "deny all"]
    assert re.search(r"^\s*fastcgi_pass iipsrv_py;", match.group(1), re.MULTILINE)


# -- every variable the server reads is documented --------------------------------------------------


class RecordingEnvironment(Mapping[str, str]):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.names.add(name)
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        self.names.add(str(name))
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def variables_the_server_reads() -> set[str]:
    environment = RecordingEnvironment()
    settings.from_environ(environment)
    return environment.names


def test_recording_sees_the_variables():
    """The recording itself works: a few names every version reads."""
    assert {"FILESYSTEM_PREFIX", "JPEG_QUALITY", "URI_MAP", "AUTH_SECRET_FILE"} <= variables_the_server_reads()


def not_named_in(relative: str) -> list[str]:
    """The variables the server reads that a file never names (as a whole word: set, commented
    out with its default, or as an alias in prose)."""
    text = read(relative)
    return sorted(name for name in variables_the_server_reads() if not re.search(rf"(?<![A-Z0-9_]){name}\b", text))


def test_env_file_names_every_variable_the_server_reads():
    assert not_named_in(ENV) == []


def test_readme_names_every_variable_the_server_reads():
    assert not_named_in("README.md") == []


# -- systemd ---------------------------------------------------------------------------------------

SERVICE_SANDBOX = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "DynamicUser": "yes",
    "Restart": "on-failure",
    "EnvironmentFile": "-/etc/iipsrv_py.env",
    "StandardInput": "socket",
}


def unit_settings(text: str) -> dict[str, list[str]]:
    """Active ``Key=value`` lines of a unit, every value of each key."""
    found: dict[str, list[str]] = {}
    for key, value in re.findall(r"^(\w+)=(.*)$", text, re.MULTILINE):
        found.setdefault(key, []).append(value.strip())
    return found


def test_service_runs_sandboxed_as_a_user_of_its_own():
    active = unit_settings(read(SERVICE))
    wrong = {key: active.get(key) for key, value in SERVICE_SANDBOX.items() if active.get(key) != [value]}
    assert not wrong, f"{SERVICE}: expected {SERVICE_SANDBOX}, differing: {wrong}"
    assert "User" not in active and "Group" not in active  # DynamicUser's own account


# The one line the verification changes: where the program is installed.
SHIPPED_PROGRAM = "ExecStart=/opt/iipsrv_py/.venv/bin/iipsrv-py "


def test_systemd_units_verify_cleanly(tmp_path):
    """``systemd-analyze verify`` on both units, the service's program pointed at this
    installation's iipsrv-py (it checks that the program exists); any output is a finding."""
    analyze = helpers.require_binary("systemd-analyze")
    program = os.path.join(sys.prefix, "bin", "iipsrv-py")
    assert os.access(program, os.X_OK), program
    service = read(SERVICE)
    assert service.count(SHIPPED_PROGRAM) == 1, f"{SERVICE} no longer starts {SHIPPED_PROGRAM!r}"
    (tmp_path / "iipsrv_py.service").write_text(service.replace(SHIPPED_PROGRAM, f"ExecStart={program} "))
    (tmp_path / "iipsrv_py.socket").write_text(read(SOCKET_UNIT))
    units = [str(tmp_path / "iipsrv_py.service"), str(tmp_path / "iipsrv_py.socket")]
    out = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=60, check=False)
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


def test_systemd_verification_reports_an_unknown_setting(tmp_path):
    """The check above can fail: a misspelt directive is reported, though the status is 0."""
    analyze = helpers.require_binary("systemd-analyze")
    (tmp_path / "x.service").write_text("[Service]\nExecStart=/bin/true\nProtectSytem=strict\n")
    out = subprocess.run([analyze, "verify", str(tmp_path / "x.service")], capture_output=True, text=True, timeout=60)
    assert "ProtectSytem" in out.stdout + out.stderr
