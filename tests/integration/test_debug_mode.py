"""``iipsrv-py --debug``: request strings on stdin, each response body in ./iipsrv.debug."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests import helpers
from tests.integration import reference, servers

pytestmark = pytest.mark.integration

TABLES = "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif"


def run_debug(workdir: str, lines: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Runs the server in debug mode; it must exit by itself at the end of its input."""
    env = servers.base_env(
        FILESYSTEM_PREFIX=helpers.fixture_dir() + "/",
        VERBOSITY="2",
        LOGFILE=os.path.join(workdir, "debug.log"),
    )
    return subprocess.run(
        [servers.IIPSRV, "--debug"],
        input="".join(line + "\n" for line in lines).encode(),
        cwd=workdir,
        env=env,
        capture_output=True,
        timeout=20,
        check=False,
    )


def debug_output(workdir: str) -> bytes:
    with open(os.path.join(workdir, "iipsrv.debug"), "rb") as f:
        return f.read()


def test_one_line(workdir: str) -> None:
    done = run_debug(workdir, [f"FIF={TABLES}&OBJ=Max-size"])

    assert done.returncode == 0, done.stderr.decode(errors="replace")
    full = reference.levels(TABLES)[-1]
    assert debug_output(workdir) == f"Max-size:{full.width} {full.height}\r\n".encode()


def test_last_response_is_kept(workdir: str) -> None:
    lines = [f"FIF={TABLES}&OBJ=Max-size", f"FIF={TABLES}&JTL=0,0"]
    done = run_debug(workdir, lines)

    assert done.returncode == 0, done.stderr.decode(errors="replace")
    # The file holds the tile alone: it was truncated before the second body was written.
    tile = reference.decode(debug_output(workdir), "JPEG")
    smallest = reference.levels(TABLES)[0]
    assert tile.shape[:2] == (smallest.height, smallest.width)
    expected = reference.tile_pixels(TABLES, 0, 0)
    assert reference.mean_abs_diff(tile, expected) <= reference.jpeg_error(expected, 75) + 0.5
    with open(os.path.join(workdir, "debug.log")) as f:
        log = f.read()
    for line in lines:
        assert line in log, "each request is logged"


def test_no_input_exits_at_once(workdir: str) -> None:
    done = run_debug(workdir, [])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
