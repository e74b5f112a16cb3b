"""The native FastCGI responder, driven over a real socket by a client written from the
FastCGI 1.0 specification (record header: version, type, request id, content length, padding)."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iipsrv_py.fastcgi_records import decode_pairs, encode_pair
from tests import fcgi_client

BEGIN, ABORT, END, PARAMS, STDIN, STDOUT, GET_VALUES, GET_VALUES_RESULT = 1, 2, 3, 4, 5, 6, 9, 10


def record(kind: int, request_id: int, content: bytes = b"", padding: int = 0) -> bytes:
    return struct.pack("!BBHHBx", 1, kind, request_id, len(content), padding) + content + b"\0" * padding


def begin(request_id: int, keep: bool, role: int = 1) -> bytes:
    return record(BEGIN, request_id, struct.pack("!HB5x", role, 1 if keep else 0))


def request(request_id: int, query: str, keep: bool = True, body: bytes = b"") -> bytes:
    params = b"".join(
        encode_pair(k.encode(), v.encode())
        for k, v in {
            "REQUEST_METHOD": "POST" if body else "GET",
            "QUERY_STRING": query,
            "REQUEST_URI": "/x?" + query,
            "SCRIPT_NAME": "/x",
            "CONTENT_LENGTH": str(len(body)),
        }.items()
    )
    return (
        begin(request_id, keep)
        + record(PARAMS, request_id, params, padding=3)
        + record(PARAMS, request_id)
        + (record(STDIN, request_id, body) if body else b"")
        + record(STDIN, request_id)
    )


def read_records(sock: socket.socket, until_end_of: int | None = None) -> list[tuple[int, int, bytes]]:
    """Records until the END_REQUEST of ``until_end_of`` (or until the server closes).

    Reads only whole records up to that one (byte by byte once a header is seen), so that
    records of a later request stay in the socket for the next call."""
    records, buffer = [], b""
    while True:
        while len(buffer) >= 8:
            _, kind, rid, length, padding = struct.unpack("!BBHHBx", buffer[:8])
            if len(buffer) < 8 + length + padding:
                break
            records.append((kind, rid, buffer[8 : 8 + length]))
            buffer = buffer[8 + length + padding :]
            if kind in (END, GET_VALUES_RESULT) and (until_end_of is None or rid == until_end_of):
                return records
        want = 8 - len(buffer) if len(buffer) < 8 else 8 + sum(struct.unpack("!HB", buffer[4:7])) - len(buffer)
        data = sock.recv(max(1, want))
        if not data:
            return records
        buffer += data


def stdout_of(records: list[tuple[int, int, bytes]], request_id: int) -> bytes:
    return b"".join(content for kind, rid, content in records if kind == STDOUT and rid == request_id)


def echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    text = f"{environ['REQUEST_METHOD']} {environ['QUERY_STRING']} {environ['PATH_INFO']} {len(body)}"
    if environ["QUERY_STRING"] == "big":
        payload = bytes(range(256)) * 1000  # 256000 bytes: four STDOUT records
    else:
        payload = text.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Len", str(len(payload)))])
    return [payload]


@pytest.fixture
def served(tmp_path) -> Iterator[str]:
    path = str(tmp_path / "fcgi.sock")
    with fcgi_client.responder(path, echo_app):
        yield path


@contextlib.contextmanager
def client(path: str) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(path)
    try:
        yield sock
    finally:
        sock.close()


def test_one_request_then_the_server_closes(served: str) -> None:
    with client(served) as sock:
        sock.sendall(request(1, "a=1", keep=False))
        records = read_records(sock)
        assert records[-1][0] == END and records[-1][2][4] == 0  # REQUEST_COMPLETE
        out = stdout_of(records, 1)
        assert out.startswith(b"Status: 200 OK\r\n")
        assert out.endswith(b"\r\n\r\nGET a=1  0")  # PATH_INFO: the URI path less SCRIPT_NAME
        assert sock.recv(10) == b""  # closed, as FCGI_KEEP_CONN was not set


def test_kept_connection_serves_requests_one_after_another(served: str) -> None:
    with client(served) as sock:
        for rid in (1, 2, 7):
            sock.sendall(request(rid, f"n={rid}"))
            assert stdout_of(read_records(sock, rid), rid).endswith(f"GET n={rid}  0".encode())


def test_records_split_at_every_byte_are_reassembled(served: str) -> None:
    data = request(3, "split=yes", body=b"abc" * 10)
    with client(served) as sock:
        for i in range(len(data)):
            sock.send(data[i : i + 1])
        assert stdout_of(read_records(sock, 3), 3).endswith(b"POST split=yes  30")


def test_two_requests_in_one_write(served: str) -> None:
    with client(served) as sock:
        sock.sendall(request(1, "first") + request(2, "second"))
        records = read_records(sock, 1) + read_records(sock, 2)
        assert stdout_of(records, 1).endswith(b"first  0")
        assert stdout_of(records, 2).endswith(b"second  0")


def test_large_body_spans_several_records(served: str) -> None:
    with client(served) as sock:
        sock.sendall(request(1, "big"))
        records = read_records(sock, 1)
        chunks = [content for kind, _, content in records if kind == STDOUT and content]
        assert len(chunks) >= 4 and all(len(c) <= 65535 for c in chunks)
        body = stdout_of(records, 1).split(b"\r\n\r\n", 1)[1]
        assert body == bytes(range(256)) * 1000


def test_get_values_and_unknown_role(served: str) -> None:
    with client(served) as sock:
        sock.sendall(record(GET_VALUES, 0, encode_pair(b"FCGI_MPXS_CONNS", b"") + encode_pair(b"NOPE", b"")))
        kind, _, content = read_records(sock)[-1]
        assert kind == GET_VALUES_RESULT and decode_pairs(content) == {"FCGI_MPXS_CONNS": "0"}
        sock.sendall(begin(5, keep=True, role=2))  # AUTHORIZER
        kind, rid, content = read_records(sock, 5)[-1]
        assert (kind, rid, content[4]) == (END, 5, 3)  # FCGI_UNKNOWN_ROLE


def test_aborted_request_is_ended_and_connection_stays_usable(served: str) -> None:
    with client(served) as sock:
        sock.sendall(begin(4, keep=True) + record(ABORT, 4))
        assert read_records(sock, 4)[-1][:2] == (END, 4)
        sock.sendall(request(6, "after"))
        assert stdout_of(read_records(sock, 6), 6).endswith(b"after  0")


def test_garbage_closes_only_that_connection(served: str) -> None:
    with client(served) as bad:
        bad.sendall(b"\x07" * 64)  # version 7: not FastCGI
        assert bad.recv(10) == b""
    with client(served) as good:
        good.sendall(request(1, "still"))
        assert stdout_of(read_records(good, 1), 1).endswith(b"still  0")


pair_text = st.binary(max_size=300)


@given(st.lists(st.tuples(pair_text, pair_text), max_size=8))
def test_pairs_round_trip(pairs: list[tuple[bytes, bytes]]) -> None:
    encoded = b"".join(encode_pair(n, v) for n, v in pairs)
    expected = {n.decode("latin-1"): v.decode("latin-1") for n, v in pairs}
    assert decode_pairs(encoded) == expected


@given(st.binary(max_size=40))
def test_malformed_pairs_raise_value_error_only(data: bytes) -> None:
    try:
        decode_pairs(data)
    except ValueError:
        pass
