"""The native responder under what a web server (or a broken peer) can do to it: aborts,
slow readers, oversize and malformed streams, many kept connections, the connection cap.

Real unix sockets; the responders run in threads; requests are written and responses read with
flup's record codec (tests/fcgi_client.py).  Every wait is bounded."""

from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from iipsrv_py import app as application
from iipsrv_py import fastcgi
from iipsrv_py.fastcgi import Responder
from iipsrv_py.fastcgi_records import MAX_CONTENT
from iipsrv_py.settings import from_environ
from tests import fcgi_client as fc

BIG = bytes(range(256)) * (4 * 4096)  # 4 MiB: far more than a socket buffer holds


class Recorder:
    """A WSGI application that remembers what it ran; ``slow=S`` sleeps S seconds, ``big``
    answers BIG, anything else echoes the query string."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.running = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        query = environ["QUERY_STRING"]
        self.calls.append(query)
        self.running.set()
        if query.startswith("slow="):
            time.sleep(float(query[5:]))
        body = BIG if query == "big" else f"{query} {len(environ['wsgi.input'].read())}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]


@pytest.fixture
def sock_path() -> Iterator[str]:
    # A short directory of its own: unix socket paths are limited to 107 bytes, which pytest's
    # tmp_path (named after the test) can exceed.
    with tempfile.TemporaryDirectory(prefix="fcgi-") as directory:
        yield os.path.join(directory, "s")


# -- aborts ----------------------------------------------------------------------------------------


def test_abort_of_a_request_waiting_behind_a_busy_worker(sock_path: str) -> None:
    app = Recorder()
    with fc.responder(sock_path, app), fc.connect(sock_path) as busy, fc.connect(sock_path) as waiting:
        busy.sendall(fc.get(1, "slow=0.8"))
        assert app.running.wait(5)
        waiting.sendall(fc.get(7, "never"))
        time.sleep(0.1)
        waiting.sendall(fc.record(fc.ABORT, 7))
        aborted = fc.read_response(waiting, 7)
        assert aborted.kinds == [fc.END] and aborted.protocol_status == fc.REQUEST_COMPLETE
        assert fc.read_response(busy, 1).body == b"slow=0.8 0"
        # The connection is still usable, and the aborted request never reached the application.
        waiting.sendall(fc.get(8, "after"))
        assert fc.read_response(waiting, 8).body == b"after 0"
        assert app.calls == ["slow=0.8", "after"]


def test_abort_in_the_same_write_as_the_last_record(sock_path: str) -> None:
    app = Recorder()
    with fc.responder(sock_path, app), fc.connect(sock_path) as sock:
        sock.sendall(fc.get(3, "cancelled") + fc.record(fc.ABORT, 3))
        assert fc.read_response(sock, 3).kinds == [fc.END]
        sock.sendall(fc.get(4, "next"))
        assert fc.read_response(sock, 4).body == b"next 0"
        assert app.calls == ["next"]


def test_abort_of_a_completed_request_is_ignored(sock_path: str) -> None:
    app = Recorder()
    with fc.responder(sock_path, app), fc.connect(sock_path) as sock:
        sock.sendall(fc.get(5, "done"))
        assert fc.read_response(sock, 5).body == b"done 0"
        sock.sendall(fc.record(fc.ABORT, 5))
        # The next record on the connection is the answer to this, not a second END_REQUEST.
        assert fc.get_values(sock, ["FCGI_MPXS_CONNS"]) == {b"FCGI_MPXS_CONNS": b"0"}


def test_closed_connection_drops_its_waiting_request(sock_path: str) -> None:
    app = Recorder()
    with fc.responder(sock_path, app), fc.connect(sock_path) as busy:
        busy.sendall(fc.get(1, "slow=0.6"))
        assert app.running.wait(5)
        with fc.connect(sock_path) as gone:
            gone.sendall(fc.get(1, "gone"))
            time.sleep(0.1)
        assert fc.read_response(busy, 1).status == 200
        busy.sendall(fc.get(2, "sync"))
        fc.read_response(busy, 2)
        assert app.calls == ["slow=0.6", "sync"]


# -- output backpressure ---------------------------------------------------------------------------


def test_slow_reader_does_not_hold_up_other_connections(sock_path: str) -> None:
    app = Recorder()
    with fc.responder(sock_path, app) as (responder,), fc.connect(sock_path) as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # Three pipelined requests for 4 MiB each; the client reads nothing for now.
        slow.sendall(fc.get(1, "big") + fc.get(2, "big") + fc.get(3, "big"))
        deadline = time.monotonic() + 5
        while "big" not in app.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        with fc.connect(sock_path) as other:
            for rid in range(1, 21):
                started = time.monotonic()
                other.sendall(fc.get(rid, f"quick{rid}"))
                assert fc.read_response(other, rid).body == f"quick{rid} 0".encode()
                assert time.monotonic() - started < 1.0
        # While the first answer is still on its way, the next requests were not even read:
        # one response's worth of output is all the worker holds for this connection.  (Looked
        # at once the worker has closed the other connection and has nothing left to do.)
        deadline = time.monotonic() + 5
        while len(responder.connections) != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.calls.count("big") == 1
        held = [conn for conn in list(responder.connections.values()) if conn.out]
        assert len(held) == 1
        assert sum(len(view) for view in held[0].out) <= len(BIG) + 1024
        # Read slowly, a few bytes at a time at first, then the rest: all three arrive intact.
        slow.settimeout(10)
        first = b"".join(slow.recv(7) for _ in range(50))
        assert len(first) > 0
        pending = first

        class Replay:
            """flup's reader over the bytes already taken, then the socket."""

            def recv(self, n: int) -> bytes:
                nonlocal pending
                if pending:
                    chunk, pending = pending[:n], pending[n:]
                    return chunk
                return slow.recv(n)

            def fileno(self) -> int:
                return slow.fileno()

        replay: Any = Replay()
        for rid in (1, 2, 3):
            response = fc.read_response(replay, rid)
            assert response.body == BIG
        assert app.calls.count("big") == 3


