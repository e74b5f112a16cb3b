"""Apache 2.4 in front of the server, with the shipped files: mod_fcgid starting the server
itself as Apache's user, and mod_proxy_fcgi forwarding to a pool started on its own.

Each serves an IIIF info.json (also for an identifier holding %2F), a stored JPEG tile, a PNG
region and a CVT view, checked against tifffile's and Pillow's decoding of the sources, and
answers each exactly as nginx in front of an ``iipsrv-py --bind`` pool does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration import deploy_support, servers
from tests.integration.deploy_support import SHIPPED_IMAGES, Apache, Site, substitute

pytestmark = pytest.mark.integration

FCGID = "conf/apache/iipsrv_py-fcgid.conf"
PROXY_FCGI = "conf/apache/iipsrv_py-proxy-fcgi.conf"
SHIPPED_BIN = os.path.dirname(deploy_support.SHIPPED_PROGRAM)
SHIPPED_POOL = "fcgi://127.0.0.1:9000"
# As many processes as the shipped FcgidMaxProcessesPerClass.
FCGID_MAX_PROCESSES = 4


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with deploy_support.site() as shared:
        yield shared


def test_mod_fcgid_runs_the_server_as_apaches_user(site: Site) -> None:
    program = site.install.program
    workdir = site.workdir("apache-fcgid")
    text = substitute(
        deploy_support.read_conf(FCGID),
        {SHIPPED_BIN: os.path.dirname(program), SHIPPED_IMAGES: site.image_root},
        FCGID,
    )
    conf = deploy_support.write(os.path.join(workdir, "iipsrv_py-fcgid.conf"), text)
    # mod_fcgid's sockets and process table, in the private directory.
    fcgid = f'FcgidIPCDir "{workdir}/fcgid"\nFcgidProcessTableFile "{workdir}/fcgid-shm"\n'
    apache = Apache(workdir, ["alias", "fcgid"], fcgid, conf)
    try:
        got = deploy_support.answers(apache.base_url)
        deploy_support.check_same_answers(got, apache.base_url, site.expected)
        pids = deploy_support.program_processes(program)
        assert pids, "no iipsrv-py process answered"
        user = deploy_support.web_user()
        assert {deploy_support.process_uid(pid) for pid in pids} == {user.pw_uid}
        # Concurrent views: mod_fcgid starts more processes, never more than the shipped maximum
        # (each a supervisor and its one worker).
        view = deploy_support.REQUESTS["view"]
        with ThreadPoolExecutor(6) as pool:
            bodies = list(pool.map(lambda _: deploy_support.get(apache.base_url, view).content, range(12)))
        assert bodies == [site.expected["view"]] * 12
        supervisors = [pid for pid in deploy_support.program_processes(program) if servers.children(pid)]
        assert 1 <= len(supervisors) <= FCGID_MAX_PROCESSES, apache.error_log()
        for pid in supervisors:
            assert len(servers.children(pid)) == 1  # one worker on an inherited socket
    except BaseException:
        print(apache.error_log())
        raise
    finally:
        apache.stop()
    deploy_support.assert_none_left(program)


def test_mod_proxy_fcgi_forwards_to_a_running_pool(site: Site) -> None:
    workdir = site.workdir("apache-proxy")
    address = ("127.0.0.1", servers.free_port())
    pool = servers.start_iipsrv(workdir, address, workers=3, env=deploy_support.server_env(site.image_root))
    try:
        text = substitute(
            deploy_support.read_conf(PROXY_FCGI), {SHIPPED_POOL: f"fcgi://127.0.0.1:{address[1]}"}, PROXY_FCGI
        )
        conf = deploy_support.write(os.path.join(workdir, "iipsrv_py-proxy-fcgi.conf"), text)
        apache = Apache(workdir, ["proxy", "proxy_fcgi"], "", conf)
        try:
            got = deploy_support.answers(apache.base_url)
            deploy_support.check_same_answers(got, apache.base_url, site.expected)
            assert len(pool.workers()) == 3
        except BaseException:
            print(apache.error_log())
            raise
        finally:
            apache.stop()
    finally:
        pool.stop()
