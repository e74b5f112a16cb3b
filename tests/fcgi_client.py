"""A FastCGI client for the tests, built on flup's own record codec (``flup.server.fcgi_base``:
``Record``, ``encode_pair``, ``decode_pair``), so that what the native responder reads and
writes is checked against an implementation it shares no code with."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flup.server import fcgi_base as flup

from iipsrv_py.fastcgi import Responder

BEGIN, ABORT, END, PARAMS, STDIN, STDOUT, STDERR = 1, 2, 3, 4, 5, 6, 7
GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE = 9, 10, 11
REQUEST_COMPLETE, CANT_MPX_CONN, OVERLOADED, UNKNOWN_ROLE = 0, 1, 2, 3
MAX_CONTENT = 65535


class _Sink:
    """A socket stand-in for ``Record.write``: collects the bytes instead of sending them."""

    def __init__(self) -> None:
        self.data = bytearray()

    def send(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def fileno(self) -> int:  # flup's debug trace names the descriptor
        return -1


def record(kind: int, request_id: int, content: bytes = b"") -> bytes:
    """One record as flup writes it (content padded to a multiple of 8)."""
    rec = flup.Record(kind, request_id)
    rec.contentData = content
    rec.contentLength = len(content)
    sink = _Sink()
    rec.write(sink)
    return bytes(sink.data)


def stream(kind: int, request_id: int, data: bytes) -> bytes:
    """A whole stream: records of at most 65535 bytes, then the empty record that ends it."""
    chunks = [data[i : i + MAX_CONTENT] for i in range(0, len(data), MAX_CONTENT)]
    return b"".join(record(kind, request_id, chunk) for chunk in chunks) + record(kind, request_id)


def begin(request_id: int, keep: bool = True, role: int = flup.FCGI_RESPONDER) -> bytes:
    return record(BEGIN, request_id, struct.pack(flup.FCGI_BeginRequestBody, role, flup.FCGI_KEEP_CONN if keep else 0))


def encode_params(params: dict[str, str] | dict[bytes, bytes]) -> bytes:
    encoded = b""
    for name, value in params.items():
        n = name.encode("latin-1") if isinstance(name, str) else name
        v = value.encode("latin-1") if isinstance(value, str) else value
        encoded += flup.encode_pair(n, v)
    return encoded


def get_params(query: str, **extra: str) -> dict[str, str]:
    return {
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": query,
        "REQUEST_URI": "/fcgi-bin/iipsrv.fcgi?" + query,
        "SCRIPT_NAME": "/fcgi-bin/iipsrv.fcgi",
        "HTTP_HOST": "localhost",
        **extra,
    }


def request(
    request_id: int, params: dict[str, str] | dict[bytes, bytes], body: bytes = b"", keep: bool = True
) -> bytes:
    """BEGIN_REQUEST, the FCGI_PARAMS stream and the FCGI_STDIN stream of one request."""
    return begin(request_id, keep) + stream(PARAMS, request_id, encode_params(params)) + stream(STDIN, request_id, body)


def get(request_id: int, query: str, keep: bool = True) -> bytes:
    return request(request_id, get_params(query), keep=keep)


@dataclass
class Response:
    request_id: int
    stdout: bytes = b""
    stderr: bytes = b""
    app_status: int | None = None
    protocol_status: int | None = None
    kinds: list[int] = field(default_factory=list)  # the record types received, in order

    @property
    def head_and_body(self) -> tuple[bytes, bytes]:
        head, _, body = self.stdout.partition(b"\r\n\r\n")
        return head, body

    @property
    def status(self) -> int:
        head, _ = self.head_and_body
        first = head.split(b"\r\n", 1)[0]
        assert first.startswith(b"Status: "), self.stdout[:200]
        return int(first.split()[1])

    @property
    def headers(self) -> dict[str, str]:
        head, _ = self.head_and_body
        lines = head.decode("latin-1").split("\r\n")[1:]
        return {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}

    @property
    def body(self) -> bytes:
        return self.head_and_body[1]


def read_record(sock: socket.socket) -> flup.Record:
    """The next record, decoded by flup (EOFError when the connection ends)."""
    rec = flup.Record()
    rec.read(sock)
    return rec


def read_response(sock: socket.socket, request_id: int) -> Response:
    """Records until the FCGI_END_REQUEST of ``request_id``; records of other ids are an error."""
    response = Response(request_id)
    while True:
        rec = read_record(sock)
        assert rec.version == 1
        assert rec.requestId == request_id, f"a record for request {rec.requestId} while reading {request_id}"
        response.kinds.append(rec.type)
        if rec.type == STDOUT:
            response.stdout += rec.contentData
        elif rec.type == STDERR:
            response.stderr += rec.contentData
        elif rec.type == END:
            assert rec.contentLength == flup.FCGI_EndRequestBody_LEN
            response.app_status, response.protocol_status = struct.unpack(flup.FCGI_EndRequestBody, rec.contentData)
            return response
        else:
            raise AssertionError(f"unexpected record type {rec.type}")


def get_values(sock: socket.socket, names: list[str]) -> dict[bytes, bytes]:
    sock.sendall(record(GET_VALUES, 0, b"".join(flup.encode_pair(n.encode(), b"") for n in names)))
    rec = read_record(sock)
    assert (rec.type, rec.requestId) == (GET_VALUES_RESULT, 0)
    values, pos = {}, 0
    while pos < rec.contentLength:
        pos, (name, value) = flup.decode_pair(rec.contentData, pos)
        values[name] = value
    return values


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True when the other side closed (EOF or reset) within ``timeout`` and sent nothing more."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@contextlib.contextmanager
def connect(path: str, timeout: float = 10.0) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(timeout)
    sock.connect(path)
    try:
        yield sock
    finally:
        sock.close()


@contextlib.contextmanager
def responder(
    path: str, app: Callable[..., Any], workers: int = 1, backlog: int = 512, **options: Any
) -> Iterator[list[Responder]]:
    """``workers`` native responders in threads sharing one listening unix socket at ``path``."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(backlog)
    responders = [Responder(listener, app, **options) for _ in range(workers)]
    threads = [threading.Thread(target=r.serve, daemon=True) for r in responders]
    for thread in threads:
        thread.start()
    try:
        yield responders
    finally:
        for r in responders:
            r.stop()
        for _ in responders:  # wake them from their poll (one second at most otherwise)
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as waker:
                waker.settimeout(1)
                waker.connect(path)
        for thread in threads:
            thread.join(timeout=5)
        listener.close()
        assert not any(thread.is_alive() for thread in threads), "a responder did not stop"


def echo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Answers with its string environ and the request body (hex) as JSON."""
    variables = {k: v for k, v in environ.items() if isinstance(v, str)}
    variables["body"] = environ["wsgi.input"].read().hex()
    body = json.dumps(variables).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
