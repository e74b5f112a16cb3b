"""Whole responses in the shared cache (memcached), under the one cache key.

What one worker rendered, every worker of every machine can send: the status line, the headers
and the body, exactly as the first worker sent them (its ETag is the key, so the headers are
those any worker would make).  Only what the worker cache would keep goes here: fresh 200s with
a key, never an error.

The stored value is a small explicit format, not pickle (a value from the network is data, never
code):

    MAGIC (8 bytes) | head length (4 bytes, big-endian) | body length (4 bytes) | head | body

The head is latin-1 text (what WSGI headers are): the status line, then one ``name: value`` per
header, each line ending in a newline.  Anything that does not parse exactly — another format,
a truncated value, a header that could not be written back unchanged — is a miss.
"""

from __future__ import annotations

import struct

from .. import metrics
from .memcached import MAX_VALUE_SIZE
from .responses import CachedResponse
from .shared import NO_SHARING, SharedCache

MAGIC = b"iipRsp1\n"
_LENGTHS = struct.Struct(">II")
_PREFIX = len(MAGIC) + _LENGTHS.size
NAMESPACE = "response:"  # shared keys of responses, apart from other users' (S3 blocks)


def encode_response(response: CachedResponse) -> bytes | None:
    """The stored form of ``response``; None when it cannot be written so that it reads back the same."""
    lines = [response.status]
    for name, value in response.headers:
        if not name or ":" in name or any(c in name for c in " \t\r\n") or "\n" in value or "\r" in value:
            return None
        lines.append(f"{name}: {value}")
    if "\n" in response.status or "\r" in response.status:
        return None
    try:
        head = "".join(line + "\n" for line in lines).encode("latin-1")
    except UnicodeEncodeError:
        return None
    return MAGIC + _LENGTHS.pack(len(head), len(response.body)) + head + response.body


def decode_response(data: bytes) -> CachedResponse | None:
    """The response ``data`` holds, or None when it is not exactly one stored by ``encode_response``."""
    if len(data) < _PREFIX or not data.startswith(MAGIC):
        return None
    head_length, body_length = _LENGTHS.unpack_from(data, len(MAGIC))
    if _PREFIX + head_length + body_length != len(data):
        return None
    head = data[_PREFIX : _PREFIX + head_length].decode("latin-1")
    if not head.endswith("\n"):
        return None
    status, *lines = head[:-1].split("\n")
    headers: list[tuple[str, str]] = []
    for line in lines:
        name, separator, value = line.partition(": ")
        if not separator or not name:
            return None
        headers.append((name, value))
    return CachedResponse(status, headers, data[_PREFIX + head_length :])


class SharedResponses:
    """Responses in the shared cache, kept for ``expire`` seconds (MEMCACHED_TIMEOUT; 0: no limit)."""

    def __init__(self, shared: SharedCache = NO_SHARING, expire: int = 0) -> None:
        self.shared = shared
        self.expire = expire
        self.enabled = shared is not NO_SHARING

    def get(self, key: str) -> CachedResponse | None:
        if not self.enabled:
            return None
        data = self.shared.get(NAMESPACE + key)
        response = decode_response(data) if data is not None else None
        # Only 200s are ever stored; anything else under the key is not ours to send.
        found = response if response is not None and response.status.startswith("200 ") else None
        metrics.lookup("memcached", found is not None)
        return found

    def put(self, key: str, response: CachedResponse) -> None:
        if not self.enabled or not response.status.startswith("200 ") or len(response.body) > MAX_VALUE_SIZE:
            return  # (a body over memcached's item limit would be copied only to be dropped)
        data = encode_response(response)
        if data is not None:
            self.shared.set(NAMESPACE + key, data, self.expire)