class _TrickleSocket:
    """A socket stand-in that takes at most 1000 bytes a call and remembers what it was given."""

    def __init__(self) -> None:
        self.given: list[Any] = []
        self.received = bytearray()

    def send(self, data: Any) -> int:
        self.given.append(data)
        taken = bytes(data[:1000])
        self.received += taken
        return len(taken)

    def fileno(self) -> int:
        return 99


def test_partial_sends_advance_a_view_and_never_copy() -> None:
    responder = Responder(socket.socket(socket.AF_UNIX), Recorder())
    conn = fastcgi._Connection(_TrickleSocket())  # type: ignore[arg-type]
    responder._watch = lambda c, e: None  # type: ignore[method-assign]  # no selector here
    data = os.urandom(300_000)
    responder._queue(conn, data)
    while conn.out:
        responder._flush(conn)
    sock = conn.sock
    assert bytes(sock.received) == data
    assert len(sock.given) == 300
    # After the first send, every call got a memoryview of the very same bytes object.
    assert all(isinstance(view, memoryview) and view.obj is data for view in sock.given[1:])


# -- the request body ----------------------------------------------------------------------------


def test_body_limit_is_the_applications(sock_path: str) -> None:
    assert Responder(socket.socket(socket.AF_UNIX), Recorder()).body_limit == application.MAX_POST_BODY


@pytest.mark.parametrize("size", [application.MAX_POST_BODY, application.MAX_POST_BODY + 1, 5 * MAX_CONTENT])
def test_body_over_the_limit_is_not_kept(sock_path: str, size: int) -> None:
    with fc.responder(sock_path, fc.echo_app), fc.connect(sock_path) as sock:
        body = os.urandom(size)
        params = {"REQUEST_METHOD": "POST", "QUERY_STRING": "", "CONTENT_LENGTH": str(size)}
        sock.sendall(fc.request(1, params, body))
        echoed = json.loads(fc.read_response(sock, 1).body)
        if size <= application.MAX_POST_BODY:
            assert bytes.fromhex(echoed["body"]) == body
            assert echoed["CONTENT_LENGTH"] == str(size)
        else:
            assert echoed["body"] == ""
            assert int(echoed["CONTENT_LENGTH"]) >= size
        sock.sendall(fc.get(2, "next"))
        assert fc.read_response(sock, 2).status == 200, "the connection stays in step"


def test_body_longer_than_declared_and_over_the_limit(sock_path: str) -> None:
    """A CONTENT_LENGTH that understates the body does not get the body past the limit."""
    with fc.responder(sock_path, fc.echo_app), fc.connect(sock_path) as sock:
        body = b"x" * (application.MAX_POST_BODY + 10)
        sock.sendall(fc.request(1, {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "5"}, body))
        echoed = json.loads(fc.read_response(sock, 1).body)
        assert echoed["body"] == "" and int(echoed["CONTENT_LENGTH"]) > application.MAX_POST_BODY


