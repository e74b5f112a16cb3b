"""A lean FastCGI responder for one worker process: many connections, one request at a time.

Why not flup's per-connection loop (still available as ``--engine flup``): profiling a warm
tile through nginx showed three quarters of a worker's time in flup's record handling — two
``recv`` calls per record, a ``send`` per record, and a blocking wait for the web server to
close each connection — against a quarter in the application.  This responder

* reads whatever the web server sent in one ``recv`` and parses all complete records from it;
* writes a whole response (headers, body records, end record) with one ``send``;
* honours FCGI_KEEP_CONN, so nginx can keep connections open (``fastcgi_keep_conn on`` with an
  upstream ``keepalive``): no connect/accept/close per request;
* watches all its connections with one selector, so a kept-alive idle connection never pins
  the worker while another connection has a request waiting.

Requests are still run one at a time, to completion, as in a pre-fork worker: image work is
CPU-bound, and the pool has a worker per core.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import selectors
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("iipsrv_py.fastcgi")

VERSION = 1
BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR, DATA = 1, 2, 3, 4, 5, 6, 7, 8
GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE = 9, 10, 11
RESPONDER = 1
KEEP_CONN = 1
REQUEST_COMPLETE, CANT_MPX_CONN, OVERLOADED, UNKNOWN_ROLE = 0, 1, 2, 3

HEADER = struct.Struct("!BBHHBx")
END_BODY = struct.Struct("!IB3x")
MAX_CONTENT = 0xFFFF
RECV_SIZE = 256 * 1024
IDLE_TIMEOUT = 300.0  # seconds an idle connection is kept before the worker closes it
# The input streams of a request and the bytes accepted of each: parameters, request body.
STREAM_LIMITS = {PARAMS: 1 << 20, STDIN: 16 << 20}
STREAM_NAMES = {PARAMS: "FCGI_PARAMS", STDIN: "request body"}

StartResponse = Callable[..., Any]


def _record(kind: int, request_id: int, content: bytes = b"") -> bytes:
    return HEADER.pack(VERSION, kind, request_id, len(content), 0) + content


def _stream(kind: int, request_id: int, data: bytes) -> list[bytes | memoryview]:
    """``data`` as records of at most 65535 bytes, then the empty record that ends the stream.
    The content parts are views of ``data``: the one copy is the join before sending."""
    parts: list[bytes | memoryview] = []
    view = memoryview(data)
    for start in range(0, len(data), MAX_CONTENT):
        chunk = view[start : start + MAX_CONTENT]
        parts.append(HEADER.pack(VERSION, kind, request_id, len(chunk), 0))
        parts.append(chunk)
    parts.append(HEADER.pack(VERSION, kind, request_id, 0, 0))
    return parts


def decode_pairs(data: bytes) -> dict[str, str]:
    """FastCGI name-value pairs; names and values as latin-1 text, as WSGI wants them."""
    pairs: dict[str, str] = {}
    pos, end = 0, len(data)
    while pos < end:
        lengths = []
        for _ in range(2):
            if pos >= end:
                raise ValueError("truncated name-value pair")
            length = data[pos]
            if length & 0x80:
                if pos + 4 > end:
                    raise ValueError("truncated name-value pair")
                length = int.from_bytes(data[pos : pos + 4], "big") & 0x7FFFFFFF
                pos += 4
            else:
                pos += 1
            lengths.append(length)
        name_end = pos + lengths[0]
        value_end = name_end + lengths[1]
        if value_end > end:
            raise ValueError("truncated name-value pair")
        pairs[data[pos:name_end].decode("latin-1")] = data[name_end:value_end].decode("latin-1")
        pos = value_end
    return pairs


def encode_pair(name: bytes, value: bytes) -> bytes:
    def length(n: int) -> bytes:
        return bytes([n]) if n < 128 else (n | 0x80000000).to_bytes(4, "big")

    return length(len(name)) + length(len(value)) + name + value


class _Request:
    __slots__ = ("flags", "open_streams", "request_id", "role", "streams")

    def __init__(self, request_id: int, role: int, flags: int) -> None:
        self.request_id = request_id
        self.role = role
        self.flags = flags
        self.streams = {kind: bytearray() for kind in STREAM_LIMITS}
        self.open_streams = set(STREAM_LIMITS)  # ended by an empty record each


class _Connection:
    __slots__ = ("buffer", "closing", "last_active", "out", "requests", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.requests: dict[int, _Request] = {}
        self.out: list[bytes] = []  # bytes still to send
        self.closing = False  # close once ``out`` is sent
        self.last_active = time.monotonic()


class Responder:
    """Serves a WSGI application on a listening socket until ``stop()``."""

    def __init__(self, listener: socket.socket, app: Callable[[dict[str, Any], StartResponse], Any]) -> None:
        self.listener = listener
        self.app = app
        self.selector = selectors.DefaultSelector()
        self.connections: dict[int, _Connection] = {}
        self.stopping = False
        self.busy = False  # running the application right now
        self._base_environ = {
            "wsgi.version": (1, 0),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }

    # -- the loop ---------------------------------------------------------------------------

    def serve(self) -> None:
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        next_sweep = time.monotonic() + 10
        try:
            while not self.stopping:
                for key, mask in self.selector.select(timeout=1.0):
                    if key.data is None:
                        self._accept()
                        continue
                    conn: _Connection = key.data
                    if mask & selectors.EVENT_WRITE:
                        self._flush(conn)
                    if mask & selectors.EVENT_READ and conn.sock.fileno() >= 0:
                        self._read(conn)
                now = time.monotonic()
                if now >= next_sweep:
                    self._close_idle(now)
                    next_sweep = now + 10
        finally:
            for conn in list(self.connections.values()):
                self._finish(conn)
            self.selector.close()

    def _finish(self, conn: _Connection) -> None:
        """On the way out: send what is still queued (briefly blocking), then close."""
        if conn.out and conn.sock.fileno() >= 0:
            try:
                conn.sock.settimeout(2.0)
                conn.sock.sendall(b"".join(conn.out))
            except OSError:
                pass
        self._close(conn)

    def stop(self) -> None:
        self.stopping = True

    def _accept(self) -> None:
        # Every worker watches the listening socket; the ones that lose the race get EAGAIN.
        for _ in range(16):
            try:
                sock, _ = self.listener.accept()
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EINTR):
                    log.warning("accept failed: %s", exc)
                return
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(sock)
            self.connections[sock.fileno()] = conn
            self.selector.register(sock, selectors.EVENT_READ, conn)

    def _close_idle(self, now: float) -> None:
        for conn in list(self.connections.values()):
            if not conn.requests and not conn.out and now - conn.last_active > IDLE_TIMEOUT:
                self._close(conn)

    def _close(self, conn: _Connection) -> None:
        fd = conn.sock.fileno()
        if fd >= 0:
            self.connections.pop(fd, None)
            try:
                self.selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conn.sock.close()

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
        self.selector.register(ours, selectors.EVENT_READ, conn)
        try:
            for request_id, values in enumerate(params, start=1):
                pairs = b"".join(encode_pair(k.encode("latin-1"), v.encode("latin-1")) for k, v in values.items())
                theirs.sendall(
                    _record(BEGIN_REQUEST, request_id, bytes([0, RESPONDER, KEEP_CONN, 0, 0, 0, 0, 0]))
                    + b"".join(_stream(PARAMS, request_id, pairs))
                    + _record(STDIN, request_id)
                )
                self._read(conn)
                while conn.out:
                    self._flush(conn)
                    theirs.recv(RECV_SIZE)
                theirs.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    while theirs.recv(RECV_SIZE):
                        pass
                theirs.setblocking(True)
        finally:
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
        buffer = conn.buffer + data if conn.buffer else data
        pos, end = 0, len(buffer)
        try:
            while end - pos >= 8:
                version, kind, request_id, length, padding = HEADER.unpack_from(buffer, pos)
                if version != VERSION:
                    raise ValueError(f"FastCGI version {version}")
                stop = pos + 8 + length + padding
                if stop > end:
                    break
                self._record(conn, kind, request_id, buffer[pos + 8 : pos + 8 + length])
                pos = stop
                if conn.sock.fileno() < 0:
                    return
        except ValueError as exc:
            log.warning("closing a FastCGI connection: %s", exc)
            self._close(conn)
            return
        conn.buffer = buffer[pos:]

    def _record(self, conn: _Connection, kind: int, request_id: int, content: bytes) -> None:
        if kind == BEGIN_REQUEST:
            if len(content) < 3:
                raise ValueError("short BEGIN_REQUEST")
            role = int.from_bytes(content[:2], "big")
            request = _Request(request_id, role, content[2])
            if role != RESPONDER:
                self._send(conn, [_record(END_REQUEST, request_id, END_BODY.pack(0, UNKNOWN_ROLE))], request)
                return
            conn.requests[request_id] = request
            return
        if kind == GET_VALUES:
            values = decode_pairs(content)
            answers = {"FCGI_MAX_CONNS": b"1024", "FCGI_MAX_REQS": b"1024", "FCGI_MPXS_CONNS": b"0"}
            body = b"".join(encode_pair(n.encode(), answers[n]) for n in values if n in answers)
            self._send(conn, [_record(GET_VALUES_RESULT, 0, body)], None)
            return
        known = conn.requests.get(request_id)
        if known is None:
            if request_id == 0:
                self._send(conn, [_record(UNKNOWN_TYPE, 0, bytes([kind]) + b"\0" * 7)], None)
            return  # a record for a request we do not know (ended or aborted): ignore it
        request = known
        if kind in STREAM_LIMITS:
            if content:
                stream = request.streams[kind]
                stream += content
                if len(stream) > STREAM_LIMITS[kind]:
                    raise ValueError(f"{STREAM_NAMES[kind]} too large")
            else:
                request.open_streams.discard(kind)
        elif kind == ABORT_REQUEST:
            del conn.requests[request_id]
            self._send(conn, [_record(END_REQUEST, request_id, END_BODY.pack(0, REQUEST_COMPLETE))], request)
            return
        if not request.open_streams:
            del conn.requests[request_id]
            self._run(conn, request)

    # -- running a request --------------------------------------------------------------------

    def _run(self, conn: _Connection, request: _Request) -> None:
        environ: dict[str, Any] = decode_pairs(bytes(request.streams[PARAMS]))
        environ.update(self._base_environ)
        environ["wsgi.input"] = io.BytesIO(bytes(request.streams[STDIN]))
        environ["wsgi.url_scheme"] = "https" if environ.get("HTTPS", "").lower() in ("on", "1") else "http"
        script = environ.setdefault("SCRIPT_NAME", "")
        if not environ.get("PATH_INFO"):
            # As flup does: the request path less the script name.
            path = environ.get("REQUEST_URI", "").split("?", 1)[0]
            environ["PATH_INFO"] = path[len(script) :] if path.startswith(script) else path
        environ.setdefault("QUERY_STRING", "")
        environ.setdefault("REQUEST_METHOD", "GET")
        head: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            lines = [f"Status: {status}\r\n"]
            lines.extend(f"{name}: {value}\r\n" for name, value in headers)
            lines.append("\r\n")
            head[:] = [("".join(lines)).encode("latin-1")]

        self.busy = True
        try:
            result = self.app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception:
            # The application answers every error itself; this is the last resort.
            log.exception("application failed")
            head[:] = [b"Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n"]
            body = b"internal error\n"
        finally:
            self.busy = False
        stdout = head[0] + body if head else body
        parts = _stream(STDOUT, request.request_id, stdout)
        parts.append(_record(END_REQUEST, request.request_id, END_BODY.pack(0, REQUEST_COMPLETE)))
        self._send(conn, parts, request)

    # -- output -------------------------------------------------------------------------------

    def _send(self, conn: _Connection, parts: Sequence[bytes | memoryview], request: _Request | None) -> None:
        if request is not None and not request.flags & KEEP_CONN:
            conn.closing = True
        data = b"".join(parts)
        if not conn.out:
            try:
                sent = conn.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._close(conn)
                return
            data = data[sent:]
        if data:
            conn.out.append(data)
            self.selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
        elif conn.closing:
            self._close(conn)

    def _flush(self, conn: _Connection) -> None:
        while conn.out:
            try:
                sent = conn.sock.send(conn.out[0])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(conn)
                return
            if sent < len(conn.out[0]):
                conn.out[0] = conn.out[0][sent:]
                return
            conn.out.pop(0)
        conn.last_active = time.monotonic()
        if conn.closing:
            self._close(conn)
        else:
            self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
