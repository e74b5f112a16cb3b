"""Memory is bounded by the output, not the source (issue: limits).

A 100,000 x 50,000 pyramid (15 GB of pixels at full size, 23 MB on disk: every tile the same
compressed block) is asked for whole at 512 pixels wide, plain and through the float stage of
processing.  Each request runs in a fresh subprocess, whose peak resident memory (ru_maxrss)
after the request is compared with its peak before it: a plan that decoded the full level, or
any level much larger than the output, would need gigabytes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests import helpers

WIDTH, HEIGHT, TILE = 100_000, 50_000, 256
COLOUR = (200, 120, 40)
# The request's own growth: the levels it reads (782 x 391 is the smallest one at least 512
# wide: under 1 MB decoded), encoders and allocator slack.  Measured: 10-20 MB.
LIMIT_MB = 64

PROBE = """
import json, resource, sys
sys.path.insert(0, {root!r})
from tests import helpers
app = helpers.make_app(FILESYSTEM_PREFIX={prefix!r})
helpers.call(app, "FIF=wide.tif&OBJ=IIP,1.0&OBJ=Max-size")  # opened: its structure is in memory
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = helpers.call(app, {query!r})
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sys.stdout.buffer.write(json.dumps({{"status": result.status, "grown_kb": after - before}}).encode() + b"\\n")
sys.stdout.buffer.write(result.body)
"""


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("wide")
    helpers.write_uniform_pyramid(directory / "wide.tif", WIDTH, HEIGHT, TILE, COLOUR)
    return f"{directory}/"


@pytest.mark.parametrize(
    "query",
    [
        "FIF=wide.tif&RGN=0,0,1,1&WID=512&CVT=png",
        "FIF=wide.tif&RGN=0,0,1,1&WID=512&GAM=2&INV=1&CNV=sharpen&CVT=png",
        "FIF=wide.tif&RGN=0.25,0.25,0.5,0.5&WID=512&CTW=[0,0,1;0,1,0;1,0,0]&CVT=png",
    ],
)
def test_whole_image_at_512_wide_reads_a_small_level(wide: str, query: str) -> None:
    script = PROBE.format(root=helpers.ROOT, prefix=wide, query=query)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    header, _, body = done.stdout.partition(b"\n")
    report = json.loads(header)
    assert report["status"] == 200
    assert report["grown_kb"] / 1024 < LIMIT_MB, report
    pixels = np.asarray(__import__("tests.functional.reference", fromlist=["decode"]).decode(body))
    assert pixels.shape[1] == 512 and abs(pixels.shape[0] - 256) <= 1
    v = np.array(COLOUR) / 255
    expected = {
        "GAM": np.clip(np.rint((1 - v**2) * 255), 0, 255),  # sharpening a flat image changes nothing
        "CTW": np.array(COLOUR[::-1]),
    }
    colour = next((value for key, value in expected.items() if key in query), np.array(COLOUR))
    centre = pixels[pixels.shape[0] // 2, 256].astype(int)
    assert np.abs(centre - colour).max() <= 1, (centre, colour)
