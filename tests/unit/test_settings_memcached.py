"""MEMCACHED_SERVERS: iipsrv's ``host[:port]`` list, and start-up refusing what it cannot use."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from iipsrv_py.settings import SettingsError, from_environ, parse_memcached_servers

IIPSRV = os.path.join(sys.prefix, "bin", "iipsrv-py")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        ("   ", ()),
        ("localhost", (("localhost", 11211),)),
        # iipsrv's own example: commas, an address with a port.
        ("localhost,10.0.0.2:11212", (("localhost", 11211), ("10.0.0.2", 11212))),
        # Spaces, commas or both; order kept (it is not significant to hashing, but readable).
        ("cache-b:1 cache-a:2, cache-c", (("cache-b", 1), ("cache-a", 2), ("cache-c", 11211))),
        ("memcached_1.internal.:65535", (("memcached_1.internal.", 65535),)),
        # IPv6: bracketed with a port, bare without one.
        ("[::1]:11300 [fe80::2] ::3", (("::1", 11300), ("fe80::2", 11211), ("::3", 11211))),
        # The same server twice counts once.
        ("localhost localhost:11211 LOCALHOST", (("localhost", 11211), ("LOCALHOST", 11211))),
    ],
)
def test_servers_are_parsed(text: str, expected: tuple[tuple[str, int], ...]) -> None:
    assert parse_memcached_servers(text) == expected
    settings, warnings = from_environ({"MEMCACHED_SERVERS": text})
    assert settings.memcached_servers == expected and warnings == []


@pytest.mark.parametrize(
    "text",
    [
        "localhost:",
        "localhost:abc",
        "localhost:0",
        "localhost:65536",
        "localhost:１２",  # digits, but not ASCII ones
        ":11211",
        "host:1:2",
        "[::1",
        "[::1]11211",
        "[localhost]:11211",
        "-leading-dash",
        "a..b",
        "/run/memcached.sock",
        "good:11211,bad:port",
    ],
)
def test_bad_entries_stop_with_the_variable_named(text: str) -> None:
    with pytest.raises(SettingsError, match="MEMCACHED_SERVERS") as raised:
        from_environ({"MEMCACHED_SERVERS": text})
    # The message quotes the offending entry, so an operator can find it in a long list.
    offending = text.split(",")[-1]
    assert repr(offending) in str(raised.value)


def test_memcached_settings_do_not_change_responses() -> None:
    """Turning memcached on or tuning its client must not change ETags: a pool with memcached
    and one without answer with the same key for the same bytes."""
    base, _ = from_environ({})
    tuned, _ = from_environ(
        {"MEMCACHED_SERVERS": "a,b:1", "MEMCACHED_IO_TIMEOUT": "0.2", "MEMCACHED_RETRY_INTERVAL": "3"}
    )
    assert tuned.fingerprint == base.fingerprint
    # The expiry is not a rendering setting either, but it is read and clamped.
    expiry, warnings = from_environ({"MEMCACHED_TIMEOUT": str(10**9)})
    assert expiry.memcached_timeout == 30 * 24 * 3600 and len(warnings) == 1


def test_server_refuses_to_start_with_a_bad_list() -> None:
    """Start-up, not the first request, reports it: exit status 2, the variable named."""
    if not os.access(IIPSRV, os.X_OK):
        pytest.fail(f"{IIPSRV} is missing: install the project with `pip install -e .[test]`")
    env = {"PATH": os.environ.get("PATH", ""), "MEMCACHED_SERVERS": "cache-1:11211 cache-2:eleven"}
    done = subprocess.run(
        [IIPSRV, "--debug"], input="", env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done
    assert "MEMCACHED_SERVERS" in done.stderr and "'cache-2:eleven'" in done.stderr


def test_every_memcached_variable_is_documented_and_the_shipped_file_parses() -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "iipsrv_py", "settings.py")) as f:
        read = set(re.findall(r'"(MEMCACHED_[A-Z_]+)"', f.read()))
    assert read == {"MEMCACHED_SERVERS", "MEMCACHED_TIMEOUT", "MEMCACHED_IO_TIMEOUT", "MEMCACHED_RETRY_INTERVAL"}
    with open(os.path.join(root, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(root, "conf", "iipsrv_py.env")) as f:
        env_file = f.read()
    for name in read:
        assert f"`{name}`" in readme, name  # a row of the variables table
        assert re.search(rf"^{name}=", env_file, re.MULTILINE), name  # an active line
    assignments = dict(line.split("=", 1) for line in env_file.splitlines() if re.match(r"^[A-Z_0-9]+=", line))
    settings, warnings = from_environ(assignments)
    assert settings.memcached_servers == () and warnings == []  # shipped off, with iipsrv's defaults
    assert (settings.memcached_timeout, settings.memcached_io_timeout, settings.memcached_retry_interval) == (
        86400,
        0.05,
        10.0,
    )
    # Each commented example parses.
    for example in re.findall(r"^#\s+MEMCACHED_SERVERS=(\S+)", env_file, re.MULTILINE):
        assert parse_memcached_servers(example)
