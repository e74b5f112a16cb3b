"""scripts/bench still works: both servers (iipsrv-py under both engines) behind one nginx, a
table with a row each and ratios, and the latency table of scenario 6.

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


@pytest.mark.time_limit(280)
def test_bench_quick_compares_both_servers(tmp_path) -> None:
    for program in ("wrk", "nginx", "spawn-fcgi"):
        helpers.require_binary(program)
    if not os.path.exists(IIPSRV_CPP):
        message = "Debian's iipimage-server is not installed (scripts/test installs it)"
        pytest.fail(message) if helpers.IN_CI else pytest.skip(message)
    table = run_bench(tmp_path, "--engine", "both", "--only", "1,3c,4,6")
    servers = {
        # Scenario 1 also compares the engines without kept connections.
        "1. warm JPEG tiles": ["iipsrv-py native", "iipsrv-py native, a connection per request"],
        "3c. processing": ["iipsrv-py native"],
        "4. metadata": ["iipsrv-py native"],
    }
    for scenario, native in servers.items():
        rows = [line for line in table.splitlines() if line.startswith(f"| {scenario}")]
        assert [cell(row, 2) for row in rows] == [*native, "iipsrv-py flup", "iipsrv 1.1"], table
        rates = [float(cell(row, 3).replace(",", "")) for row in rows]
        assert all(rate > 0 for rate in rates), rows
        assert all(int(cell(row, 6)) == 0 for row in rows), rows
        for ours, rate in zip(rows[:-1], rates[:-1], strict=True):
            ratio = re.fullmatch(r"\*\*([\d.]+)×\*\*", cell(ours, 8))
            assert ratio, ours
            # The table prints rates rounded to whole requests per second and the ratio of the
            # unrounded ones: they agree within that rounding (a large share at low rates).
            exact = rate / rates[-1]
            assert abs(float(ratio.group(1)) - exact) <= 0.01 + exact * (0.5 / rate + 0.5 / rates[-1]), ours
    # Scenario 6: one row per engine and connection mode, each with tile latencies and renders.
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| 6. warm tiles while slow renders run"))
    blocking = [line for line in lines[header + 2 :] if line.startswith("| iipsrv")]
    assert [(cell(row, 1), cell(row, 2).split(" ")[0]) for row in blocking] == [
        ("iipsrv-py native", "kept"),
        ("iipsrv-py native", "a"),
        ("iipsrv-py flup", "a"),
        ("iipsrv 1.1", "a"),
    ], table
    for row in blocking:
        p50, p99 = float(cell(row, 4)), float(cell(row, 5))
        assert 0 < p50 <= p99, row
        assert int(cell(row, 6)) == 0, row
        assert re.fullmatch(r"[1-9]\d*", cell(row, 7)), f"no slow rendering finished, or one failed: {row}"


def run_bench(tmp_path, *args: str) -> str:
    """scripts/bench.py --quick with one-second runs and ``args``: its markdown table."""
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(helpers.ROOT, "scripts", "bench.py"),
            "--quick",
            *args,
            "--duration",
            "1",
            "--images",
            str(tmp_path / "images"),
            "--markdown",
            str(tmp_path / "table.md"),
        ],
        capture_output=True,
        text=True,
        timeout=270,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return (tmp_path / "table.md").read_text()


def cell(row: str, index: int) -> str:
    """Column ``index`` (1 = first) of a markdown table row."""
    return re.split(r"\s*\|\s*", row)[index]


@pytest.mark.time_limit(280)
def test_bench_s3_quick_serves_one_image_from_the_store_and_from_disk(tmp_path) -> None:
    """`scripts/bench --s3` runs: warm tiles from the bucket cost no store request once the
    workers share memcached, a cold first tile a handful of ranged GETs, far from the whole file."""
    for program in ("wrk", "nginx"):
        helpers.require_binary(program)
    table = run_bench(tmp_path, "--s3")
    rows = {
        tuple(cell.strip() for cell in line.split("|")[1:3]): [cell.strip() for cell in line.split("|")[3:-1]]
        for line in table.splitlines()
        if line.startswith(("| warm", "| cold"))
    }
    shared = rows[("warm JPEG tiles, IIIF URLs", "S3 (moto) + memcached")]
    assert float(shared[0].replace(",", "")) > 0 and shared[3] == "0" and shared[4] == "0"  # rate, errors, GETs
    # Without memcached a worker reads what only the other worker had answered: GETs may happen,
    # errors may not.
    assert rows[("warm JPEG tiles, IIIF URLs", "S3 (moto)")][3] == "0"
    cold = next(
        cells for (scenario, storage), cells in rows.items() if scenario.startswith("cold") and storage == "S3 (moto)"
    )
    median_gets = float(cold[4].split()[0])
    size = os.path.getsize(str(tmp_path / "images" / "bench-rgb-4000x3000-256tile-jpeg.tif"))
    assert 1 <= median_gets <= 8 and float(cold[6]) * 1e6 < size / 2, cold
    assert ("warm JPEG tiles, IIIF URLs", "local disk") in rows
    assert ("warm JPEG tiles, IIIF URLs", "local disk + memcached") in rows
