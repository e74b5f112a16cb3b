"""Whole responses in a real memcached, through the application (WSGI, in process).

Which layer answered is read from the access log line (VERBOSITY=2); what memcached did is read
from memcached's own counters; the bytes are compared with an application that has no memcached.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests import helpers
from tests.integration import servers
from tests.integration.memcached_server import Memcached, memcached

PYRAMID = "tif-rgb-3000x2000-5lvl-256tile-jpeg-subifd.tif"
PATIENT = "1"  # MEMCACHED_IO_TIMEOUT: a loaded machine must not turn an expected hit into a miss
QUERIES = [
    f"FIF={PYRAMID}&JTL=3,5",  # a stored tile (passthrough)
    f"FIF={PYRAMID}&WID=500&CVT=jpeg",  # a rendering
    f"FIF={PYRAMID}&OBJ=IIP,1.0&OBJ=Basic-info",  # text
    f"IIIF=/{PYRAMID}/100,100,700,500/300,/90/gray.png",  # IIIF: rotation, quality, PNG
    f"IIIF=/{PYRAMID}/info.json",
    "DeepZoom=jp2-rgb-3000x2000-5res-3layer.jp2_files/10/1_1.jpg",
    "Zoomify=svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs/TileGroup0/2-1-1.jpg",
]
ERRORS = [
    ("FIF=no-such-image.tif&OBJ=Basic-info", 404),
    (f"FIF={PYRAMID}&JTL=4,99999", 404),  # tile out of range
    (f"IIIF=/{PYRAMID}/full/0,/0/default.jpg", 400),  # zero size
    (f"FIF={PYRAMID}&NOSUCH=1&JTL=0,0", 400),  # IIP error 2 2
    (f"FIF={PYRAMID}&OBJ=no-such-object", 400),  # IIP error 3 2
    ("FIF=not-an-image.tif&OBJ=Basic-info", 415),
]


class AccessLog(logging.Handler):
    """The application's access lines, as (query, status, layer)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def layers(self, query: str, method: str = "GET") -> list[str]:
        # "<method> <uri> <protocol> -> <status> <bytes>B <ms>ms[ <layer>]"
        request = f"{method} /fcgi-bin/iipsrv.fcgi?{query}"
        return [
            line.split("ms", 1)[1].strip()
            for line in self.lines
            if " -> " in line and line.split(" -> ", 1)[0].rsplit(" ", 1)[0] == request
        ]

    def clear(self) -> None:
        self.lines.clear()


@pytest.fixture
def access() -> Iterator[AccessLog]:
    logger = logging.getLogger("iipsrv_py")
    handler = AccessLog()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def server(workdir: str) -> Iterator[Memcached]:
    with memcached(workdir) as running:
        yield running


def sets_seen(server: Memcached, before: dict[str, int], at_least: int) -> dict[str, int]:
    """memcached's counters once it has read ``at_least`` more sets than at ``before``.

    An application sends a set without waiting for the answer, so a response can come back
    before memcached has read it.  To show that something was NOT stored, each application
    involved then renders one new response (a marker): memcached reads a connection's commands
    in order, so once every marker is counted, any set sent before it is counted too.
    """
    return servers.wait_until(
        lambda: stats if (stats := server.stats())["cmd_set"] >= before["cmd_set"] + at_least else None,
        5,
        f"{at_least} sets",
    )


def marker(app: object, n: int) -> None:
    """A response not asked for before (a tile of its own), rendered and so stored."""
    assert helpers.call(app, f"FIF={PYRAMID}&JTL=4,{n}").status == 200


def test_a_response_rendered_by_one_application_is_sent_by_another(server: Memcached, access: AccessLog) -> None:
    reference = helpers.make_app()
    first = helpers.make_app(MEMCACHED_SERVERS=server.address, MEMCACHED_IO_TIMEOUT=PATIENT)
    second = helpers.make_app(MEMCACHED_SERVERS=server.address, MEMCACHED_IO_TIMEOUT=PATIENT)
    for query in QUERIES:
        expected = helpers.call(reference, query)
        assert expected.status == 200, query
        access.clear()  # the reference's own line
        before = server.stats()
        rendered = helpers.call(first, query)
        stored = sets_seen(server, before, 1)
        assert stored["cmd_set"] == before["cmd_set"] + 1 and stored["curr_items"] == before["curr_items"] + 1
        shared = helpers.call(second, query)
        after = server.stats()
        assert after["get_hits"] == stored["get_hits"] + 1 and after["cmd_set"] == stored["cmd_set"]
        assert access.layers(query) == ["rendered", "memcached"]
        # Byte for byte what an application without memcached sends, headers included.
        assert rendered.body == shared.body == expected.body
        assert rendered.header_list == shared.header_list == expected.header_list
        access.clear()


