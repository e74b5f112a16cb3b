"""lighttpd in front of the server, with the shipped file: mod_fastcgi starts one
``iipsrv-py --workers 4`` (bin-path) on its socket, as lighttpd's user.

It serves an IIIF info.json (also for an identifier holding %2F), a stored JPEG tile, a PNG
region and a CVT view, checked against tifffile's and Pillow's decoding of the sources, and
answers each exactly as nginx in front of an ``iipsrv-py --bind`` pool does.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests.integration import deploy_support, servers
from tests.integration.deploy_support import SHIPPED_IMAGES, SHIPPED_PROGRAM, Lighttpd, Site, substitute

pytestmark = pytest.mark.integration

LIGHTTPD = "conf/lighttpd/iipsrv_py.conf"
SHIPPED_SOCKET = "/run/lighttpd/iipsrv_py-fastcgi.socket"
# The shipped bin-path's pool.
WORKERS = 4


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with deploy_support.site() as shared:
        yield shared


def test_lighttpd_starts_the_server_as_its_user(site: Site) -> None:
    program = site.install.program
    workdir = site.workdir("lighttpd")
    text = substitute(
        deploy_support.read_conf(LIGHTTPD),
        {
            SHIPPED_PROGRAM: program,
            SHIPPED_SOCKET: os.path.join(workdir, "iipsrv_py-fastcgi.socket"),
            SHIPPED_IMAGES: site.image_root,
        },
        LIGHTTPD,
    )
    conf = deploy_support.write(os.path.join(workdir, "iipsrv_py.conf"), text)
    lighttpd = Lighttpd(workdir, conf)
    try:
        got = deploy_support.answers(lighttpd.base_url)
        deploy_support.check_same_answers(got, lighttpd.base_url, site.expected)
        # One server process (max-procs 1), its pool of the shipped --workers, all as lighttpd's user.
        (supervisor,) = [pid for pid in deploy_support.program_processes(program) if servers.children(pid)]
        workers = servers.wait_until(
            lambda: found if len(found := servers.children(supervisor)) == WORKERS else None,
            servers.START_TIMEOUT,
            f"{WORKERS} workers",
        )
        user = deploy_support.web_user()
        assert {deploy_support.process_uid(pid) for pid in [supervisor, *workers]} == {user.pw_uid}
        # A server that exits is started again, on the same socket (a request sent before
        # lighttpd notices finds nobody listening and gets 503: not part of the test).
        os.kill(supervisor, signal.SIGTERM)

        def successor() -> int | None:
            found = [pid for pid in deploy_support.program_processes(program) if pid != supervisor]
            pools = [pid for pid in found if len(servers.children(pid)) == WORKERS]
            return pools[0] if len(found) == WORKERS + 1 and pools else None

        servers.wait_until(successor, servers.START_TIMEOUT, "lighttpd to start the server again")
        again = deploy_support.answers(lighttpd.base_url)
        deploy_support.check_same_answers(again, lighttpd.base_url, site.expected)
    except BaseException:
        print(lighttpd.error_log())
        raise
    finally:
        lighttpd.stop()
    deploy_support.assert_none_left(program)
