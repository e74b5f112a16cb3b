"""The shipped deployment files and the README agree on where the FastCGI pool listens.

An operator switches nginx, Apache, systemd or spawn-fcgi to the unix socket by uncommenting
the line each file offers; that only works when every one of them names the same path (and
the same TCP address for the default).  Commented lines count: they are the alternatives.
"""

from __future__ import annotations

import os
import re

import pytest

from tests import helpers

SOCKET_UNIT = "systemd/iipsrv_py.socket"
SERVICE = "systemd/iipsrv_py.service"
NGINX_UPSTREAM = "conf/nginx/iipsrv_py-upstream.conf"
NGINX_LOCATION = "conf/nginx/iipsrv_py.conf"
APACHE = "conf/apache/iipsrv_py.conf"
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
    APACHE: apache_paths,
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
    names = [*SOCKET_PATHS, NGINX_LOCATION, ENV]
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
    for name in [SOCKET_UNIT, SERVICE, NGINX_UPSTREAM, NGINX_LOCATION, APACHE, "README.md"]:
        addresses[name] = set(re.findall(r"\b(\d{1,3}(?:\.\d{1,3}){3}:\d+)", _text(name)))
    assert set().union(*addresses.values()) == {"127.0.0.1:9000"}, addresses
    assert re.search(r"^ListenStream=127\.0\.0\.1:9000$", read(SOCKET_UNIT), re.MULTILINE)
    assert re.search(r"^\s*server 127\.0\.0\.1:9000;", read(NGINX_UPSTREAM), re.MULTILINE)
