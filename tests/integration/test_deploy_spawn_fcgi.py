"""nginx (the shipped files) in front of spawn-fcgi's several processes: ``spawn-fcgi -F 3``
creates the socket and starts three ``iipsrv-py`` on it, each as the web servers' user and each
one worker (the default on an inherited socket), as the README's spawn-fcgi section shows.

They serve an IIIF info.json (also for an identifier holding %2F), a stored JPEG tile, a PNG
region and a CVT view, checked against tifffile's and Pillow's decoding of the sources, and
answer each exactly as nginx in front of an ``iipsrv-py --bind`` pool does.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests import helpers
from tests.integration import deploy_support, servers
from tests.integration.deploy_support import Site

pytestmark = pytest.mark.integration

PROCESSES = 3


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with deploy_support.site() as shared:
        yield shared


def spawn_fcgi(workdir: str, port: int, program: str, image_root: str) -> list[int]:
    """``spawn-fcgi -F N``: it forks N servers, writes their pids and exits."""
    spawn = helpers.require_binary("spawn-fcgi")
    pidfile = os.path.join(workdir, "spawn-fcgi.pid")
    user = ["-u", deploy_support.WEB_USER, "-g", deploy_support.WEB_USER] if deploy_support.as_root() else []
    argv = [spawn, "-a", "127.0.0.1", "-p", str(port), "-F", str(PROCESSES), "-P", pidfile, *user, "--", program]
    env = servers.base_env(**deploy_support.server_env(image_root))
    spawned = servers.Managed("spawn-fcgi", argv, workdir, env)
    status = spawned.wait_exit(timeout=servers.START_TIMEOUT)
    assert status == 0, spawned.describe()
    with open(pidfile) as f:
        return [int(line) for line in f.read().split()]


def test_nginx_in_front_of_spawn_fcgi_processes(site: Site) -> None:
    program = site.install.program
    workdir = site.workdir("spawn-fcgi")
    port = servers.free_port()
    pids = spawn_fcgi(workdir, port, program, site.image_root)
    try:
        assert len(pids) == PROCESSES
        # Each child of spawn-fcgi becomes the program (it may still be on its way there).
        servers.wait_until(
            lambda: set(pids) <= set(deploy_support.program_processes(program)), servers.START_TIMEOUT, "the servers"
        )
        servers.wait_until(lambda: servers.accepts(("127.0.0.1", port)), servers.START_TIMEOUT, "spawn-fcgi's socket")
        nginx = servers.Nginx(workdir, f"127.0.0.1:{port}")
        try:
            got = deploy_support.answers(nginx.base_url)
            deploy_support.check_same_answers(got, nginx.base_url, site.expected)
        finally:
            nginx.stop()
        user = deploy_support.web_user()
        for pid in pids:
            (worker,) = servers.wait_until(lambda pid=pid: servers.children(pid), servers.START_TIMEOUT, "a worker")
            assert {deploy_support.process_uid(pid), deploy_support.process_uid(worker)} == {user.pw_uid}
    finally:
        # spawn-fcgi puts each server in a session of its own: stop them one by one.
        for pid in pids:
            if servers.running(pid):
                os.kill(pid, signal.SIGTERM)
    deploy_support.assert_none_left(program)
