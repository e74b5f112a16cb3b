"""The FastCGI pool under signals and crashes, behind a real nginx (SPEC section 1)."""

from __future__ import annotations

import io
import os
import re
import signal
import threading
import time

import pytest
import requests
from PIL import Image

from tests.integration import reference, servers

pytestmark = pytest.mark.integration

TABLES = "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif"
BIGGEST = "tif-rgb-3000x2000-4lvl-div3-256tile-lzw.tif"
# Distinct tiles, so the load is not all answered from one worker's cache.
TILE_QUERIES = [f"FIF={TABLES}&JTL=4,{index}" for index in range(0, 96, 7)] + [f"FIF={TABLES}&OBJ=Basic-info"]
STOP_LIMIT = 5.0  # seconds: SIGTERM to the supervisor until every process of the pool is gone


def wait_gone(pids: list[int], timeout: float) -> None:
    servers.wait_until(lambda: not any(servers.running(pid) for pid in pids), timeout, f"processes {pids} to exit")


def fetch_all(stack: servers.Stack, count: int) -> list[str]:
    """``count`` sequential requests on a connection of their own; what did not answer 200."""
    failures = []
    with servers.http_session() as session:
        for i in range(count):
            query = TILE_QUERIES[i % len(TILE_QUERIES)]
            try:
                response = session.get(stack.nginx.url(query), timeout=servers.HTTP_TIMEOUT)
            except requests.RequestException as exc:
                failures.append(f"{query} -> {exc}")
                continue
            if response.status_code != 200:
                failures.append(f"{query} -> {response.status_code}")
    return failures


class Background:
    """One request in a thread of its own (its own connection), with the outcome kept."""

    def __init__(self, stack: servers.Stack, query: str) -> None:
        self.result: requests.Response | Exception | None = None
        self.thread = threading.Thread(target=self._run, args=(stack, query), daemon=True)
        self.thread.start()

    def _run(self, stack: servers.Stack, query: str) -> None:
        try:
            self.result = stack.fresh_get(query)
        except Exception as exc:
            self.result = exc

    def join(self, timeout: float) -> requests.Response | Exception | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the request never ended"
        return self.result


@pytest.mark.parametrize("count", [1, 3])
def test_workers_option_starts_that_many(workdir: str, engine: str, count: int) -> None:
    with servers.nginx_stack(workdir, engine=engine, workers=count) as stack:
        workers = stack.server.wait_workers(count)
        assert fetch_all(stack, 2 * count) == []
        time.sleep(0.3)
        assert stack.server.workers() == workers, "no more and no fewer than asked for"
        assert f"FastCGI pool of {count} workers started" in stack.server.log()


def test_killed_worker_is_replaced(workdir: str, engine: str) -> None:
    with servers.nginx_stack(workdir, engine=engine, workers=2) as stack:
        before = stack.server.wait_workers(2)
        with servers.LoadLoop(stack, TILE_QUERIES) as load:
            servers.wait_until(lambda: load.done >= 10, 10, "the load to get going")
            victim = before[0]
            os.kill(victim, signal.SIGKILL)
            after = servers.wait_until(
                lambda: pids if len(pids := stack.server.workers()) == 2 and victim not in pids else None,
                10,
                "a replacement worker",
            )
            served = load.done
            servers.wait_until(lambda: load.done >= served + 10, 10, "the load to go on after the kill")
        # Only a request in flight on the killed worker may have failed.
        assert len(load.failures) <= 1, load.failures

        assert fetch_all(stack, 50) == []
        assert stack.server.alive()
        assert len(after) == 2 and before[1] in after
        assert stack.server.workers() == after
        assert f"worker {victim} exited" in stack.server.log()


@pytest.mark.parametrize("target", ["supervisor", "process group"])
def test_sigterm_stops_the_pool(workdir: str, engine: str, target: str) -> None:
    """Whether only the supervisor is told (kill PID) or every process at once (systemd's
    control-group kill, a shell's kill -TERM -PGID), idle workers exit at once."""
    with servers.nginx_stack(workdir, engine=engine, workers=3) as stack:
        workers = stack.server.wait_workers(3)
        assert fetch_all(stack, 12) == []
        started = time.monotonic()

        if target == "supervisor":
            stack.server.signal(signal.SIGTERM)
        else:
            os.killpg(stack.server.pid, signal.SIGTERM)
        stack.server.wait_exit(timeout=STOP_LIMIT)
        wait_gone(workers, STOP_LIMIT - (time.monotonic() - started))

        assert not servers.group_members(stack.server.pid)
        log = stack.server.log()
        assert "FastCGI pool stopped" in log
        assert "did not stop" not in log, "an idle worker ignored SIGTERM and had to be killed"


