"""The stored form of a shared response, and the keys memcached sees.

The round trip is checked against the input itself over arbitrary statuses, headers and bodies;
key safety against memcached's rules as pymemcache (an independent implementation) enforces
them, and against the protocol's own limits (250 bytes, printable ASCII, no spaces).
"""

from __future__ import annotations

import pickle
import struct

from hypothesis import given
from hypothesis import strategies as st
from pymemcache.client.base import check_key_helper

from iipsrv_py.cache.memcached import memcached_key
from iipsrv_py.cache.responses import CachedResponse
from iipsrv_py.cache.shared import NoSharing
from iipsrv_py.cache.shared_responses import MAGIC, SharedResponses, decode_response, encode_response

# What WSGI can carry: latin-1 text without line breaks; header names are HTTP tokens.
TOKEN = st.text(alphabet="!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", min_size=1)
VALUE = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=200)
HEADERS = st.lists(st.tuples(TOKEN, VALUE), max_size=20)
STATUS = st.sampled_from(["200 OK", "304 Not Modified", "404 Not Found"])


@given(STATUS, HEADERS, st.binary(max_size=5000))
def test_round_trip(status: str, headers: list[tuple[str, str]], body: bytes) -> None:
    response = CachedResponse(status, headers, body)
    data = encode_response(response)
    assert data is not None
    assert decode_response(data) == response


def test_a_real_response_round_trips_byte_for_byte() -> None:
    body = bytes(range(256)) * 3 + b"\r\n\r\nStatus: 500\r\n"  # binary, and text that looks like a head
    headers = [
        ("Server", "iipsrv-py/0.1"),
        ("Content-Type", 'application/ld+json;profile="http://iiif.io/api/image/3/context.json"'),
        ("Content-Length", str(len(body))),
        ("ETag", '"0123456789abcdef0123456789abcdef"'),
        ("Link", '<http://x/iiif/a.tif/full/max/0/default.jpg>;rel="canonical"'),
        ("Content-Disposition", "inline; filename=\"caf_.jpg\"; filename*=UTF-8''caf%C3%A9.jpg"),
        ("X-Empty", ""),
        ("Vary", "Accept"),
        ("Vary", "Origin"),  # repeated names keep their order
    ]
    response = CachedResponse("200 OK", headers, body)
    data = encode_response(response)
    assert data is not None
    decoded = decode_response(data)
    assert decoded is not None
    assert (decoded.status, decoded.headers, decoded.body) == ("200 OK", headers, body)


def test_the_format_is_the_documented_one_not_pickle() -> None:
    data = encode_response(CachedResponse("200 OK", [("A", "b")], b"xyz"))
    assert data is not None
    head = b"200 OK\nA: b\n"
    assert data == b"iipRsp1\n" + struct.pack(">II", len(head), 3) + head + b"xyz"


@given(st.one_of(st.binary(max_size=200), st.binary(max_size=200).map(lambda tail: MAGIC + tail)))
def test_anything_else_is_a_miss_never_an_exception(data: bytes) -> None:
    decoded = decode_response(data)
    assert decoded is None or encode_response(decoded) == data


def test_damaged_values_are_misses() -> None:
    data = encode_response(CachedResponse("200 OK", [("Content-Type", "image/jpeg")], b"\xff\xd8body\xff\xd9"))
    assert data is not None
    assert decode_response(data[:-1]) is None  # truncated body
    assert decode_response(data + b"x") is None  # trailing bytes
    assert decode_response(b"iipRsp2\n" + data[8:]) is None  # another format version
    assert decode_response(pickle.dumps(("200 OK", [], b""))) is None
    assert decode_response(data.replace(b"Content-Type: image", b"Content-Type image")) is None


def test_headers_that_would_not_read_back_are_not_stored() -> None:
    for headers in ([("Bad\nName", "x")], [("Name", "a\r\nInjected: yes")], [("Colon:Name", "x")], [("N", "€")]):
        assert encode_response(CachedResponse("200 OK", headers, b"")) is None


class _Recorder(NoSharing):
    def __init__(self) -> None:
        self.stored: dict[str, tuple[bytes, int]] = {}

    def get(self, key: str) -> bytes | None:
        item = self.stored.get(key)
        return item[0] if item else None

    def set(self, key: str, value: bytes, expire: int = 0) -> None:
        self.stored[key] = (value, expire)


def test_only_200s_are_stored_and_found_with_their_expiry() -> None:
    shared = _Recorder()
    responses = SharedResponses(shared, expire=3600)
    ok = CachedResponse("200 OK", [("Content-Type", "image/jpeg")], b"jpeg")
    responses.put("k1", ok)
    responses.put("k2", CachedResponse("404 Not Found", [], b"no such image\n"))
    responses.put("k3", CachedResponse("400 Bad Request", [], b"Error/3:2 1\r\n"))
    assert list(shared.stored) == ["response:k1"] and shared.stored["response:k1"][1] == 3600
    assert responses.get("k1") == ok
    assert responses.get("k2") is None
    # Whatever else might sit under a key (written by something else), only a 200 is sent.
    shared.stored["response:k4"] = (encode_response(CachedResponse("500 Internal Server Error", [], b"")) or b"", 0)
    assert responses.get("k4") is None


@given(st.text(max_size=2000))
def test_memcached_keys_are_safe_for_any_caller_key(key: str) -> None:
    safe = memcached_key(key)
    encoded = safe.encode("ascii")
    assert len(encoded) <= 250
    assert all(33 <= byte <= 126 for byte in encoded)  # printable, no space, no control character
    check_key_helper(encoded, allow_unicode_keys=False)  # raises when memcached would refuse it


def test_memcached_keys_keep_callers_apart() -> None:
    # Keys that differ only in what memcached would mangle or refuse stay different.
    keys = ["a b", "a_b", "a\nb", "a\x00b", "a\udcffb", "é", "e\u0301", "x" * 300, "x" * 301, "", " "]
    assert len({memcached_key(key) for key in keys}) == len(keys)
    assert memcached_key("same") == memcached_key("same")
