"""``iipsrv-py --http``: gunicorn in front of the same application."""

from __future__ import annotations

import http.client

import pytest

from iipsrv_py import __version__
from tests import helpers
from tests.integration import servers

pytestmark = pytest.mark.integration

TABLES = "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif"


def test_server_header_names_this_server_once(workdir: str) -> None:
    port = servers.free_port()
    env = servers.base_env(FILESYSTEM_PREFIX=helpers.fixture_dir() + "/", VERBOSITY="1")
    server = servers.Managed(
        "iipsrv-py-http", [servers.IIPSRV, "--http", f"127.0.0.1:{port}", "--workers", "1"], workdir, env
    )
    try:
        server.wait_accepting(("127.0.0.1", port))
        for path in ("/", f"/?FIF={TABLES}&OBJ=Max-size", "/?FIF=no-such-image.tif&OBJ=Max-size"):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                body = response.read()
                # Every header line as sent, duplicates kept (a client library would merge them).
                sent = [value for name, value in response.getheaders() if name.lower() == "server"]
            finally:
                connection.close()
            assert sent == [f"iipsrv-py/{__version__}"], (path, sent)
            assert int(response.getheader("Content-Length", "-1")) == len(body)
    finally:
        server.stop()