def test_sigterm_lets_a_short_request_finish(workdir: str, engine: str) -> None:
    """A rendering that takes well under the grace period is answered completely."""
    with servers.nginx_stack(workdir, engine=engine, workers=2) as stack:
        workers = stack.server.wait_workers(2)
        request = Background(stack, f"FIF={BIGGEST}&WID=3000&CVT=png")
        servers.wait_busy_worker(stack.server)
        started = time.monotonic()

        stack.server.signal(signal.SIGTERM)
        stack.server.wait_exit(timeout=STOP_LIMIT)
        wait_gone(workers, STOP_LIMIT - (time.monotonic() - started))

        assert "did not stop" not in stack.server.log()
        response = request.join(timeout=10)
        assert isinstance(response, requests.Response), response
        assert response.status_code == 200
        with Image.open(io.BytesIO(response.content)) as image:
            assert image.size == (3000, 2000)


def test_sigterm_with_a_slow_request_in_flight(workdir: str, engine: str) -> None:
    """A rendering far longer than the grace period does not keep the pool alive."""
    with servers.nginx_stack(workdir, engine=engine, workers=2) as stack:
        workers = stack.server.wait_workers(2)
        # PNG at zlib level 9 of a 3000x2000 image: several seconds of work.
        request = Background(stack, f"FIF={BIGGEST}&WID=3000&QLT=9&CVT=png")
        busy = servers.wait_busy_worker(stack.server)
        started = time.monotonic()

        stack.server.signal(signal.SIGTERM)
        stack.server.wait_exit(timeout=STOP_LIMIT)
        wait_gone(workers, STOP_LIMIT - (time.monotonic() - started))

        assert time.monotonic() - started < STOP_LIMIT
        assert not servers.group_members(stack.server.pid)
        assert busy in workers
        killed = {int(pid) for pid in re.findall(r"worker (\d+) did not stop", stack.server.log())}
        assert killed == {busy}, "only the busy worker needed killing"
        request.join(timeout=10)  # whatever nginx answered, the client is not left hanging


def test_sighup_clears_caches_and_keeps_the_pool(workdir: str, engine: str) -> None:
    with servers.nginx_stack(workdir, engine=engine, workers=2) as stack:
        workers = stack.server.wait_workers(2)
        assert fetch_all(stack, 10) == []
        assert "caches cleared" not in stack.server.log()

        stack.server.signal(signal.SIGHUP)

        def cleared() -> set[int]:
            return {int(pid) for pid in re.findall(r"iipsrv-py\[(\d+)\] INFO caches cleared", stack.server.log())}

        failures: list[str] = []

        def every_worker_cleared() -> bool:
            # Two clients at once, so that both workers get requests.
            threads = [threading.Thread(target=lambda: failures.extend(fetch_all(stack, 4))) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            return cleared() >= set(workers)

        servers.wait_until(every_worker_cleared, 15, "every worker to log 'caches cleared'", interval=0)

        assert failures == []
        assert stack.server.alive()
        assert stack.server.workers() == workers, "SIGHUP must not restart workers"
        assert cleared() == set(workers)
        assert "exited" not in stack.server.log()
        # Still serving, with correct pixels after the caches were emptied.
        response = stack.get(f"FIF={TABLES}&JTL=3,7")
        assert response.status_code == 200
        assert (reference.decode(response.content, "JPEG") == reference.tile_pixels(TABLES, 3, 7)).all()


def test_sighup_while_workers_are_replaced(workdir: str) -> None:
    """SIGHUP reaching a worker that is still starting must neither kill it nor run the
    supervisor's handler in it (the child of fork() inherits the supervisor's handlers)."""
    with servers.nginx_stack(workdir, workers=2) as stack:
        supervisor = stack.server.pid
        victims = []
        for _ in range(4):
            workers = stack.server.wait_workers(2)
            victims.append(workers[0])
            os.kill(workers[0], signal.SIGKILL)
            deadline = time.monotonic() + 0.4
            while time.monotonic() < deadline:  # the replacement starts during this storm
                os.kill(supervisor, signal.SIGHUP)
                time.sleep(0.001)
        workers = stack.server.wait_workers(2)
        time.sleep(0.5)

        log = stack.server.log()
        exited = [int(pid) for pid in re.findall(r"worker (\d+) exited", log)]
        assert sorted(exited) == sorted(victims), "only the killed workers may have died"
        handlers = {int(pid) for pid in re.findall(r"iipsrv-py\[(\d+)\] WARNING SIGHUP", log)}
        assert handlers == {supervisor}, "only the supervisor handles its own SIGHUP"
        assert stack.server.workers() == workers
        assert fetch_all(stack, 20) == []
