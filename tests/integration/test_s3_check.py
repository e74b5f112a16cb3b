"""``iipsrv-py check`` (SPEC section 1): against the moto bucket and a local directory, exit 0 on
good images and non-zero, saying what failed, on a broken one or an unreachable store."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import tifffile

from tests import s3_store
from tests.integration import servers
from tests.integration.s3_fixtures import S3Images

pytestmark = pytest.mark.integration

PYRAMID = "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif"


def check(*args: str, endpoint: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    variables = servers.base_env(**s3_store.CREDENTIALS, **env)
    if endpoint:
        variables["S3_ENDPOINT"] = endpoint
    return subprocess.run(
        [servers.IIPSRV, "check", *args], env=variables, capture_output=True, text=True, timeout=25, check=False
    )


def test_check_lists_the_bucket_s_images_and_decodes_a_tile_of_every_level(s3_images: S3Images):
    result = check(s3_images.url, "--list-slides", "--test-slide", PYRAMID, endpoint=s3_images.store.endpoint)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"reached {s3_images.url}"
    images = {name for name in s3_images.local if name.endswith((".tif", ".tiff", ".svs", ".jp2", ".j2k", ".jpg"))}
    assert images <= set(lines)
    with tifffile.TiffFile(s3_images.local[PYRAMID]) as tif:
        levels = len(tif.pages)
    assert len([line for line in lines if line.startswith("level ")]) == levels
    assert "FAILED" not in result.stdout


def test_check_takes_the_root_from_filesystem_prefix(s3_images: S3Images):
    result = check("--test-slide", "cmu_small_region.svs", endpoint=s3_images.store.endpoint,
                   FILESYSTEM_PREFIX=s3_images.url)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "opened cmu_small_region.svs: svs" in result.stdout


@pytest.mark.parametrize(
    "name", ["broken-truncated.jp2", "broken-truncated.jpg", "not-an-image.tif", "no-such-image.tif"]
)
def test_check_fails_with_a_message_on_a_broken_or_missing_image(s3_images: S3Images, name):
    result = check(s3_images.url, "--test-slide", name, endpoint=s3_images.store.endpoint)
    assert result.returncode == 1
    assert "FAILED" in result.stdout
    if name.startswith("no-such"):
        assert "404" in result.stdout


def test_check_a_local_directory(fixtures: str, tmp_path):
    result = check(fixtures, "--list-slides", "--test-slide", "jp2-rgb-3000x2000-5res-3layer.jp2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert PYRAMID in result.stdout.splitlines()
    assert check(str(tmp_path / "nowhere")).returncode == 1
    assert check(fixtures, "--test-slide", "broken-truncated.jp2").returncode == 1


def test_check_an_unreachable_store_fails_within_seconds():
    started = time.monotonic()
    result = check("s3://some-bucket/", endpoint=f"http://127.0.0.1:{s3_store.free_port()}", S3_RETRIES="0")
    assert result.returncode == 1
    assert result.stdout.startswith("FAILED: cannot reach s3://some-bucket/")
    assert time.monotonic() - started < 15


def test_the_server_flags_still_work():
    result = subprocess.run([servers.IIPSRV, "--version"], capture_output=True, text=True, timeout=20, check=False)
    assert result.returncode == 0 and result.stdout.startswith("iipsrv-py ")
    assert os.access(servers.IIPSRV, os.X_OK)
