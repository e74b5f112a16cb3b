"""scripts/bench still works: both servers behind one nginx, a table with both rows and a ratio.

Only proves the script runs (CI does not time anything): small images, one second per run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests import helpers

pytestmark = pytest.mark.integration

IIPSRV_CPP = "/usr/lib/iipimage-server/iipsrv.fcgi"


@pytest.mark.time_limit(240)
def test_bench_quick_compares_both_servers(tmp_path) -> None:
    for program in ("wrk", "nginx", "spawn-fcgi"):
        helpers.require_binary(program)
    if not os.path.exists(IIPSRV_CPP):
        message = "Debian's iipimage-server is not installed (scripts/test installs it)"
        pytest.fail(message) if helpers.IN_CI else pytest.skip(message)
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(helpers.ROOT, "scripts", "bench.py"),
            "--quick",
            "--only",
            "1,4",
            "--duration",
            "1",
            "--images",
            str(tmp_path / "images"),
            "--markdown",
            str(tmp_path / "table.md"),
        ],
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    table = (tmp_path / "table.md").read_text()
    for scenario in ("1. warm JPEG tiles", "4. metadata"):
        rows = [line for line in table.splitlines() if line.startswith(f"| {scenario}")]
        assert len(rows) == 2, table
        ours, cpp = rows
        assert "| iipsrv-py |" in ours and "| iipsrv 1.1 |" in cpp
        rates = [float(re.split(r"\s*\|\s*", row)[3].replace(",", "")) for row in rows]
        assert all(rate > 0 for rate in rates), rows
        errors = [int(re.split(r"\s*\|\s*", row)[6]) for row in rows]
        assert errors == [0, 0], rows
        assert re.search(r"\*\*[\d.]+×\*\*", ours), ours
