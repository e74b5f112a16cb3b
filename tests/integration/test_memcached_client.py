"""cache/memcached.py against a real memcached: what the server holds, read with its own stats.

Failures (a hung server, nothing listening, a server stopped) are timed against bounds computed
here from the configured timeout, and their log lines counted.
"""

from __future__ import annotations

import logging
import os
import time

import pytest
from pymemcache.client.base import Client

from iipsrv_py.cache.memcached import ITEM_SIZE_LIMIT, MAX_VALUE_SIZE, MemcachedCache, memcached_key
from tests.integration.memcached_server import HungMemcached, Memcached, memcached, stats, unused_port

TIMEOUT = 0.05  # MEMCACHED_IO_TIMEOUT of the failure tests
# Tests of a healthy server must not turn a scheduling hiccup of a loaded machine into a failed
# server (and a test failure): they wait longer.
PATIENT = 1.0
LOGGER = "iipsrv_py.cache.memcached"


def cache_for(*ports: int, retry_interval: float = 10.0, timeout: float = TIMEOUT) -> MemcachedCache:
    return MemcachedCache(tuple(("127.0.0.1", port) for port in ports), timeout, retry_interval)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


def test_get_set_get_many_add_delete(workdir: str) -> None:
    with memcached(workdir) as server:
        cache = cache_for(server.port, timeout=PATIENT)
        assert cache.get("a key with spaces and ünïcode") is None
        cache.set("a key with spaces and ünïcode", b"\x00\xffvalue\r\n", expire=60)
        cache.set("other", b"2")
        assert cache.get("a key with spaces and ünïcode") == b"\x00\xffvalue\r\n"
        assert cache.get_many(["other", "missing", "a key with spaces and ünïcode"]) == {
            "other": b"2",
            "a key with spaces and ünïcode": b"\x00\xffvalue\r\n",
        }
        assert cache.get_many([]) == {}
        # add: a lock between processes: only the first caller gets it.
        assert cache.add("lock", b"1", expire=60) is True
        assert cache.add("lock", b"2", expire=60) is False
        assert cache.get("lock") == b"1"
        cache.delete("other")
        assert cache.get("other") is None
        # memcached itself holds the values under the hashed keys, as plain bytes.
        raw = Client(("127.0.0.1", server.port))
        assert raw.get(memcached_key("lock")) == b"1"
        assert raw.get("lock") is None
        raw.close()
        assert server.stats()["curr_items"] == 2


def test_expiry_is_memcacheds(workdir: str) -> None:
    with memcached(workdir) as server:
        cache = cache_for(server.port, timeout=PATIENT)
        cache.set("short", b"x", expire=1)
        cache.set("long", b"y", expire=60)
        assert cache.get("short") == b"x"
        time.sleep(2.1)  # memcached counts in whole seconds
        assert cache.get("short") is None
        assert cache.get("long") == b"y"


def test_the_largest_value_sent_is_one_memcached_stores(workdir: str) -> None:
    """MAX_VALUE_SIZE is not an arbitrary number: memcached (1 MiB items) stores a value of
    exactly that size, refuses one of the full item size, and one byte more is never sent."""
    with memcached(workdir) as server:
        cache = cache_for(server.port, timeout=PATIENT)
        largest = os.urandom(MAX_VALUE_SIZE)
        cache.set("largest", largest)
        assert cache.get("largest") == largest

        before = server.stats()
        cache.set("too large", largest + b"x")
        after = server.stats()
        assert after["cmd_set"] == before["cmd_set"]  # nothing sent at all
        assert cache.get("too large") is None
        assert cache.add("too large", largest + b"x", expire=60) is True  # go ahead alone
        assert server.stats()["cmd_set"] == before["cmd_set"]

        # The reference: memcached itself refuses a value of the whole item size.
        raw = Client(("127.0.0.1", server.port), default_noreply=False)
        with pytest.raises(Exception, match="too large"):
            raw.set("raw", b"x" * ITEM_SIZE_LIMIT)
        raw.close()
        assert cache.get("largest") == largest  # and our client still works


