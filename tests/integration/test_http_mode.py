"""``iipsrv-py --http``: gunicorn in front of the same application."""

from __future__ import annotations

import http.client
import re
import time

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


def test_metrics_add_up_over_gunicorn_workers(workdir: str) -> None:
    """The --http mode's workers are gunicorn's, forked after the metrics directory was made:
    /metrics sums them as it does the FastCGI pool's."""
    from prometheus_client.parser import text_string_to_metric_families

    port = servers.free_port()
    log = f"{workdir}/http.log"
    env = servers.base_env(FILESYSTEM_PREFIX=helpers.fixture_dir() + "/", VERBOSITY="2", LOGFILE=log)
    argv = [servers.IIPSRV, "--http", f"127.0.0.1:{port}", "--workers", "2"]
    server = servers.Managed("iipsrv-py-http", argv, workdir, env)
    try:
        server.wait_accepting(("127.0.0.1", port))
        sent = 0
        for n in range(24):  # a connection each: gunicorn's sync workers take turns
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                connection.request("GET", f"/?FIF={TABLES}&JTL=4,{n}")
                response = connection.getresponse()
                assert response.status == 200
                sent += len(response.read())
            finally:
                connection.close()
        time.sleep(1.5)  # each worker writes its tallies once a second
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode()
        finally:
            connection.close()
    finally:
        server.stop()
    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    with open(log) as f:
        answering = set(re.findall(r"iipsrv-py\[(\d+)\] INFO GET /\?FIF=", f.read()))
    assert len(answering) == 2, "both workers answered part of the requests"
    assert values[("iipsrv_requests_total", (("protocol", "IIP"), ("status", "200")))] == 24
    assert values[("iipsrv_response_bytes_total", (("protocol", "IIP"),))] == sent
