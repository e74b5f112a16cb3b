"""The two FastCGI engines of a real ``iipsrv-py --bind`` pool, spoken to directly with flup's
record codec (tests/fcgi_client.py): what each announces in FCGI_GET_VALUES, what each does
with a kept connection, and that both give the same answers."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from iipsrv_py.app import MAX_POST_BODY
from tests import fcgi_client as fc
from tests import helpers
from tests.integration import servers

pytestmark = pytest.mark.integration

TABLES = "tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif"
BIGGEST = "tif-rgb-3000x2000-4lvl-div3-256tile-lzw.tif"
QUERIES = [
    "",
    f"FIF={TABLES}&OBJ=IIP,1.0&OBJ=Basic-info",
    f"FIF={TABLES}&JTL=3,7",
    f"IIIF=/{TABLES}/0,0,512,512/256,/0/default.jpg",
    "FIF=no-such.tif&OBJ=Max-size",
    "FIF=x&NOPE=1",
]


@contextlib.contextmanager
def pool(workdir: str, engine: str, workers: int = 1) -> Iterator[str]:
    with servers.short_tempdir() as sockets:
        path = os.path.join(sockets, "iipsrv.sock")
        server = servers.start_iipsrv(workdir, path, workers, engine=engine)
        try:
            yield path
        finally:
            server.stop()


def answered_within(sock: socket.socket, seconds: float) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(timeout=seconds))


def test_get_values_state_what_each_engine_does(workdir: str, engine: str) -> None:
    names = ["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"]
    with pool(workdir, engine) as path, fc.connect(path) as sock:
        values = fc.get_values(sock, names)
    if engine == "native":
        # Many connections per worker, one request on each at a time.
        assert values == {b"FCGI_MAX_CONNS": b"1024", b"FCGI_MAX_REQS": b"1024", b"FCGI_MPXS_CONNS": b"0"}
    else:
        # flup's loop: one connection, one request, at a time per worker.
        assert values == {b"FCGI_MAX_CONNS": b"1", b"FCGI_MAX_REQS": b"1", b"FCGI_MPXS_CONNS": b"0"}


def test_a_kept_idle_connection_and_a_second_one(workdir: str, engine: str) -> None:
    """One worker, a connection kept open after its request, then a second connection: the
    native worker serves it at once; a flup worker only after the first one is closed."""
    with pool(workdir, engine) as path, fc.connect(path) as kept, fc.connect(path) as second:
        kept.sendall(fc.get(1, f"FIF={TABLES}&OBJ=Max-size"))
        assert fc.read_response(kept, 1).body == b"Max-size:3000 2000\r\n"
        second.sendall(fc.get(1, f"FIF={TABLES}&OBJ=Resolution-number"))
        if engine == "native":
            assert answered_within(second, 5)
        else:
            assert not answered_within(second, 1.5), "flup served a second connection while one was kept"
            kept.sendall(fc.get(2, f"FIF={TABLES}&OBJ=Max-size"))
            assert fc.read_response(kept, 2).status == 200, "the kept connection is still served"
            kept.close()
        assert fc.read_response(second, 1).body == b"Resolution-number:5\r\n"


def test_both_engines_give_the_same_answers(workdir: str) -> None:
    answers: dict[str, list[bytes]] = {}
    for engine in servers.ENGINES:
        with pool(workdir, engine) as path:
            got = []
            for query in QUERIES:
                with fc.connect(path) as sock:
                    sock.sendall(fc.get(1, query, keep=False))
                    response = fc.read_response(sock, 1)
                    assert (response.app_status, response.protocol_status) == (0, fc.REQUEST_COMPLETE)
                    got.append(response.stdout)
            answers[engine] = got
    for query, native, flup in zip(QUERIES, answers["native"], answers["flup"], strict=True):
        assert native == flup, query


@pytest.mark.parametrize("size", [MAX_POST_BODY, MAX_POST_BODY + 1])
def test_posted_form_limit_is_the_same_for_both(workdir: str, engine: str, size: int) -> None:
    form = helpers.padded_form(f"FIF={TABLES}&OBJ=Max-size&".encode(), size)
    params = {
        "REQUEST_METHOD": "POST",
        "QUERY_STRING": "",
        "REQUEST_URI": "/fcgi-bin/iipsrv.fcgi",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(size),
    }
    with pool(workdir, engine) as path, fc.connect(path) as sock:
        sock.sendall(fc.request(1, params, form))
        response = fc.read_response(sock, 1)
    if size <= MAX_POST_BODY:
        # The fillers are tokens without "=", which the IIP parser skips.
        assert (response.status, response.body) == (200, b"Max-size:3000 2000\r\n")
    else:
        assert response.status == 413


def test_request_abandoned_through_nginx(workdir: str, engine: str) -> None:
    """A client gives up while its request waits behind a slow one on the only worker: nginx
    closes that FastCGI connection (its way of aborting).  The native worker sees the close
    with the request and never runs it; flup reads the request from the closed connection and
    runs it all the same (as README says)."""
    slow = f"FIF={BIGGEST}&WID=3000&QLT=9&CVT=png"  # several seconds of zlib level 9
    abandoned = f"FIF={BIGGEST}&WID=2999&CVT=png"
    after = f"FIF={TABLES}&OBJ=Max-size"
    with servers.nginx_stack(workdir, workers=1, engine=engine) as stack:
        first = threading.Thread(target=lambda: stack.fresh_get(slow), daemon=True)
        first.start()
        servers.wait_busy_worker(stack.server)
        with servers.http_session() as session, pytest.raises(requests.ReadTimeout):
            session.get(stack.nginx.url(abandoned), timeout=(5, 0.5))
        first.join(timeout=25)
        assert not first.is_alive()
        assert stack.get(after).status_code == 200  # served after anything that was queued
        log = stack.server.log()
    assert "WID=3000&QLT=9" in log and "OBJ=Max-size" in log, log[-2000:]
    if engine == "native":
        assert "WID=2999" not in log, "the abandoned request was run"
    else:
        assert "WID=2999&CVT=png IIP -> 200" in log
