"""Memcached as the ``SharedCache`` of every worker of every machine (MEMCACHED_SERVERS).

Bytes under string keys, over pymemcache's ``HashClient``: with several servers each key lives
on one of them, chosen by rendezvous hashing, so adding or losing a server only moves that
server's share of the keys.  Everything here is shaped by one rule: memcached may make a request
faster, never slower by more than a few milliseconds, and never fail it.

* Short timeouts: connecting and each read or write wait at most MEMCACHED_IO_TIMEOUT.
* A server that failed (refused, timed out, closed the connection) is left out for
  MEMCACHED_RETRY_INTERVAL seconds (pymemcache's dead-server handling, with no retries before
  it gives up on one): a dead or hung memcached costs one timeout per interval and worker, not
  one per request.  Its keys meanwhile hash onto the remaining servers, or nowhere (a miss).
* Every failure is a miss (or nothing stored) and at most one log line per interval and worker.
* Values larger than memcached stores (its 1 MiB default item size, less the item's key and
  header) are not sent at all: the server would refuse them after reading them whole.
* Keys are hashed: whatever text a caller keys on (an S3 object name with spaces, a 300-byte
  request), memcached sees a short ASCII key.
* The client is made on first use in each process: a worker forked from a process that had
  already connected must not write to the same socket as its parent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from pymemcache.client.hash import HashClient
from pymemcache.exceptions import MemcacheError

from ..settings import Settings
from .shared import NO_SHARING, SharedCache

log = logging.getLogger(__name__)

# memcached's default largest item (``-I 1m``).  An item also holds its key, flags, CAS and
# a header of about 50 bytes; the margin leaves room for all of them with any key we send.
ITEM_SIZE_LIMIT = 1024 * 1024
ITEM_OVERHEAD = 512
MAX_VALUE_SIZE = ITEM_SIZE_LIMIT - ITEM_OVERHEAD

# Keys memcached sees: a namespace, then a hash of the caller's key.  memcached allows 250 bytes
# of printable ASCII without spaces; these are 52.  The "1" names the scheme, so that a change of
# hashing never finds old values.
KEY_PREFIX = "iipsrv-py:1:"
KEY_DIGEST_SIZE = 20  # bytes of BLAKE2b: collisions are out of reach


def memcached_key(key: str) -> str:
    """The key memcached stores ``key`` under: safe whatever ``key`` contains."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=KEY_DIGEST_SIZE)
    return KEY_PREFIX + digest.hexdigest()


def shared_cache(settings: Settings) -> SharedCache:
    """The cache the workers and machines share: memcached when MEMCACHED_SERVERS names servers."""
    if not settings.memcached_servers:
        return NO_SHARING
    return MemcachedCache(
        settings.memcached_servers,
        io_timeout=settings.memcached_io_timeout,
        retry_interval=settings.memcached_retry_interval,
    )


