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
    from concurrent.futures import ThreadPoolExecutor

    from prometheus_client.parser import text_string_to_metric_families

    port = servers.free_port()
    log = f"{workdir}/http.log"
    env = servers.base_env(FILESYSTEM_PREFIX=helpers.fixture_dir() + "/", VERBOSITY="2", LOGFILE=log)
    argv = [servers.IIPSRV, "--http", f"127.0.0.1:{port}", "--workers", "2"]
    server = servers.Managed("iipsrv-py-http", argv, workdir, env)

    def get(path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def answering() -> set[str]:
        with open(log) as f:
            return set(re.findall(r"iipsrv-py\[(\d+)\] INFO GET /\?FIF=", f.read()))

    try:
        server.wait_accepting(("127.0.0.1", port))
        sent, count = 0, 0
        # Views rendered four at a time, batch after batch until both workers have answered
        # some (which one accepts a connection is gunicorn's business): every one is counted.
        with ThreadPoolExecutor(4) as pool:
            deadline = time.monotonic() + 20
            while len(answering()) < 2 and time.monotonic() < deadline:
                paths = [f"/?FIF={TABLES}&WID={200 + count + i}&CVT=jpeg" for i in range(8)]
                for status, body in pool.map(get, paths):
                    assert status == 200
                    sent += len(body)
                count += len(paths)
        assert len(answering()) == 2, "both workers answered part of the requests"
        time.sleep(1.5)  # each worker writes its tallies once a second
        status, body = get("/metrics")
        assert status == 200
    finally:
        server.stop()
    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    assert values[("iipsrv_requests_total", (("protocol", "IIP"), ("status", "200")))] == count
    assert values[("iipsrv_response_bytes_total", (("protocol", "IIP"),))] == sent