def test_posted_form_over_the_limit_is_413_from_the_application(sock_path: str, tmp_path) -> None:
    settings, _ = from_environ({"FILESYSTEM_PREFIX": str(tmp_path) + "/", "CORS": "*"})
    form = b"FIF=a.tif&OBJ=Max-size&" + b"x" * application.MAX_POST_BODY
    params = {
        "REQUEST_METHOD": "POST",
        "QUERY_STRING": "",
        "REQUEST_URI": "/fcgi-bin/iipsrv.fcgi",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(form)),
    }
    with fc.responder(sock_path, application.Application(settings)), fc.connect(sock_path) as sock:
        sock.sendall(fc.request(1, params, form))
        response = fc.read_response(sock, 1)
        assert response.status == 413
        assert response.headers["access-control-allow-origin"] == "*", "the application's own error headers"
        assert int(response.headers["content-length"]) == len(response.body)


# -- malformed streams --------------------------------------------------------------------------------


def expect_error_then_close(sock: socket.socket, request_id: int, status: int) -> None:
    response = fc.read_response(sock, request_id)
    assert response.status == status
    assert response.protocol_status == fc.REQUEST_COMPLETE
    assert fc.closed_by_peer(sock)


def stream_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "FastCGI stream error" in r.getMessage()]


def test_oversize_params_are_431_then_close(sock_path: str, caplog: pytest.LogCaptureFixture) -> None:
    app = Recorder()
    caplog.set_level(logging.WARNING, "iipsrv_py.fastcgi")
    with fc.responder(sock_path, app, params_limit=100_000), fc.connect(sock_path) as sock:
        huge = fc.encode_params({"HTTP_X_BIG": "y" * 150_000})
        sock.sendall(
            fc.begin(2) + b"".join(fc.record(fc.PARAMS, 2, huge[i : i + 60_000]) for i in range(0, len(huge), 60_000))
        )
        expect_error_then_close(sock, 2, 431)
    assert app.calls == []
    assert len(stream_errors(caplog)) == 1


def test_truncated_pairs_are_400_then_close(sock_path: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "iipsrv_py.fastcgi")
    with fc.responder(sock_path, Recorder()), fc.connect(sock_path) as sock:
        pairs = fc.encode_params({"QUERY_STRING": "abc"})[:-2]  # the value is two bytes short
        sock.sendall(fc.begin(3) + fc.record(fc.PARAMS, 3, pairs) + fc.record(fc.PARAMS, 3))
        expect_error_then_close(sock, 3, 400)
    assert len(stream_errors(caplog)) == 1


def test_bad_version_in_a_request_is_400_then_close(sock_path: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "iipsrv_py.fastcgi")
    with fc.responder(sock_path, Recorder()), fc.connect(sock_path) as sock:
        sock.sendall(fc.begin(4) + b"\x07" * 16)
        expect_error_then_close(sock, 4, 400)
    assert len(stream_errors(caplog)) == 1


def test_garbage_on_an_idle_connection_closes_only_it(sock_path: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "iipsrv_py.fastcgi")
    with fc.responder(sock_path, Recorder()):
        with fc.connect(sock_path) as bad:
            bad.sendall(b"\x07" * 64)
            assert fc.closed_by_peer(bad)
        with fc.connect(sock_path) as good:
            good.sendall(fc.get(1, "still"))
            assert fc.read_response(good, 1).body == b"still 0"
    assert len(stream_errors(caplog)) == 1


def test_complete_request_before_garbage_is_still_answered(sock_path: str) -> None:
    with fc.responder(sock_path, Recorder()), fc.connect(sock_path) as sock:
        sock.sendall(fc.get(6, "fine") + b"\x09" * 8)
        assert fc.read_response(sock, 6).body == b"fine 0"
        assert fc.closed_by_peer(sock)


def test_second_request_while_the_first_arrives_is_refused(sock_path: str) -> None:
    """FCGI_MPXS_CONNS is 0: a BEGIN_REQUEST for another request while the first one is still
    arriving gets FCGI_CANT_MPX_CONN; the first one is served."""
    app = Recorder()
    with fc.responder(sock_path, app), fc.connect(sock_path) as sock:
        sock.sendall(fc.begin(1) + fc.begin(2))
        refused = fc.read_response(sock, 2)
        assert refused.kinds == [fc.END] and refused.protocol_status == fc.CANT_MPX_CONN
        sock.sendall(fc.stream(fc.PARAMS, 1, fc.encode_params(fc.get_params("one"))) + fc.stream(fc.STDIN, 1, b""))
        assert fc.read_response(sock, 1).body == b"one 0"
        assert app.calls == ["one"]