def test_nothing_connects_before_first_use_and_a_forked_child_uses_its_own_connection(workdir: str) -> None:
    with memcached(workdir) as server:
        start = server.stats()["total_connections"]
        cache = cache_for(server.port, timeout=PATIENT)
        assert server.stats()["total_connections"] == start + 1  # only stats' own connection
        cache.set("parent", b"p")
        assert cache.get("parent") == b"p"
        after_parent = server.stats()["total_connections"]
        assert after_parent == start + 3  # two stats calls and the cache's one connection

        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: answer through the pipe, never return into pytest
            try:
                cache.set("child", b"c")
                ok = cache.get("child") == b"c" and cache.get("parent") == b"p"
                os.write(write, b"1" if ok else b"0")
            finally:
                os._exit(0)
        os.close(write)
        try:
            assert os.read(read, 1) == b"1"
        finally:
            os.close(read)
            os.waitpid(pid, 0)
        # The child connected by itself; the parent's connection still answers in order.
        assert server.stats()["total_connections"] == after_parent + 2  # the child's + this stats call
        for _ in range(20):
            assert cache.get("parent") == b"p"
            assert cache.get("child") == b"c"


def test_keys_spread_over_several_servers_and_survive_the_loss_of_one(
    workdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    with memcached(os.path.join(workdir, "a")) as first, memcached(os.path.join(workdir, "b")) as second:
        cache = cache_for(first.port, second.port, timeout=PATIENT)
        keys = [f"tile {i}" for i in range(200)]
        for key in keys:
            cache.set(key, key.encode())
        held = first.stats()["curr_items"], second.stats()["curr_items"]
        assert sum(held) == 200 and min(held) > 40, held  # both hold a fair share
        assert cache.get_many(keys) == {key: key.encode() for key in keys}

        # Which keys live where, asked of each server directly.
        on_second = {key for key in keys if Client(("127.0.0.1", second.port)).get(memcached_key(key))}
        assert len(on_second) == held[1]
        second.stop()
        caplog.set_level(logging.WARNING, LOGGER)
        started = time.perf_counter()
        found = {key: cache.get(key) for key in keys}
        elapsed = time.perf_counter() - started
        # The first server's keys are still there; the lost server's are misses, not errors.
        assert {key for key, value in found.items() if value is not None} == set(keys) - on_second
        assert cache.get_many(keys) == {key: key.encode() for key in keys if key not in on_second}
        assert elapsed < 200 * 0.005 + 0.1  # one refused connection, then no more tries
        assert len(warnings_of(caplog)) == 1
        assert f"127.0.0.1:{second.port}" in warnings_of(caplog)[0]
        # New values go to the server that is left.
        cache.set("after", b"a")
        assert cache.get("after") == b"a"


def _timed_calls(cache: MemcachedCache, count: int, pause: float = 0.0) -> list[float]:
    durations = []
    for i in range(count):
        started = time.perf_counter()
        assert cache.get(f"k{i}") is None
        cache.set(f"k{i}", b"v" * 1000)
        durations.append(time.perf_counter() - started)
        time.sleep(pause)
    return durations


def test_a_hung_server_costs_one_timeout_per_retry_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    interval = 0.5
    with HungMemcached() as hung:
        cache = cache_for(hung.port, retry_interval=interval)
        started = time.monotonic()
        durations = _timed_calls(cache, 60, pause=0.025)
        elapsed = time.monotonic() - started
    # Every call is bounded by one timeout (and scheduling noise); only about one call per
    # interval pays it (were it every call, 60 would, and they would sum to 3 s).
    assert max(durations) < TIMEOUT + 0.2, max(durations)
    attempts = elapsed / interval + 1
    slow = [d for d in durations if d >= TIMEOUT * 0.8]
    assert 1 <= len(slow) <= attempts + 2, (len(slow), elapsed)
    assert sum(durations) <= attempts * (TIMEOUT + 0.01) + 60 * 0.005
    # One log line per failed attempt, that is per interval, never one per call.
    lines = warnings_of(caplog)
    assert 1 <= len(lines) <= attempts, lines
    assert all("timed out" in line and hung.address in line for line in lines)


def test_nothing_listening_costs_nothing_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    cache = cache_for(unused_port())
    durations = _timed_calls(cache, 100)
    assert max(durations) < TIMEOUT + 0.2  # a refused connection takes no timeout
    assert sum(durations) < 100 * 0.002  # and the server is not tried again
    assert cache.add("lock", b"1", 60) is True  # no one to compete with
    assert len(warnings_of(caplog)) == 1 and "refused" in warnings_of(caplog)[0].lower()


def test_a_server_that_comes_back_is_used_again(workdir: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    port = unused_port()
    cache = cache_for(port, retry_interval=0.3, timeout=PATIENT)
    cache.set("before", b"lost")
    assert cache.get("before") is None
    server = Memcached(workdir, port)
    try:
        time.sleep(0.4)  # the interval is over
        cache.set("after", b"kept")
        assert cache.get("after") == b"kept"
        assert stats(port)["curr_items"] == 1
    finally:
        server.stop()
    assert len(warnings_of(caplog)) == 1