class _ReportingHashClient(HashClient):
    """pymemcache's ``HashClient``, adjusted in four hooks: it says which server it gives up on
    (it only raises the error), a key whose servers are all left out is a plain miss (it would
    raise "All servers seem to be down" on every call) and an ``add`` with no server tells so, and
    a server left out comes back when its interval is over (pymemcache looks only once per
    interval since it last looked, which can leave a server out for twice as long)."""

    def __init__(self, *args: Any, on_failure: Callable[[Any], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_failure = on_failure

    def _mark_failed_server(self, server: Any) -> None:
        super()._mark_failed_server(server)
        self._on_failure(server)

    def _get_client(self, key: Any) -> Any:
        try:
            return super()._get_client(key)
        except MemcacheError:  # no server left for the key (keys are hashed: never illegal)
            return None

    def _retry_dead(self) -> None:
        self._last_dead_check_time = 0.0  # look at each dead server's own time, every call
        super()._retry_dead()

    def add(self, key: Any, *args: Any, **kwargs: Any) -> Any:
        # None, not HashClient's False, when no server is left: "not stored" would read as
        # "someone else holds it" for as long as the servers are away.
        return self._run_cmd("add", key, None, *args, **kwargs)


class MemcachedCache:
    def __init__(
        self,
        servers: tuple[tuple[str, int], ...],
        io_timeout: float = 0.05,
        retry_interval: float = 10.0,
        max_value_size: int = MAX_VALUE_SIZE,
    ) -> None:
        if not servers:
            raise ValueError("MemcachedCache needs at least one server")
        self.servers = servers
        self.io_timeout = io_timeout
        self.retry_interval = retry_interval
        self.max_value_size = max_value_size
        self._client: HashClient | None = None
        self._client_pid = 0
        # The application is single-threaded, but storage may read from decoding threads, and
        # a pymemcache client is one socket per server: one caller at a time.
        self._lock = threading.Lock()
        self._failed: list[str] = []  # servers given up on since the last report
        self._next_report = 0.0  # monotonic time before which failures are not logged again

    def describe(self) -> str:
        return ", ".join(_address(server) for server in self.servers)

    # -- SharedCache --------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        value = self._call(lambda client: client.get(memcached_key(key)), None)
        return value if isinstance(value, bytes) else None

    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        wanted = {memcached_key(key): key for key in keys}
        found = self._call(lambda client: client.get_many(list(wanted)), {})
        if not isinstance(found, dict):
            return {}
        return {wanted[k]: v for k, v in found.items() if k in wanted and isinstance(v, bytes)}

    def set(self, key: str, value: bytes, expire: int = 0) -> None:
        if len(value) > self.max_value_size:
            return  # memcached would read it whole, then refuse it
        # noreply (pymemcache's default for set): nothing to wait for.
        self._call(lambda client: client.set(memcached_key(key), value, expire=expire), None)

    def add(self, key: str, value: bytes, expire: int) -> bool:
        if len(value) > self.max_value_size:
            return True  # cannot be shared: as with no memcached, the caller goes ahead alone
        stored = self._call(lambda client: client.add(memcached_key(key), value, expire=expire, noreply=False), None)
        # Unreachable memcached: nobody can be told apart from us, so go ahead, as NoSharing does.
        return True if stored is None else bool(stored)

    def delete(self, key: str) -> None:
        self._call(lambda client: client.delete(memcached_key(key)), None)

    # -- the client -----------------------------------------------------------------------------

    def _call(self, operation: Callable[[HashClient], Any], default: Any) -> Any:
        with self._lock:
            try:
                return operation(self._connection())
            except Exception as exc:  # noqa: BLE001 - a shared cache never fails a request
                self._report(exc)
                return default

    def _connection(self) -> HashClient:
        pid = os.getpid()
        if self._client is None or self._client_pid != pid:
            # In a forked child the parent's client is dropped, not closed: its sockets are
            # the parent's too.
            self._client = _ReportingHashClient(
                list(self.servers),
                on_failure=self._server_failed,
                connect_timeout=self.io_timeout,
                timeout=self.io_timeout,
                no_delay=True,
                # Give up on a server at its first failure, and leave it for the interval.
                retry_attempts=0,
                dead_timeout=self.retry_interval,
                ignore_exc=False,  # failures reach _report
            )
            self._client_pid = pid
        return self._client

    def _server_failed(self, server: Any) -> None:
        address = _address(server)
        if address not in self._failed:
            self._failed.append(address)

    def _report(self, exc: Exception) -> None:
        """One line per retry interval at most, however many requests meet the failure."""
        now = time.monotonic()
        if now < self._next_report:
            self._failed.clear()
            return
        self._next_report = now + self.retry_interval
        where = ", ".join(self._failed) or self.describe()
        self._failed.clear()
        reason = str(exc) or type(exc).__name__
        log.warning(
            "memcached %s: %s; serving without it (a failed server is retried after %gs)",
            where,
            reason,
            self.retry_interval,
        )


def _address(server: Any) -> str:
    if isinstance(server, (tuple, list)) and len(server) == 2:
        host, port = server
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(server)
