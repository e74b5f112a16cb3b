from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from tests.integration import servers

# No integration test may run longer than this (fixture start-up of a module-wide stack
# excluded); a hang anywhere becomes a failure instead of a stuck run.
TEST_TIME_LIMIT = 30


class TestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _time_limit(request: pytest.FixtureRequest) -> Iterator[None]:
    # A test that legitimately runs longer (the benchmark script check) names its own limit.
    marker = request.node.get_closest_marker("time_limit")
    limit = int(marker.args[0]) if marker else TEST_TIME_LIMIT

    def expired(signum: int, frame: FrameType | None) -> None:
        raise TestTimeout(f"integration test ran longer than {limit}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module", params=servers.ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """The FastCGI engine (``--engine``) of the server a test starts: each test runs under both."""
    return str(request.param)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, fixtures: str, engine: str) -> Iterator[servers.Stack]:
    """One nginx -> iipsrv-py (2 workers, CORS=*, ``engine``) shared by the read-only tests of a module."""
    workdir = str(tmp_path_factory.mktemp(f"stack-{engine}"))
    with servers.nginx_stack(workdir, workers=2, env={"CORS": "*"}, engine=engine) as front:
        yield front


@pytest.fixture
def workdir(tmp_path) -> str:
    return str(tmp_path)
