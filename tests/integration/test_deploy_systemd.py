"""The service unit's MemoryDenyWriteExecute=yes does not break the server.

systemd forbids memory that is writable and executable with a seccomp filter; the kernel's
PR_SET_MDWE (Linux 6.3) enforces the same rule on a process and everything it starts.  A pool
started under it, behind the shipped nginx files, renders a JPEG 2000 source and every output
format (with resampling: libvips) byte for byte as a pool without it does.
"""

from __future__ import annotations

import ctypes
import sys

import pytest

from tests import helpers
from tests.integration import deploy_support, servers

pytestmark = pytest.mark.integration

PR_SET_MDWE = 65
PR_GET_MDWE = 66
PR_MDWE_REFUSE_EXEC_GAIN = 1

# Sets the rule, checks that it holds (a writable and executable mapping is refused), then
# becomes the program named by its arguments, which keeps the rule (and so do its children).
UNDER_MDWE = f"""
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit("PR_SET_MDWE failed: errno %d" % ctypes.get_errno())
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    pass
else:
    sys.exit("a writable and executable mapping was allowed")
os.execv(sys.argv[1], sys.argv[1:])
"""

# Reports the rule of the process it runs in.
REPORT = f"import ctypes; print(ctypes.CDLL(None).prctl({PR_GET_MDWE}, 0, 0, 0, 0))"

DEFLATE = deploy_support.DEFLATE
JP2 = "jp2-rgb-3000x2000-5res-3layer.jp2"
REQUESTS = [
    *(f"/iiif/{DEFLATE}/0,0,1500,1000/500,/0/default.{ext}" for ext in ("jpg", "png", "webp", "avif", "tif")),
    f"/iiif/{JP2}/600,400,1200,800/300,/0/default.png",
    f"/fcgi-bin/iipsrv.fcgi?FIF={DEFLATE}&WID=700&CVT=jpeg",
]


def kernel_has_mdwe() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) >= 0


def bodies(workdir: str, argv_prefix: list[str]) -> list[bytes]:
    """The answers of a 2-worker pool started as ``argv_prefix + [iipsrv-py, --bind ...]``
    behind the shipped nginx files."""
    address = ("127.0.0.1", servers.free_port())
    argv = [*argv_prefix, servers.IIPSRV, "--bind", f"127.0.0.1:{address[1]}", "--workers", "2"]
    env = {"FILESYSTEM_PREFIX": helpers.fixture_dir() + "/", "URI_MAP": deploy_support.URI_MAP}
    server = servers.IIPServer(workdir, argv, address, env)
    try:
        server.wait_accepting(address)
        server.wait_workers(2)
        nginx = servers.Nginx(workdir, server.upstream)
        try:
            got = [deploy_support.get(nginx.base_url, path) for path in REQUESTS]
        finally:
            nginx.stop()
        assert server.alive(), server.describe()
    finally:
        server.stop()
    for path, response in zip(REQUESTS, got, strict=True):
        assert response.status_code == 200, f"{path}: {response.status_code}\n{server.describe()}"
    return [response.content for response in got]


def test_the_server_needs_no_writable_executable_memory(tmp_path) -> None:
    if not kernel_has_mdwe():
        message = "this kernel has no PR_SET_MDWE (Linux 6.3 or later)"
        if helpers.IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    # The rule holds in what the wrapper starts.
    report = servers.Managed("report", [sys.executable, "-c", UNDER_MDWE, sys.executable, "-c", REPORT], str(tmp_path))
    assert report.wait_exit(timeout=30) == 0, report.describe()
    assert report.output().strip() == str(PR_MDWE_REFUSE_EXEC_GAIN), report.describe()

    plain_dir, guarded_dir = tmp_path / "plain", tmp_path / "guarded"
    plain_dir.mkdir()
    guarded_dir.mkdir()
    plain = bodies(str(plain_dir), [])
    guarded = bodies(str(guarded_dir), [sys.executable, "-c", UNDER_MDWE])
    for path, a, b in zip(REQUESTS, plain, guarded, strict=True):
        assert a == b, f"{path}: a different answer under MDWE"
    assert len({len(body) for body in plain}) == len(REQUESTS)  # every answer its own image