def test_look_up_order_conditional_then_worker_then_memcached(server: Memcached, access: AccessLog) -> None:
    first = helpers.make_app(MEMCACHED_SERVERS=server.address, MEMCACHED_IO_TIMEOUT=PATIENT)
    second = helpers.make_app(MEMCACHED_SERVERS=server.address, MEMCACHED_IO_TIMEOUT=PATIENT)
    query = f"FIF={PYRAMID}&WID=300&CVT=jpeg"
    # The same request in other words: the same key, but not the same request text, so the
    # request-text shortcut does not take it.
    same = f"FIF={PYRAMID}&&WID=300.0&CVT=jpeg"
    start = server.stats()
    etag = helpers.call(first, query).header("ETag")
    sets_seen(server, start, 1)
    assert etag and helpers.call(first, same).header("ETag") == etag
    assert access.layers(same) == ["worker"]

    # A conditional request is answered before any cache: memcached is not asked.
    gets = server.stats()["cmd_get"]
    revalidated = helpers.call(second, query, headers={"If-None-Match": etag})
    assert revalidated.status == 304 and revalidated.body == b""
    assert server.stats()["cmd_get"] == gets

    # A memcached hit is kept by the worker: asked again in other words, memcached is not asked.
    assert helpers.call(second, query).status == 200
    assert server.stats()["cmd_get"] == gets + 1
    assert helpers.call(second, same).status == 200
    assert helpers.call(second, query).status == 200
    assert server.stats()["cmd_get"] == gets + 1
    assert access.layers(query) == ["rendered", "", "memcached", "shortcut"]
    assert access.layers(same) == ["worker", "worker"]


def test_head_is_served_from_memcached_and_post_never(server: Memcached, access: AccessLog) -> None:
    first = helpers.make_app(MEMCACHED_SERVERS=server.address, MEMCACHED_IO_TIMEOUT=PATIENT)
    second = helpers.make_app(MEMCACHED_SERVERS=server.address, MEMCACHED_IO_TIMEOUT=PATIENT)
    query = f"FIF={PYRAMID}&HEI=200&CVT=png"
    start = server.stats()
    full = helpers.call(first, query)
    sets_seen(server, start, 1)
    head = helpers.call(second, query, method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.header("Content-Length") == str(len(full.body)) and head.header("ETag") == full.header("ETag")
    assert access.layers(query) == ["rendered"] and access.layers(query, "HEAD") == ["memcached"]
    # POST renders (its Content-Disposition differs) and leaves memcached alone.
    before = server.stats()
    posted = helpers.call(second, "", method="POST", body=query.encode())
    assert posted.status == 200 and "attachment" in (posted.header("Content-Disposition") or "")
    assert server.stats()["cmd_get"] == before["cmd_get"]  # gets wait for their answer: no race
    marker(second, 0)
    after = sets_seen(server, before, 1)
    assert (after["cmd_get"], after["cmd_set"]) == (before["cmd_get"] + 1, before["cmd_set"] + 1)  # the marker


def test_errors_are_never_stored(server: Memcached, access: AccessLog) -> None:
    reference = helpers.make_app()
    first = helpers.make_app(MEMCACHED_SERVERS=server.address, MEMCACHED_IO_TIMEOUT=PATIENT)
    second = helpers.make_app(MEMCACHED_SERVERS=server.address, MEMCACHED_IO_TIMEOUT=PATIENT)
    expected = {query: helpers.call(reference, query).body for query, _ in ERRORS}
    access.clear()
    before = server.stats()
    for query, status in ERRORS:
        for app in (first, second, first):
            answer = helpers.call(app, query)
            assert answer.status == status, query
            assert answer.body == expected[query]
    assert server.stats()["get_hits"] == before["get_hits"]
    for query, _ in ERRORS:
        assert access.layers(query) == ["", "", ""], query  # answered by no cache, named by none
    marker(first, 0)
    marker(second, 1)
    after = sets_seen(server, before, 2)
    assert after["cmd_set"] == before["cmd_set"] + 2 and after["curr_items"] == before["curr_items"] + 2 == 2


def test_a_response_over_the_item_size_is_served_and_not_sent(server: Memcached, access: AccessLog) -> None:
    """PNG_QUALITY=0 stores pixels uncompressed: a 1000 px wide rendering is about 2 MB."""
    reference = helpers.make_app(PNG_QUALITY="0")
    first = helpers.make_app(MEMCACHED_SERVERS=server.address, MEMCACHED_IO_TIMEOUT=PATIENT, PNG_QUALITY="0")
    second = helpers.make_app(MEMCACHED_SERVERS=server.address, MEMCACHED_IO_TIMEOUT=PATIENT, PNG_QUALITY="0")
    query = f"FIF={PYRAMID}&WID=1000&CVT=png"
    expected = helpers.call(reference, query).body
    access.clear()
    before = server.stats()
    large = helpers.call(first, query)
    again = helpers.call(second, query)
    assert large.status == again.status == 200
    assert len(large.body) > 1024 * 1024
    assert large.body == again.body == expected
    assert access.layers(query) == ["rendered", "rendered"]
    marker(first, 0)
    marker(second, 1)
    after = sets_seen(server, before, 2)
    assert after["cmd_set"] == before["cmd_set"] + 2 and after["curr_items"] == 2  # the markers only
    assert not [line for line in access.lines if "memcached" in line and "->" not in line]
