"""spawn-fcgi creates the socket and starts ``iipsrv-py`` on fd 0; nginx proxies to it."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from tests.integration import reference, servers

pytestmark = pytest.mark.integration

TABLES = "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif"


def check_requests(stack: servers.Stack) -> None:
    levels = reference.levels(TABLES)
    info = stack.get(f"FIF={TABLES}&OBJ=Max-size&OBJ=Resolution-number")
    assert info.status_code == 200
    assert info.content.decode() == f"Max-size:{levels[-1].width} {levels[-1].height}\r\nResolution-number:5\r\n"

    tile = stack.get(f"FIF={TABLES}&JTL=3,7")
    assert tile.status_code == 200
    assert tile.headers["Content-Type"] == "image/jpeg"
    assert np.array_equal(reference.decode(tile.content, "JPEG"), reference.tile_pixels(TABLES, 3, 7))


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_spawn_fcgi_behind_nginx(workdir: str, engine: str, transport: str) -> None:
    with servers.short_tempdir() as sockets:
        path = os.path.join(sockets, "iipsrv.sock")
        bind = path if transport == "unix" else ("127.0.0.1", servers.free_port())
        with servers.spawn_fcgi_stack(workdir, bind, engine=engine) as stack:
            with open(f"/proc/{stack.server.pid}/cmdline", "rb") as f:
                assert b"iipsrv-py" in f.read(), "spawn-fcgi -n execs the server in its own process"
            # On an inherited socket the process manager decides how many run: one worker.
            stack.server.wait_workers(1)
            check_requests(stack)
            assert "inherited socket" in stack.server.log()

            stack.server.signal(signal.SIGTERM)
            stack.server.wait_exit(timeout=5)
            assert not servers.group_members(stack.server.pid)
            if transport == "unix":
                # spawn-fcgi made the socket: its path stays (spawn-fcgi replaces a stale one).
                assert os.path.exists(path)


def test_spawn_fcgi_with_several_workers(workdir: str, engine: str) -> None:
    bind = ("127.0.0.1", servers.free_port())
    with servers.spawn_fcgi_stack(workdir, bind, args=["--workers", "3"], engine=engine) as stack:
        workers = stack.server.wait_workers(3)
        for _ in range(3):
            check_requests(stack)
        assert stack.server.workers() == workers
