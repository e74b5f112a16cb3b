"""A lean FastCGI responder for one worker process: many connections, one request at a time.

Why not flup's per-connection loop (still available as ``--engine flup``): profiling a warm
tile through nginx showed three quarters of a worker's time in flup's record handling — two
``recv`` calls per record, a ``send`` per record, and a blocking wait for the web server to
close each connection — against a quarter in the application.  This responder

* reads whatever the web server sent in one ``recv`` and parses all complete records from it
  before it runs anything, so an FCGI_ABORT_REQUEST that came with a request's last record
  cancels it;
* writes a whole response (headers, body records, end record) with one ``send``;
* honours FCGI_KEEP_CONN, so nginx can keep connections open (``fastcgi_keep_conn on`` with an
  upstream ``keepalive``): no connect/accept/close per request;
* watches all its connections with one epoll set, so a kept-alive idle connection never pins
  the worker while another connection has a request waiting.

Requests are run one at a time, to completion, as in a pre-fork worker: image work is
CPU-bound, and the pool has a worker per core.  Between two requests the worker looks at its
connections again (a zero-timeout select), so a request that waits behind another one can
still be aborted, by an FCGI_ABORT_REQUEST or by the web server closing its connection.

A kept connection belongs to one worker, and nginx hands a new request to any idle connection
of its cache: while the worker renders for a second, a tile sent on another of its connections
waits that second, whatever nginx's keepalive settings (measured: p99 0.5-1.3 s for warm tiles
next to slow renders).  So a worker whose request has run for ``shed_after`` seconds gives up
its idle kept connections (a watcher thread shuts them down; nothing else of the worker runs
meanwhile): nginx drops a cached connection the moment it closes, and a request it had just
sent on one fails as a cached connection's error, which nginx retries on another connection
(GET and HEAD; a POST waiting there is left to wait).  Another worker answers it.  Only
connections that have answered a request before are given up: nginx sends a request again only
when it failed on a connection taken from its cache, and a new connection is not one (a request
lost there would be a 502).

What a worker promises, and keeps (FCGI_GET_VALUES answers the same numbers):

* FCGI_MPXS_CONNS 0: one request at a time on a connection.  A BEGIN_REQUEST for a second
  request while the first one is still arriving is refused with FCGI_CANT_MPX_CONN; one that
  follows a complete request (pipelining) waits, unread, until that request is answered.
* FCGI_MAX_CONNS = FCGI_MAX_REQS = ``max_conns``: at that many connections the worker stops
  accepting, leaving new connections in the listen backlog for the other workers.
* Bounded memory per connection: a request's parameters up to ``PARAMS_LIMIT``, its body up
  to the application's own limit (``MAX_POST_BODY``), and output for one response.  While a
  response is still being sent (the peer reads slowly, or not at all), nothing more is read
  from that connection; partial sends advance a memoryview, the response is never re-copied.
* A malformed stream (bad version, truncated name-value pairs, parameters over the limit) is
  logged in one line, answered with an HTTP error and FCGI_END_REQUEST when a request is
  known, and the connection is closed.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import io
import logging
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .app import MAX_POST_BODY
from .fastcgi_records import (
    ABORT_REQUEST,
    BEGIN_BODY,
    BEGIN_REQUEST,
    CANT_MPX_CONN,
    GET_VALUES,
    GET_VALUES_RESULT,
    HEADER,
    KEEP_CONN,
    PARAMS,
    RESPONDER,
    STDIN,
    STDOUT,
    UNKNOWN_ROLE,
    UNKNOWN_TYPE,
    VERSION,
    decode_pairs,
    encode_pair,
    end_request,
    error_response,
    frame_stream,
    record,
    stdout_records,
)

log = logging.getLogger("iipsrv_py.fastcgi")

RECV_SIZE = 256 * 1024
IDLE_TIMEOUT = 300.0  # seconds a connection may sit without progress before the worker closes it
MAX_CONNS = 1024  # connections per worker (FCGI_MAX_CONNS); nginx's keepalive caches are far smaller
# The parameters of one request (the CGI variables: request line and headers).  nginx refuses
# request headers beyond its large_client_header_buffers (4 x 8 KiB by default) long before this.
PARAMS_LIMIT = 1 << 20
# What the poller watches a connection for.  Reading: input, and the web server closing the
# connection (EPOLLRDHUP comes with the last data, so a request and the close that aborts it
# are seen together).  Sending: room in the socket buffer (hang-ups are always reported).
READ = select.EPOLLIN | select.EPOLLRDHUP
WRITE = select.EPOLLOUT
ACCEPT_PAUSE = 1.0  # seconds without accept() after the process ran out of file descriptors
SWEEP_INTERVAL = 10.0
# How long a request may run before its worker gives up its idle kept connections (see above):
# longer than any answer from a cache or a stored tile, shorter than a rendering anyone waits for.
SHED_AFTER = 0.05
# How long a connection may wait in the backlog while every worker has requests of its own to
# run before a busy worker takes it anyway (it then waits behind that worker's queued requests).
BACKLOG_WAIT = 0.005
# Formatted response heads remembered by the identity of their header lists (see _head).
HEAD_MEMO = 512
# Requests a web server may send again on another connection when this one fails.
IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS"))

StartResponse = Callable[..., Any]
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class StreamError(Exception):
    """The web server's stream cannot be followed any further on this connection."""

    def __init__(self, reason: str, status: str = "400 Bad Request", request_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.request_id = request_id


class _Request:
    __slots__ = ("body", "body_done", "body_seen", "cancelled", "complete", "environ", "flags", "params", "request_id")

    def __init__(self, request_id: int, flags: int) -> None:
        self.request_id = request_id
        self.flags = flags
        self.params = bytearray()
        self.environ: dict[str, Any] | None = None  # decoded when FCGI_PARAMS ends
        self.body = bytearray()
        self.body_seen = 0  # bytes of FCGI_STDIN received, kept or not
        self.body_done = False
        self.complete = False  # all input there (or the body over the limit): ready to run
        self.cancelled = False  # aborted, or its connection closed, before it ran


class _Connection:
    __slots__ = (
        "active",
        "answered",
        "broken",
        "buffer",
        "closed",
        "closing",
        "events",
        "last_active",
        "out",
        "parsing",
        "shed",
        "sock",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""  # received bytes not parsed yet (a partial record, or held records)
        self.active: _Request | None = None  # the one request of this connection not answered yet
        self.out: collections.deque[memoryview] = collections.deque()  # what is still to send
        self.closing = False  # close once ``out`` is sent
        self.broken = False  # the stream cannot be parsed further: answer what runs, then close
        self.closed = False
        self.parsing = False  # inside _parse: ``buffer`` still holds what is being parsed
        self.shed = False  # shut down while the worker was busy: closed at the next look
        self.answered = 0  # requests answered on this connection
        self.events = READ  # what the poller watches for now (0: nothing)
        self.last_active = time.monotonic()


def _waiting_method(conn: _Connection) -> str | None:
    """The method of a request the web server has sent on ``conn`` and the worker has not read
    yet: None when nothing was sent, "" when the request is not complete enough to tell."""
    try:
        data = conn.sock.recv(PARAMS_LIMIT, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:
        return None
    if not data:
        return None
    params, pos = bytearray(), 0
    while len(data) - pos >= HEADER.size:
        _, kind, _, length, padding = HEADER.unpack_from(data, pos)
        content = data[pos + HEADER.size : pos + HEADER.size + length]
        if len(content) < length:
            break
        if kind == PARAMS:
            if not content:
                try:
                    return decode_pairs(bytes(params)).get("REQUEST_METHOD", "GET")
                except ValueError:
                    return ""
            params += content
        pos += HEADER.size + length + padding
    return ""


class Responder:
    """Serves a WSGI application on a listening socket until ``stop()``."""

    def __init__(
        self,
        listener: socket.socket,
        app: App,
        *,
        max_conns: int = MAX_CONNS,
        body_limit: int = MAX_POST_BODY,
        params_limit: int = PARAMS_LIMIT,
        shed_after: float | None = None,
    ) -> None:
        self.listener = listener
        self.listener_fd = listener.fileno()
        self.app = app
        self.max_conns = max(1, max_conns)
        self.body_limit = body_limit
        self.params_limit = params_limit
        self.poller = select.epoll()
        self.connections: dict[int, _Connection] = {}
        # Complete requests in arrival order, with their connections.
        self.ready: collections.deque[tuple[_Connection, _Request]] = collections.deque()
        self.serving = False
        self.stopping = False
        self.busy = False  # running the application right now
        # Giving up idle kept connections during a long request (None: never).  The lock keeps
        # the watcher thread and the loop apart: the watcher only acts while the application
        # runs, and the loop takes the lock to start and to end a request.
        self.shed_after = shed_after
        self._lock = threading.Lock()
        self._running: _Connection | None = None
        self._started = 0.0
        self._shed = False  # this request's connections have been shed already
        self._heads: dict[int, tuple[list[tuple[str, str]], str, bytes]] = {}
        self.accepting = False  # the listener is in the poller
        self.accept_paused_until = 0.0
        self._base_environ = {
            "wsgi.version": (1, 0),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        self._values = {
            "FCGI_MAX_CONNS": str(self.max_conns).encode(),
            # One request per connection at a time, so never more requests than connections.
            "FCGI_MAX_REQS": str(self.max_conns).encode(),
            "FCGI_MPXS_CONNS": b"0",
        }

    # -- the loop ---------------------------------------------------------------------------

    def serve(self) -> None:
        self.listener.setblocking(False)
        self.serving = True
        self._listen(True)
        if self.shed_after:
            threading.Thread(target=self._watch_long_requests, name="shed-kept", daemon=True).start()
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        backlog_since = 0.0  # since when a connection has waited in the backlog while this worker was busy
        try:
            while not self.stopping:
                # With requests waiting, only look (timeout 0): new input may abort one of them.
                incoming = False
                for fd, mask in self.poller.poll(0 if self.ready else 1.0):
                    conn = self.connections.get(fd)
                    if conn is None:
                        incoming = incoming or fd == self.listener_fd
                        continue
                    if conn.shed or mask & (select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR):
                        # The web server closed the connection: the FastCGI way to abort the
                        # requests on it when it does not multiplex.  Nothing will read an
                        # answer, so a request still waiting for its turn is not run.
                        self._close(conn)
                    elif mask & select.EPOLLOUT:
                        self._flush(conn)
                    elif mask & select.EPOLLIN:
                        self._read(conn)
                if not incoming:
                    backlog_since = 0.0
                elif not self.ready:
                    # Only a worker with nothing to run takes a new connection, and one at a
                    # time: a connection accepted just before a slow request would wait for
                    # it, while another worker may be idle.  Busy workers leave the backlog
                    # to whichever worker is free first ...
                    self._accept()
                    backlog_since = 0.0
                elif not backlog_since:
                    backlog_since = time.monotonic()
                elif time.monotonic() - backlog_since >= BACKLOG_WAIT:
                    # ... unless none is: under a steady load on kept connections every worker
                    # always has a request of its own to run next, and a new connection (a
                    # request nginx sends again after a connection was given up) would wait
                    # in the backlog for as long as the load lasts.
                    self._accept()
                    backlog_since = 0.0
                if self.ready and not self.stopping:
                    self._run_next()
                now = time.monotonic()
                if not self.accepting and self.accept_paused_until and now >= self.accept_paused_until:
                    self.accept_paused_until = 0.0
                    self._listen(len(self.connections) < self.max_conns)
                if now >= next_sweep:
                    self._close_idle(now)
                    next_sweep = now + SWEEP_INTERVAL
        finally:
            for conn in list(self.connections.values()):
                self._finish(conn)
            self.poller.close()

    def stop(self) -> None:
        self.stopping = True

    # -- long requests and kept connections ---------------------------------------------------

    def _watch_long_requests(self) -> None:
        """Watcher thread: shed the idle kept connections of a request that runs long."""
        after = self.shed_after or 0.0
        while not self.stopping:
            time.sleep(after / 2)
            with self._lock:
                if self._running is not None and not self._shed and time.monotonic() - self._started >= after:
                    self._shed = True
                    self._shed_idle(after)

    def _shed_idle(self, after: float) -> None:
        """Shut down the connections nginx might send a request on (lock held, app running)."""
        shed = 0
        for conn in list(self.connections.values()):
            if conn is self._running or conn.closed or conn.closing or conn.out:
                continue
            if not conn.answered:
                # Not reused by nginx yet, so not from its cache: a request it sent here and
                # lost would not be sent again (502).  It waits.
                continue
            active = conn.active
            if active is not None:
                method = (active.environ or {}).get("REQUEST_METHOD", "")
            else:
                method = _waiting_method(conn)  # sent while the worker was busy, not read yet
            if method is not None and method.upper() not in IDEMPOTENT:
                continue  # a request nginx would not send again (or one still arriving): it waits
            conn.shed = True
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
            shed += 1
        if shed:
            log.debug("a request ran over %.0f ms: gave up %d kept connections", after * 1000, shed)

    def _finish(self, conn: _Connection) -> None:
        """On the way out: send what is still queued (briefly blocking), then close."""
        if conn.out and not conn.closed:
            try:
                conn.sock.settimeout(2.0)
                for view in conn.out:
                    conn.sock.sendall(view)
            except OSError:
                pass
        self._close(conn)

    # -- connections ------------------------------------------------------------------------

    def _listen(self, on: bool) -> None:
        if on and not self.accepting:
            self.poller.register(self.listener_fd, select.EPOLLIN)
            self.accepting = True
        elif not on and self.accepting:
            self.poller.unregister(self.listener_fd)
            self.accepting = False

    def _accept(self) -> None:
        # Every worker watches the listening socket; the ones that lose the race get EAGAIN.
        try:
            sock, _ = self.listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # Out of descriptors: the listener stays readable, so without a pause this
                # loop would spin.  Existing connections go on being served.
                log.warning("accept failed: %s; not accepting for %.0fs", exc, ACCEPT_PAUSE)
                self._listen(False)
                self.accept_paused_until = time.monotonic() + ACCEPT_PAUSE
            elif exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EINTR):
                log.warning("accept failed: %s", exc)
            return
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(sock)
        self.connections[sock.fileno()] = conn
        self.poller.register(sock.fileno(), READ)
        if len(self.connections) >= self.max_conns:
            # At the announced FCGI_MAX_CONNS: leave further connections in the backlog,
            # where another worker (or this one, once a connection closes) accepts them.
            self._listen(False)

    def _watch(self, conn: _Connection, events: int) -> None:
        """Have the poller watch ``conn`` for ``events`` (0: not at all)."""
        if conn.closed or events == conn.events:
            return
        fd = conn.sock.fileno()
        if events == 0:
            self.poller.unregister(fd)
        elif conn.events == 0:
            self.poller.register(fd, events)
        else:
            self.poller.modify(fd, events)
        conn.events = events

    def _close_idle(self, now: float) -> None:
        for conn in list(self.connections.values()):
            if now - conn.last_active <= IDLE_TIMEOUT:
                continue
            if conn.active is not None and conn.active.complete:
                continue  # waiting for its turn, not for the peer
            if conn.active is not None or conn.out:
                log.warning("closing a FastCGI connection that made no progress for %.0fs", IDLE_TIMEOUT)
            self._close(conn)

    def _close(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        if conn.active is not None:
            # A request still waiting to run is dropped: nobody would read its answer.
            conn.active.cancelled = True
            conn.active = None
        conn.out.clear()
        self.connections.pop(conn.sock.fileno(), None)
        if conn.events:
            with contextlib.suppress(OSError, ValueError):
                self.poller.unregister(conn.sock.fileno())
        conn.sock.close()
        if self.serving and not self.accepting and not self.accept_paused_until and not self.stopping:
            self._listen(len(self.connections) < self.max_conns)

    def rehearse(self, params: list[dict[str, str]]) -> None:
        """Run requests through the whole record path over a socket pair, before serving.

        Used at worker start-up (see warmup.py): the first execution of this code in a fresh
        process is slow (page copies, bytecode specialisation), and that should not be a
        client's wait.  The responses are read and dropped.
        """
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.settimeout(10)
        conn = _Connection(ours)
        self.connections[ours.fileno()] = conn
        self.poller.register(ours.fileno(), READ)
        try:
            for request_id, values in enumerate(params, start=1):
                pairs = b"".join(encode_pair(k.encode("latin-1"), v.encode("latin-1")) for k, v in values.items())
                theirs.sendall(
                    record(BEGIN_REQUEST, request_id, BEGIN_BODY.pack(RESPONDER, KEEP_CONN))
                    + b"".join(frame_stream(PARAMS, request_id, [pairs]))
                    + record(STDIN, request_id)
                )
                self._read(conn)
                while self.ready:
                    self._run_next()
                while conn.out:
                    theirs.recv(RECV_SIZE)
                    self._flush(conn)
                theirs.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    while theirs.recv(RECV_SIZE):
                        pass
                theirs.setblocking(True)
        finally:
            self.ready.clear()
            self._close(conn)
            theirs.close()

    # -- input ------------------------------------------------------------------------------

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        conn.last_active = time.monotonic()
        conn.buffer = conn.buffer + data if conn.buffer else data
        self._parse(conn)

    def _parse(self, conn: _Connection) -> None:
        """Handle every complete record in ``conn.buffer`` that may be handled now."""
        buffer = conn.buffer
        pos, end = 0, len(buffer)
        held = False
        conn.parsing = True
        try:
            while end - pos >= 8:
                version, kind, request_id, length, padding = HEADER.unpack_from(buffer, pos)
                if version != VERSION:
                    raise StreamError(f"FastCGI version {version}")
                stop = pos + 8 + length + padding
                if stop > end:
                    break
                # Output pending, or the next request of a pipelining peer while this one is
                # not answered yet: leave the rest unread until the output has gone.
                if conn.out or (kind == BEGIN_REQUEST and conn.active is not None and conn.active.complete):
                    held = True
                    break
                self.record(conn, kind, request_id, buffer[pos + 8 : pos + 8 + length])
                pos = stop
                if conn.closed:
                    return
        except StreamError as exc:
            self._broken(conn, exc)
            return
        finally:
            conn.parsing = False
        conn.buffer = buffer[pos:] if pos else buffer
        # Holding a request, or sending: read nothing more (bounded memory; see _after_output).
        if conn.out:
            self._watch(conn, WRITE)
        elif held:
            self._watch(conn, 0)

    def record(self, conn: _Connection, kind: int, request_id: int, content: bytes) -> None:
        if request_id == 0:
            self._management(conn, kind, content)
            return
        active = conn.active
        if kind == BEGIN_REQUEST:
            if len(content) != BEGIN_BODY.size:
                raise StreamError("malformed FCGI_BEGIN_REQUEST", request_id=request_id)
            role, flags = BEGIN_BODY.unpack(content)
            if active is not None:
                if active.request_id == request_id:
                    raise StreamError("FCGI_BEGIN_REQUEST for a request in progress")
                # Multiplexing is not offered (FCGI_MPXS_CONNS 0): refuse the second request.
                self._queue(conn, end_request(request_id, CANT_MPX_CONN))
                return
            if role != RESPONDER:
                self._queue(conn, end_request(request_id, UNKNOWN_ROLE))
                if not flags & KEEP_CONN:
                    self._after_answer(conn, keep=False)
                return
            conn.active = _Request(request_id, flags)
            return
        if active is None or active.request_id != request_id:
            return  # a record of a request not in progress (ended, aborted, refused): ignored
        if kind == ABORT_REQUEST:
            # Honoured until the application runs it; a request that has already been
            # answered is not active any more, so a late abort lands in the line above.
            active.cancelled = True
            conn.active = None
            self._queue(conn, end_request(request_id))
            if not active.flags & KEEP_CONN:
                self._after_answer(conn, keep=False)
            return
        if active.complete:
            return  # the rest of a body over the limit, or input after both streams ended
        if kind == PARAMS:
            if active.environ is not None:
                return  # after the end of the stream
            if content:
                if len(active.params) + len(content) > self.params_limit:
                    raise StreamError(
                        f"FCGI_PARAMS over {self.params_limit} bytes",
                        "431 Request Header Fields Too Large",
                        request_id,
                    )
                active.params += content
            else:
                try:
                    active.environ = decode_pairs(bytes(active.params))
                except ValueError as exc:
                    raise StreamError(f"FCGI_PARAMS: {exc}", request_id=request_id) from None
                active.params = bytearray()
        elif kind == STDIN:
            if content:
                active.body_seen += len(content)
                if active.body_seen <= self.body_limit:
                    active.body += content
            else:
                active.body_done = True
        else:
            return  # FCGI_DATA (filter role only) and anything unknown: ignored
        # Ready once all input is there, or as soon as the body is over the application's
        # limit: the application answers that from CONTENT_LENGTH, without the body.
        if active.environ is not None and (active.body_done or active.body_seen > self.body_limit):
            active.complete = True
            self.ready.append((conn, active))

    def _management(self, conn: _Connection, kind: int, content: bytes) -> None:
        if kind == GET_VALUES:
            try:
                names = decode_pairs(content)
            except ValueError as exc:
                raise StreamError(f"FCGI_GET_VALUES: {exc}") from None
            body = b"".join(encode_pair(n.encode(), self._values[n]) for n in names if n in self._values)
            self._queue(conn, record(GET_VALUES_RESULT, 0, body))
        else:
            self._queue(conn, record(UNKNOWN_TYPE, 0, bytes([kind]) + b"\0" * 7))

    def _broken(self, conn: _Connection, exc: StreamError) -> None:
        """The stream cannot be followed: answer the request it was about, if any, then close."""
        conn.broken = True
        conn.buffer = b""
        active = conn.active
        answered = [exc.request_id] if exc.request_id is not None else []
        if active is not None and not active.complete and active.request_id not in answered:
            answered.append(active.request_id)
        log.warning(
            "FastCGI stream error, closing the connection: %s%s",
            exc.reason,
            f" (answered {exc.status[:3]} to request {', '.join(map(str, answered))})" if answered else "",
        )
        if active is not None and active.complete:
            # A complete request before the bad bytes is still answered; the connection
            # closes after that (see _after_answer).
            self._watch(conn, 0 if not conn.out else WRITE)
            return
        if active is not None:
            active.cancelled = True
            conn.active = None
        for request_id in answered:
            parts = frame_stream(STDOUT, request_id, [error_response(exc.status, exc.reason)])
            parts.append(end_request(request_id))
            self._queue(conn, b"".join(parts))
        self._after_answer(conn, keep=False)

    # -- running a request --------------------------------------------------------------------

    def _run_next(self) -> None:
        conn, request = self.ready.popleft()
        if conn.shed:
            self._close(conn)
        if conn.closed or request.cancelled or conn.active is not request:
            return
        with self._lock:
            self._running, self._started, self._shed = conn, time.monotonic(), False
        response = self._call_app(request)
        with self._lock:
            self._running = None
        conn.active = None
        if conn.closed:  # e.g. the application ran so long that the worker was told to stop
            return
        conn.answered += 1
        self._queue(conn, stdout_records(request.request_id, response))
        self._after_answer(conn, keep=bool(request.flags & KEEP_CONN) and not conn.broken)

    def _call_app(self, request: _Request) -> list[bytes]:
        """The application's whole response: the CGI response head, then the body chunks."""
        assert request.environ is not None
        environ: dict[str, Any] = request.environ
        environ.update(self._base_environ)
        if request.body_seen > self.body_limit:
            # Not kept: say how much there was, so the application refuses it (413) by its
            # own rule, with its own headers; a request that does not need a body ignores it.
            declared = environ.get("CONTENT_LENGTH", "")
            length = max(request.body_seen, int(declared) if declared.isdigit() else 0)
            environ["CONTENT_LENGTH"] = str(length)
            environ["wsgi.input"] = io.BytesIO()
        else:
            environ["wsgi.input"] = io.BytesIO(bytes(request.body))
        environ["wsgi.url_scheme"] = "https" if environ.get("HTTPS", "").lower() in ("on", "1") else "http"
        script = environ.setdefault("SCRIPT_NAME", "")
        if not environ.get("PATH_INFO"):
            # As flup does: the request path less the script name.
            path = environ.get("REQUEST_URI", "").split("?", 1)[0]
            environ["PATH_INFO"] = path[len(script) :] if path.startswith(script) else path
        environ.setdefault("QUERY_STRING", "")
        environ.setdefault("REQUEST_METHOD", "GET")
        head: list[bytes] = []
        written: list[bytes] = []

        def write(data: bytes) -> None:
            # PEP 3333's imperative write: the response is sent whole when the application
            # returns, so this only collects (nothing is sent before the status is final).
            if not head:
                raise AssertionError("write() before start_response()")
            written.append(bytes(data))

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., None]:
            if head and exc_info is None:
                raise AssertionError("start_response() called twice without exc_info")
            head[:] = [self._head(status, headers)]
            return write

        self.busy = True
        try:
            result = self.app(environ, start_response)
            try:
                for chunk in result:
                    if chunk:
                        written.append(chunk)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            if not head:
                raise AssertionError("the application returned without calling start_response()")
        except Exception:
            # The application answers every error itself; this is the last resort.
            log.exception("application failed")
            return [error_response("500 Internal Server Error", "internal error")]
        finally:
            self.busy = False
        return [head[0], *written]

    def _head(self, status: str, headers: list[tuple[str, str]]) -> bytes:
        """The CGI response head.  An application that answers from a cache passes the same
        header list again and again (iipsrv_py's cached responses do): its formatted head is
        remembered by the list's identity, the list itself kept so that the identity cannot
        be reused by another object."""
        known = self._heads.get(id(headers))
        if known is not None and known[0] is headers and known[1] == status:
            return known[2]
        lines = [f"Status: {status}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers)
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        if len(self._heads) >= HEAD_MEMO:
            self._heads.clear()
        self._heads[id(headers)] = (headers, status, head)
        return head

    # -- output -------------------------------------------------------------------------------

    def _queue(self, conn: _Connection, data: bytes) -> None:
        """Send ``data`` now as far as the socket takes it; keep the rest, as a view, for later."""
        if conn.closed:
            return
        if not conn.out:
            try:
                sent = conn.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._close(conn)
                return
            if sent == len(data):
                return
            conn.out.append(memoryview(data)[sent:])
        else:
            conn.out.append(memoryview(data))
        self._watch(conn, WRITE)

    def _after_answer(self, conn: _Connection, keep: bool) -> None:
        """A request (or a refusal) was answered: close, go on reading, or wait for the output."""
        if not keep or conn.broken:
            conn.closing = True
        if not conn.out:
            self._after_output(conn)

    def _flush(self, conn: _Connection) -> None:
        out = conn.out
        while out:
            view = out[0]
            try:
                sent = conn.sock.send(view)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(conn)
                return
            conn.last_active = time.monotonic()
            if sent < len(view):
                out[0] = view[sent:]  # a view of the same bytes: nothing is copied
                return
            out.popleft()
        self._after_output(conn)

    def _after_output(self, conn: _Connection) -> None:
        """Everything queued has been sent."""
        if conn.closing or (conn.broken and conn.active is None):
            self._close(conn)
            return
        if conn.broken:
            self._watch(conn, 0)  # a complete request is still to be answered; read nothing
            return
        self._watch(conn, READ)
        if conn.buffer and not conn.parsing and (conn.active is None or not conn.active.complete):
            self._parse(conn)  # records that were held while the output was pending