# -- WSGI -----------------------------------------------------------------------------------------------


def test_write_callable_and_exc_info(sock_path: str) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        write = start_response("500 Oops", [("X-First", "1")])
        try:
            raise RuntimeError("changed my mind")
        except RuntimeError:
            write = start_response("201 Created", [("X-Second", "2")], sys.exc_info())
        write(b"written ")
        write(bytearray(b"then "))
        return [b"returned"]

    with fc.responder(sock_path, app), fc.connect(sock_path) as sock:
        sock.sendall(fc.get(1, ""))
        response = fc.read_response(sock, 1)
        assert response.status == 201
        assert "x-first" not in response.headers and response.headers["x-second"] == "2"
        assert response.body == b"written then returned"


def test_start_response_twice_without_exc_info_is_a_500(sock_path: str) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b"x"]

    with fc.responder(sock_path, app), fc.connect(sock_path) as sock:
        sock.sendall(fc.get(1, ""))
        response = fc.read_response(sock, 1)
        assert response.status == 500 and response.body == b"internal error\n"


# -- many connections, and the cap ----------------------------------------------------------------


def test_two_hundred_kept_connections_on_one_worker(sock_path: str) -> None:
    app = Recorder()
    with fc.responder(sock_path, app) as (responder,):
        socks = []
        try:
            for _ in range(200):
                sock = socket.socket(socket.AF_UNIX)
                sock.settimeout(10)
                sock.connect(sock_path)
                socks.append(sock)
            started = time.monotonic()
            for round_ in range(4):
                for index, sock in enumerate(socks):
                    sock.sendall(fc.get(round_ + 1, f"c{index}r{round_}"))
                for index, sock in enumerate(socks):
                    response = fc.read_response(sock, round_ + 1)
                    assert response.body == f"c{index}r{round_} 0".encode()
            assert time.monotonic() - started < 30
            assert len(app.calls) == 800
            assert len(responder.connections) == 200, "every connection kept"
        finally:
            for sock in socks:
                sock.close()


def test_get_values_are_consistent_and_the_cap_is_kept(sock_path: str) -> None:
    app = Recorder()
    with (
        fc.responder(sock_path, app, max_conns=3) as (responder,),
        fc.connect(sock_path) as a,
        fc.connect(sock_path) as b,
        fc.connect(sock_path) as c,
    ):
        values = fc.get_values(a, ["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"])
        assert values == {b"FCGI_MAX_CONNS": b"3", b"FCGI_MAX_REQS": b"3", b"FCGI_MPXS_CONNS": b"0"}
        for rid, sock in enumerate((b, c), start=1):
            sock.sendall(fc.get(rid, "x"))
            fc.read_response(sock, rid)
        with fc.connect(sock_path) as d:  # connects (the backlog) but is not accepted
            d.sendall(fc.get(1, "fourth"))
            sel = selectors.DefaultSelector()
            sel.register(d, selectors.EVENT_READ)
            assert sel.select(timeout=0.5) == [], "a fourth connection was served past FCGI_MAX_CONNS"
            assert len(responder.connections) == 3
            c.close()
            assert fc.read_response(d, 1).body == b"fourth 0"
            sel.close()


def test_a_worker_at_its_cap_leaves_new_connections_to_the_others(sock_path: str) -> None:
    app = Recorder()
    with fc.responder(sock_path, app, workers=2, max_conns=2) as responders:
        socks = []
        try:
            for rid in range(1, 5):  # four connections: two per worker at most
                sock = socket.socket(socket.AF_UNIX)
                sock.settimeout(5)
                sock.connect(sock_path)
                socks.append(sock)
                sock.sendall(fc.get(rid, f"n{rid}"))
                assert fc.read_response(sock, rid).body == f"n{rid} 0".encode()
            assert sorted(len(r.connections) for r in responders) == [2, 2]
        finally:
            for sock in socks:
                sock.close()


# -- a long request and the worker's other kept connections ----------------------------------------


