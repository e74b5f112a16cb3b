"""The native responder's record codec against flup's (``flup.server.fcgi_base``), the
independent reference: pairs of any length in both length forms, requests written by flup's
``Record`` (padded, bodies over one record), responses decoded by flup's ``Record.read``."""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Iterator

import pytest
from flup.server import fcgi_base as flup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iipsrv_py.fastcgi_records import HEADER, decode_pairs, encode_pair, frame_stream
from tests import fcgi_client as fc

# Short (one byte, < 128) and long (four bytes) length forms, and lengths past one record.
short_bytes = st.binary(max_size=140)
long_bytes = st.integers(min_value=120, max_value=70_000).flatmap(
    lambda n: st.binary(min_size=1, max_size=8).map(lambda seed: (seed * (n // len(seed) + 1))[:n])
)
any_bytes = st.one_of(short_bytes, short_bytes, long_bytes)


def flup_decode_all(data: bytes) -> list[tuple[bytes, bytes]]:
    pairs, pos = [], 0
    while pos < len(data):
        pos, pair = flup.decode_pair(data, pos)
        pairs.append(pair)
    assert pos == len(data)
    return pairs


@given(st.lists(st.tuples(any_bytes, any_bytes), max_size=5))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_pairs_flup_encodes_we_decode(pairs: list[tuple[bytes, bytes]]) -> None:
    encoded = b"".join(flup.encode_pair(n, v) for n, v in pairs)
    assert decode_pairs(encoded) == {n.decode("latin-1"): v.decode("latin-1") for n, v in pairs}


@given(st.lists(st.tuples(any_bytes, any_bytes), max_size=5))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_pairs_we_encode_flup_decodes(pairs: list[tuple[bytes, bytes]]) -> None:
    encoded = b"".join(encode_pair(n, v) for n, v in pairs)
    assert encoded == b"".join(flup.encode_pair(n, v) for n, v in pairs)
    assert flup_decode_all(encoded) == pairs


@given(st.binary(max_size=60))
def test_truncated_pairs_are_value_errors(data: bytes) -> None:
    """Whatever flup would make of it, ours either decodes it exactly as flup does or raises
    ValueError (never another exception, never a silently short result)."""
    try:
        ours = decode_pairs(data)
    except ValueError:
        return
    assert ours == {n.decode("latin-1"): v.decode("latin-1") for n, v in flup_decode_all(data)}


class _Reader:
    """flup's Record.read over bytes (it wants a socket: recv is all it calls)."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def recv(self, n: int) -> bytes:
        chunk = bytes(self.data[self.pos : self.pos + n])
        self.pos += len(chunk)
        return chunk

    def fileno(self) -> int:  # flup's debug trace names the descriptor
        return -1


@given(st.lists(st.binary(max_size=70_000), max_size=4), st.integers(1, 65535))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_framed_stream_reads_back_with_flup(chunks: list[bytes], request_id: int) -> None:
    data = b"".join(frame_stream(fc.STDOUT, request_id, chunks))
    reader, got = _Reader(data), b""
    while True:
        rec = flup.Record()
        rec.read(reader)
        assert (rec.version, rec.type, rec.requestId) == (1, fc.STDOUT, request_id)
        assert rec.contentLength <= 65535
        got += rec.contentData
        if rec.contentLength == 0:
            break
    assert reader.pos == len(data), "nothing after the end-of-stream record"
    assert got == b"".join(chunks)


def test_header_layout_is_flups() -> None:
    assert HEADER.format == flup.FCGI_Header
    assert HEADER.size == flup.FCGI_HEADER_LEN


# -- whole requests over a socket: flup writes them, flup reads the answers ----------------------------


@pytest.fixture(scope="module")
def echo_path() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "echo.sock")
        # A body limit above one record, so that bodies spanning several records get through.
        with fc.responder(path, fc.echo_app, body_limit=1 << 20):
            yield path


names = st.binary(min_size=1, max_size=300).map(lambda n: b"X_" + n)


@given(
    params=st.dictionaries(names, any_bytes, max_size=4),
    body=st.one_of(
        st.binary(max_size=2000), st.integers(65_000, 140_000).map(lambda n: bytes(range(256)) * (n // 256))
    ),
    request_id=st.integers(1, 65535),
    keep=st.booleans(),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_request_written_by_flup_is_served_and_answer_reads_with_flup(
    echo_path: str, params: dict[bytes, bytes], body: bytes, request_id: int, keep: bool
) -> None:
    with fc.connect(echo_path) as sock:
        sock.sendall(fc.request(request_id, {b"REQUEST_METHOD": b"POST", **params}, body, keep=keep))
        response = fc.read_response(sock, request_id)
        assert (response.app_status, response.protocol_status) == (0, fc.REQUEST_COMPLETE)
        assert response.kinds[-2:] == [fc.STDOUT, fc.END], "STDOUT ends with its empty record, then END_REQUEST"
        assert response.status == 200
        echoed = json.loads(response.body)
        for name, value in params.items():
            assert echoed[name.decode("latin-1")] == value.decode("latin-1")
        assert bytes.fromhex(echoed["body"]) == body
        assert int(response.headers["content-length"]) == len(response.body)
        if keep:
            assert fc.get_values(sock, ["FCGI_MPXS_CONNS"]) == {b"FCGI_MPXS_CONNS": b"0"}, "still open"
        else:
            assert fc.closed_by_peer(sock), "closed after the request, as FCGI_KEEP_CONN was not set"


def test_end_request_body_is_flups_layout(echo_path: str) -> None:
    with fc.connect(echo_path) as sock:
        sock.sendall(fc.begin(9, keep=True, role=flup.FCGI_AUTHORIZER))
        rec = fc.read_record(sock)
        assert (rec.type, rec.requestId, rec.contentLength) == (fc.END, 9, flup.FCGI_EndRequestBody_LEN)
        assert struct.unpack(flup.FCGI_EndRequestBody, rec.contentData) == (0, flup.FCGI_UNKNOWN_ROLE)
