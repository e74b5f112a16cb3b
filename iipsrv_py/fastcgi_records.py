"""The FastCGI record codec (FastCGI 1.0 specification): records, streams and name-value pairs.

Pure functions of bytes, used by the native responder (``fastcgi.py``) and checked in the tests
against flup's own encoder and decoder.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from . import SERVER_SOFTWARE

VERSION = 1
BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR, DATA = 1, 2, 3, 4, 5, 6, 7, 8
GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE = 9, 10, 11
RESPONDER = 1
KEEP_CONN = 1
REQUEST_COMPLETE, CANT_MPX_CONN, OVERLOADED, UNKNOWN_ROLE = 0, 1, 2, 3

HEADER = struct.Struct("!BBHHBx")
BEGIN_BODY = struct.Struct("!HB5x")
END_BODY = struct.Struct("!IB3x")
MAX_CONTENT = 0xFFFF


def record(kind: int, request_id: int, content: bytes = b"") -> bytes:
    return HEADER.pack(VERSION, kind, request_id, len(content), 0) + content


def end_request(request_id: int, protocol_status: int = REQUEST_COMPLETE, app_status: int = 0) -> bytes:
    return record(END_REQUEST, request_id, END_BODY.pack(app_status, protocol_status))


def frame_stream(kind: int, request_id: int, chunks: Iterable[bytes]) -> list[bytes | memoryview]:
    """``chunks`` as records of at most 65535 bytes each, then the empty record that ends the
    stream.  Record contents are views of the chunks: the one copy is the join before sending."""
    parts: list[bytes | memoryview] = []
    pending: list[memoryview] = []
    room = MAX_CONTENT
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        pos, size = 0, len(view)
        while pos < size:
            take = min(room, size - pos)
            pending.append(view[pos : pos + take])
            pos += take
            room -= take
            if room == 0:
                parts.append(HEADER.pack(VERSION, kind, request_id, MAX_CONTENT, 0))
                parts.extend(pending)
                pending.clear()
                room = MAX_CONTENT
    if pending:
        parts.append(HEADER.pack(VERSION, kind, request_id, MAX_CONTENT - room, 0))
        parts.extend(pending)
    parts.append(HEADER.pack(VERSION, kind, request_id, 0, 0))
    return parts


def stdout_records(request_id: int, chunks: list[bytes]) -> bytes:
    """A whole response as FCGI_STDOUT records and FCGI_END_REQUEST, in one block to send.

    Most answers (metadata, tiles) fit in one record: those are joined directly, without the
    views ``frame_stream`` makes to split larger ones.
    """
    size = sum(map(len, chunks))
    if size <= MAX_CONTENT:
        return b"".join(
            (
                HEADER.pack(VERSION, STDOUT, request_id, size, 0),
                *chunks,
                HEADER.pack(VERSION, STDOUT, request_id, 0, 0),
                end_request(request_id),
            )
        )
    parts = frame_stream(STDOUT, request_id, chunks)
    parts.append(end_request(request_id))
    return b"".join(parts)


def decode_pairs(data: bytes) -> dict[str, str]:
    """FastCGI name-value pairs; names and values as latin-1 text, as WSGI wants them.

    Hot: nginx sends some twenty pairs with every request.  The whole block is decoded to text
    once (latin-1 maps each byte to one character) and the pairs are slices of it; lengths are
    read from the bytes, one byte each unless the high bit asks for four.
    """
    text = data.decode("latin-1")
    pairs: dict[str, str] = {}
    pos, end = 0, len(data)
    while pos < end:
        name_length = data[pos]
        if name_length & 0x80:
            if pos + 4 > end:
                raise ValueError("truncated name-value pair")
            name_length = int.from_bytes(data[pos : pos + 4], "big") & 0x7FFFFFFF
            pos += 4
        else:
            pos += 1
        if pos >= end:
            raise ValueError("truncated name-value pair")
        value_length = data[pos]
        if value_length & 0x80:
            if pos + 4 > end:
                raise ValueError("truncated name-value pair")
            value_length = int.from_bytes(data[pos : pos + 4], "big") & 0x7FFFFFFF
            pos += 4
        else:
            pos += 1
        name_end = pos + name_length
        value_end = name_end + value_length
        if value_end > end:
            raise ValueError("truncated name-value pair")
        pairs[text[pos:name_end]] = text[name_end:value_end]
        pos = value_end
    return pairs


def encode_pair(name: bytes, value: bytes) -> bytes:
    def length(n: int) -> bytes:
        return bytes([n]) if n < 128 else (n | 0x80000000).to_bytes(4, "big")

    return length(len(name)) + length(len(value)) + name + value


def error_response(status: str, reason: str) -> bytes:
    """An HTTP answer the responder writes itself, for a request it cannot give the application."""
    body = (reason + "\n").encode("latin-1", "replace")
    head = (
        f"Status: {status}\r\nServer: {SERVER_SOFTWARE}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-cache\r\n\r\n"
    )
    return head.encode("latin-1") + body