def test_a_long_request_gives_up_the_workers_idle_kept_connections(sock_path: str) -> None:
    """nginx sends a request to any idle connection of its cache; on a busy worker it would wait
    for the whole rendering.  After ``shed_after`` the worker closes its idle kept connections,
    so nginx drops them (and retries a request it had just sent on one elsewhere)."""
    app = Recorder()
    with (
        fc.responder(sock_path, app, shed_after=0.05),
        fc.connect(sock_path) as busy,
        fc.connect(sock_path) as idle,
        fc.connect(sock_path) as late,
    ):
        for request_id, sock in enumerate((idle, late), start=1):  # kept, accepted, idle
            sock.sendall(fc.get(request_id, "warm"))
            assert fc.read_response(sock, request_id).status == 200
        app.running.clear()
        busy.sendall(fc.get(9, "slow=1.0"))
        assert app.running.wait(5)
        started = time.monotonic()
        late.sendall(fc.get(3, "sent-to-a-busy-worker"))
        assert fc.closed_by_peer(idle, timeout=0.5)
        assert fc.closed_by_peer(late, timeout=0.5)
        assert time.monotonic() - started < 0.5  # long before the rendering ends
        assert fc.read_response(busy, 9).body == b"slow=1.0 0"  # the long request is answered
        # The request sent on a shed connection never ran: the web server sends it again.
        assert app.calls == ["warm", "warm", "slow=1.0"]


def test_quick_requests_keep_their_connections(sock_path: str) -> None:
    app = Recorder()
    with fc.responder(sock_path, app, shed_after=0.05), fc.connect(sock_path) as one, fc.connect(sock_path) as two:
        for i in range(20):
            for sock in (one, two):
                sock.sendall(fc.get(i + 1, "slow=0.01"))
                assert fc.read_response(sock, i + 1).status == 200
        assert not fc.closed_by_peer(one, timeout=0.1) and not fc.closed_by_peer(two, timeout=0.1)


def test_a_post_waiting_behind_a_long_request_is_not_given_up(sock_path: str) -> None:
    """nginx does not send a POST again on another connection: it waits for its turn."""
    app = Recorder()
    with fc.responder(sock_path, app, shed_after=0.05), fc.connect(sock_path) as busy, fc.connect(sock_path) as post:
        post.sendall(fc.get(1, "warm"))
        fc.read_response(post, 1)
        app.running.clear()
        busy.sendall(fc.get(2, "slow=0.5"))
        assert app.running.wait(5)
        time.sleep(0.01)
        post.sendall(fc.request(3, fc.get_params("posted", REQUEST_METHOD="POST"), b""))
        assert fc.read_response(post, 3).body == b"posted 0"
        assert fc.read_response(busy, 2).status == 200


def test_a_new_connection_is_taken_even_while_kept_ones_keep_the_worker_busy(sock_path: str) -> None:
    """Two kept connections that always have the next request waiting keep the worker's queue
    full; a new connection (nginx sending a request again after a connection was given up)
    must still be taken within milliseconds, not when that load ends."""
    app = Recorder()
    stop = threading.Event()

    def load(sock: socket.socket) -> None:
        request_id = 1
        while not stop.is_set():
            sock.sendall(fc.get(request_id, "slow=0.005"))
            fc.read_response(sock, request_id)
            request_id += 1

    with fc.responder(sock_path, app), fc.connect(sock_path) as one, fc.connect(sock_path) as two:
        loaders = [threading.Thread(target=load, args=(sock,), daemon=True) for sock in (one, two)]
        for thread in loaders:
            thread.start()
        try:
            time.sleep(0.2)
            started = time.monotonic()
            with fc.connect(sock_path) as new:
                new.sendall(fc.get(1, "new"))
                assert fc.read_response(new, 1).body == b"new 0"
            waited = time.monotonic() - started
        finally:
            stop.set()
            for thread in loaders:
                thread.join(timeout=5)
    assert waited < 0.3, waited


def test_a_connection_that_answered_nothing_yet_is_not_given_up(sock_path: str) -> None:
    """nginx only sends a request again when it failed on a connection from its cache; a
    request lost on a new connection would be a 502, so such a connection waits."""
    app = Recorder()
    with fc.responder(sock_path, app, shed_after=0.05), fc.connect(sock_path) as busy, fc.connect(sock_path) as fresh:
        busy.sendall(fc.get(1, "warm"))
        fc.read_response(busy, 1)  # both connections accepted; only busy has answered
        app.running.clear()
        busy.sendall(fc.get(2, "slow=0.6"))
        assert app.running.wait(5)
        fresh.sendall(fc.get(7, "first"))
        assert not fc.closed_by_peer(fresh, timeout=0.3)
        assert fc.read_response(busy, 2).status == 200
        fresh.settimeout(5)
        assert fc.read_response(fresh, 7).body == b"first 0"
