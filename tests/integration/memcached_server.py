"""A private memcached for the tests, stand-ins for broken ones, and what the tests read back.

* ``Memcached``: Debian's memcached on a free 127.0.0.1 port (``-U 0``: no UDP), stopped with
  its process group like every other managed process.  Under CI=true a missing binary fails
  the test (helpers.require_binary).
* ``HungMemcached``: a socket that accepts connections and never answers: a hung server.
* ``stats``: memcached's own counters, read with a plain pymemcache client, so tests check
  what the server holds rather than what our client believes it sent.
* ``fastcgi_get``: one request straight to a pool's TCP address, no web server in between.
* ``layers``: what the access log (VERBOSITY=2) says answered each request.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from collections.abc import Iterator

from pymemcache.client.base import Client

from tests import fcgi_client, helpers
from tests.integration import servers


class Memcached(servers.Managed):
    def __init__(self, workdir: str, port: int | None = None, memory_mb: int = 64) -> None:
        binary = helpers.require_binary("memcached")
        self.port = port or servers.free_port()
        # memcached refuses to run as root unless told which user to become.
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        argv = [binary, *user, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", str(memory_mb)]
        os.makedirs(workdir, exist_ok=True)
        super().__init__(f"memcached-{self.port}", argv, workdir)
        try:
            self.wait_accepting(("127.0.0.1", self.port))
            # memcached counts a connection once a worker thread has taken it, a little after
            # accept: wait until the probe above is counted, so that tests may count their own.
            servers.wait_until(self._connections_settled, 5, "memcached to count its connections")
        except BaseException:
            self.stop()
            raise

    def _connections_settled(self) -> bool:
        first = self.stats()["total_connections"]
        return self.stats()["total_connections"] == first + 1  # only the second stats call

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stats(self) -> dict[str, int]:
        return stats(self.port)


@contextlib.contextmanager
def memcached(workdir: str, port: int | None = None) -> Iterator[Memcached]:
    server = Memcached(workdir, port)
    try:
        yield server
    finally:
        server.stop()


def stats(port: int) -> dict[str, int]:
    """The numeric counters of memcached's ``stats`` command (curr_items, cmd_set, get_hits...)."""
    client = Client(("127.0.0.1", port), connect_timeout=2, timeout=2)
    try:
        raw = client.stats()
    finally:
        client.close()
    values: dict[str, int] = {}
    for name, value in raw.items():
        key = name.decode() if isinstance(name, bytes) else str(name)
        if isinstance(value, int):
            values[key] = value
    return values


class HungMemcached:
    """Accepts every connection and never sends a byte: what a hung memcached looks like."""

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            self.connections.append(conn)  # kept open, never read from, never answered

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.connections:
            conn.close()
        self.listener.close()

    def __enter__(self) -> HungMemcached:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unused_port() -> int:
    """A port nothing listens on (a memcached that is down, or never was)."""
    return servers.free_port()


def fastcgi_get(address: tuple[str, int], query: str, timeout: float = 10.0, path: str = "") -> fcgi_client.Response:
    """``GET /fcgi-bin/iipsrv.fcgi?<query>`` (or ``path``) to a pool over FastCGI, on a
    connection of its own."""
    params = fcgi_client.get_params(query)
    if path:
        params.update(REQUEST_URI=path + (f"?{query}" if query else ""), SCRIPT_NAME="", PATH_INFO=path)
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(fcgi_client.request(1, params, keep=False))
        return fcgi_client.read_response(sock, 1)


# The access line of app._log: "GET <uri> <protocol> -> <status> <size>B <ms>ms[ <layer>]".
ACCESS_LINE = re.compile(
    r" INFO (?P<method>GET|HEAD|POST) (?P<uri>\S+) (?P<protocol>\w+) -> (?P<status>\d{3}) (?P<bytes>\d+)B"
    r" (?P<ms>[0-9.]+)ms(?: (?P<layer>\w+))?$"
)


def layers(log: str, query: str) -> list[str]:
    """What answered each logged request for ``query``, in order ("" for a line naming none)."""
    uri = "/fcgi-bin/iipsrv.fcgi?" + query
    found = []
    for line in log.splitlines():
        match = ACCESS_LINE.search(line)
        if match and match["uri"] == uri:
            found.append(match["layer"] or "")
    return found


def memcached_warnings(log: str) -> list[str]:
    """The log lines about a failing memcached."""
    return [line for line in log.splitlines() if " WARNING memcached " in line]
