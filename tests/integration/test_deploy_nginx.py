"""The shipped nginx files let only local clients reach /metrics.

Tests talk over the loopback interface only, so the client address nginx judges is set by the
test's own nginx configuration around the shipped files: the realip module takes it from an
X-Forwarded-For header sent by 127.0.0.1.  The shipped allow/deny lines then decide.
"""

from __future__ import annotations

import os

import pytest

from tests import helpers
from tests.integration import deploy_support, servers

pytestmark = pytest.mark.integration

# The test's configuration: the client address is the X-Forwarded-For header's.
REAL_IP = "    set_real_ip_from 127.0.0.1;\n    real_ip_header X-Forwarded-For;\n"


def metrics_lines(server: servers.IIPServer) -> int:
    # The access line of each request (VERBOSITY=2), whatever the answer.
    return sum("GET /metrics" in line for line in server.log().splitlines())


def test_metrics_only_for_local_clients(workdir: str) -> None:
    binary = helpers.require_binary("nginx")
    server = servers.start_iipsrv(workdir, ("127.0.0.1", servers.free_port()), workers=1)
    try:
        port = servers.free_port()
        nginx_dir = os.path.join(workdir, "nginx")
        os.makedirs(nginx_dir)
        text = servers.nginx_conf(nginx_dir, port, server.upstream)
        conf = deploy_support.write(
            os.path.join(nginx_dir, "nginx.conf"),
            deploy_support.substitute(text, {"http {\n": "http {\n" + REAL_IP}, "the generated nginx.conf"),
        )
        argv = [binary, "-p", nginx_dir + "/", "-e", os.path.join(nginx_dir, "error.log"), "-c", conf]
        nginx = servers.Managed("nginx", argv, nginx_dir)
        try:
            nginx.wait_accepting(("127.0.0.1", port))
            base = f"http://127.0.0.1:{port}"

            def get(path: str, client: str) -> int:
                with servers.http_session() as session:
                    response = session.get(base + path, headers={"X-Forwarded-For": client}, timeout=5)
                return response.status_code

            # Local clients reach the server (its answer, whatever it is, shows in its log).
            for client in ("127.0.0.1", "::1"):
                before = metrics_lines(server)
                assert get("/metrics", client) != 403
                servers.wait_until(lambda b=before: metrics_lines(server) > b, 5, "the server to log /metrics")
            # Others get nginx's 403, and the server never sees the request.
            before = metrics_lines(server)
            for client in ("192.0.2.1", "2001:db8::1", "10.0.0.1"):
                assert get("/metrics", client) == 403
            # The same clients reach the images.
            assert get("/health", "192.0.2.1") == 200
            assert metrics_lines(server) == before
        finally:
            nginx.stop()
    finally:
        server.stop()
