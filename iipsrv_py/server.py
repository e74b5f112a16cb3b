"""Front ends: the FastCGI pre-fork pool (native responder or flup), plain HTTP, debug stdin.

The FastCGI pool is a small supervisor and N forked workers sharing one listening socket:

* each worker runs the native responder (``fastcgi.py``: all its connections in one selector,
  kept-alive connections honoured) or, with ``--engine flup``, blocks in ``accept()`` and
  hands each connection to flup's FastCGI ``Connection``; both call the WSGI application;
* SIGTERM/SIGINT to the supervisor: workers are told to stop (an idle one exits at once, a
  busy one after its request), and any still alive after ``STOP_GRACE`` seconds is killed;
* SIGHUP: forwarded to every worker, which empties its caches before its next request;
* a worker that dies for any reason is replaced.

No protocol logic lives here.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import logging
import math
import os
import select
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn

from flup.server.fcgi_base import BaseFCGIServer, Connection

from . import SERVER_SOFTWARE, deadline, metrics
from .fastcgi import SHED_AFTER, Responder
from .warmup import WarmUp

log = logging.getLogger("iipsrv_py.server")

STOP_GRACE = 4.0  # seconds a busy worker gets to finish before it is killed
RESPAWN_PAUSE = 0.2  # seconds between respawns, so a crash loop cannot spin the CPU
PR_SET_PDEATHSIG = 1
POOL_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}  # what the supervisor handles

AppFactory = Callable[[], Any]


# -- sockets --------------------------------------------------------------------------------------


def parse_bind(text: str) -> tuple[int, Any]:
    """``/path.sock`` -> unix socket; ``host:port``, ``:port``, ``[::1]:port`` -> TCP."""
    if text.startswith(("/", "./")):
        return socket.AF_UNIX, text
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"--bind {text!r}: expected HOST:PORT, :PORT or /path/to/socket")
    host = host.strip("[]")
    if ":" in host:
        return socket.AF_INET6, (host, int(port_text))
    return socket.AF_INET, (host or "0.0.0.0", int(port_text))


def listen(text: str, backlog: int) -> socket.socket:
    family, address = parse_bind(text)
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_UNIX:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(address).st_mode):
                os.unlink(address)  # a stale socket from an earlier run
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(backlog)
    return sock


def inherited_socket() -> socket.socket | None:
    """The listening socket on fd 0 given by spawn-fcgi, mod_fcgid or lighttpd, if any."""
    try:
        sock = socket.socket(fileno=0)
    except OSError:
        return None
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return sock
    except OSError:
        pass
    sock.detach()
    return None


# -- one worker -----------------------------------------------------------------------------------


class _FastCGI(BaseFCGIServer):
    """flup's FastCGI/WSGI glue without flup's own process management."""

    def __init__(self, app: Any) -> None:
        super().__init__(app, multithreaded=False, multiprocess=True)
        # What a flup worker really does: one connection at a time (a kept one holds the worker
        # until the web server closes it), one request on it at a time.  Bytes keys: flup looks
        # FCGI_GET_VALUES names up as bytes (its own str keys never match).
        self.capability = {b"FCGI_MAX_CONNS": 1, b"FCGI_MAX_REQS": 1, b"FCGI_MPXS_CONNS": 0}

    def error(self, req: Any) -> None:
        # The application turns every exception into a response itself; if flup still
        # catches one (a broken connection mid-response), answer without leaking details.
        req.stdout.write(b"Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\ninternal error\n")


class Worker:
    """One pool process: the application behind the native responder (or flup's)."""

    def __init__(
        self, sock: socket.socket, app_factory: AppFactory, engine: str = "native", warm_up: WarmUp | None = None
    ) -> None:
        self.sock = sock
        if warm_up is not None:
            warm_up.in_worker()
        self.app = app_factory()
        self.engine = engine
        self.stopping = False
        self.responder = Responder(sock, self.app, shed_after=SHED_AFTER) if engine == "native" else None
        if warm_up is not None and self.responder is not None:
            warm_up.rehearse_responder(self.responder)
        self.flup_busy = False
        self.connection: Connection | None = None

    @property
    def busy(self) -> bool:
        return self.responder.busy if self.responder is not None else self.flup_busy

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            # A second SIGTERM (a process group's, then the supervisor's) changes nothing; it
            # must not raise again while this worker is already on its way out.
            return
        self.stopping = True
        if self.responder is not None:
            self.responder.stop()
        if not self.busy:
            raise SystemExit(0)  # interrupts select() or accept()
        if self.connection is not None:
            self.connection._keepGoing = False  # ends a kept-alive connection after this request

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        if self.busy:
            self.app.request_cache_clear()  # emptied before the next request, never under this one
        else:
            # Idle (in the responder's loop, outside the application): empty them now, so that
            # a worker no request reaches for a while gives its memory back at once too.
            self.app.clear_caches()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        try:
            if self.responder is not None:
                self.responder.serve()
            else:
                self._run_flup()
        except SystemExit:
            pass
        finally:
            with contextlib.suppress(Exception):
                metrics.flush()  # the counts of this worker's last second

    def _run_flup(self) -> None:
        fcgi = _FastCGI(self.app)
        self.sock.setblocking(True)
        while not self.stopping:
            try:
                conn, addr = self.sock.accept()
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EINTR):
                    continue
                raise
            self.flup_busy = True
            try:
                self.connection = Connection(conn, addr, fcgi, None)
                self.connection.run()
            except OSError as exc:
                log.warning("connection failed: %s", exc)
            finally:
                self.connection = None
                self.flup_busy = False
                with contextlib.suppress(OSError):
                    conn.close()


# -- the pool -------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: have the kernel send SIGTERM to this worker if the supervisor dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Pool:
    def __init__(
        self,
        sock: socket.socket,
        workers: int,
        app_factory: AppFactory,
        engine: str = "native",
        warm_up: WarmUp | None = None,
        request_timeout: float = 0.0,
    ) -> None:
        self.sock = sock
        self.engine = engine
        self.warm_up = warm_up
        self.size = max(1, workers)
        self.app_factory = app_factory
        self.request_timeout = request_timeout
        # Each worker's slot in the board where it publishes when its request started.
        self.board = deadline.Board(self.size)
        self.slots: dict[int, int] = {}  # pid -> slot
        self.children: set[int] = set()
        self.stopping = False
        self.hup_pending = False
        self.killed: set[int] = set()  # workers this supervisor killed for running too long
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)  # the loop also wakes on its own, to look for stuck workers

    def _spawn(self) -> None:
        # The supervisor's signals are blocked across fork(): otherwise a signal reaching the
        # new child before it has reset its handlers runs the supervisor's handler in the child
        # (on its copy of the pool), and a SIGTERM is lost, leaving a worker that ignores it.
        slot = min(set(range(self.size)) - set(self.slots.values()))
        self.board.clear(slot)
        signal.pthread_sigmask(signal.SIG_BLOCK, POOL_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self.board.attach(slot)
                self._child()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, POOL_SIGNALS)
        self.children.add(pid)
        self.slots[pid] = slot

    def _child(self) -> NoReturn:
        code = 0
        try:
            os.close(self._wake_r)
            os.close(self._wake_w)
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            # A starting worker's caches are empty, so a SIGHUP has nothing to clear yet; its
            # default action would kill the worker.  Worker.run installs the real handler.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, POOL_SIGNALS)  # a pending SIGTERM ends us here
            _die_with_parent()
            Worker(self.sock, self.app_factory, self.engine, self.warm_up).run()
        except BaseException:
            log.exception("worker %d failed", os.getpid())
            code = 1
        finally:
            # Nothing may interrupt the way out: an exception escaping from here would leave
            # this child running the supervisor's loop.
            signal.pthread_sigmask(signal.SIG_BLOCK, POOL_SIGNALS)
            try:
                logging.shutdown()
            finally:
                os._exit(code)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags here: a handler runs wherever the loop happens to be, logging included,
        # and logging from it re-enters the log handler (a burst of SIGHUPs then nests
        # handlers until the supervisor spins for seconds).  The loop, woken through the
        # wakeup fd, does the work.
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
        elif signum == signal.SIGHUP:
            self.hup_pending = True

    def _forward_hup(self) -> None:
        if not self.hup_pending:
            return
        self.hup_pending = False
        log.warning("SIGHUP: clearing the caches of %d workers", len(self.children))
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    def _reap(self) -> list[int]:
        gone = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in self.children:
                self.children.discard(pid)
                self.slots.pop(pid, None)
                gone.append(pid)
                if not self.stopping:
                    log.warning("worker %d exited (status %d); starting a new one", pid, status)
                    if pid not in self.killed:
                        metrics.count_now("iipsrv_worker_restarts", ("exited",))
                self.killed.discard(pid)
        return gone

    def run(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        signal.set_wakeup_fd(self._wake_w)
        log.warning("FastCGI pool of %d workers started (pid %d)", self.size, os.getpid())
        try:
            while not self.stopping:
                self._reap()
                while len(self.children) < self.size and not self.stopping:
                    self._spawn()
                    if len(self.children) > 1:
                        time.sleep(0)  # let the kernel schedule the new worker
                with contextlib.suppress(InterruptedError):
                    select.select([self._wake_r], [], [], 1.0)
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 512)
                self._forward_hup()
                self._kill_stuck()
                if self._reap() and not self.stopping:
                    time.sleep(RESPAWN_PAUSE)
        finally:
            self._stop_children()

    def _kill_stuck(self) -> None:
        """SIGKILL a worker whose request has run past the hard limit (see deadline.py); the
        loop starts another.  Its own request fails; nothing else is lost."""
        if self.request_timeout <= 0:
            return
        limit = deadline.hard_limit(self.request_timeout)
        now = time.monotonic()
        for pid, slot in list(self.slots.items()):
            running = self.board.running_for(slot, now)
            if running > limit and pid not in self.killed:
                log.error(
                    "worker %d has been in one request for %.1fs (REQUEST_TIMEOUT=%gs); killing it",
                    pid,
                    running,
                    self.request_timeout,
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self.killed.add(pid)
                metrics.count_now("iipsrv_worker_restarts", ("timeout",))

    def _stop_children(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for pid in list(self.children):
            log.warning("worker %d did not stop in %.0fs; killing it", pid, STOP_GRACE)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while self.children:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.children.discard(pid)
        log.warning("FastCGI pool stopped")


def serve_fastcgi(
    sock: socket.socket,
    workers: int,
    app_factory: AppFactory,
    engine: str = "native",
    warm_up: WarmUp | None = None,
    request_timeout: float = 0.0,
    remove_path: bool = True,
) -> None:
    """Serve FastCGI on ``sock`` until stopped.  ``remove_path``: unlink a unix socket's path on
    exit; not for an inherited socket, whose path belongs to whoever made it (a systemd socket
    unit keeps listening on it across restarts of the service)."""
    unix_path = sock.getsockname() if sock.family == socket.AF_UNIX and remove_path else None
    if warm_up is not None:
        warm_up.before_fork()
    try:
        Pool(sock, workers, app_factory, engine, warm_up, request_timeout).run()
    finally:
        if warm_up is not None:
            warm_up.clean_up()
        sock.close()
        if isinstance(unix_path, str) and unix_path:
            with contextlib.suppress(OSError):
                os.unlink(unix_path)


# -- plain HTTP -----------------------------------------------------------------------------------


def _without_server_header(app: Any) -> Any:
    """``app`` less its own Server header: gunicorn writes one on every response itself."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [(n, v) for n, v in headers if n.lower() != "server"], exc_info)

        return app(environ, start)

    return wrapped


def serve_http(bind: str, workers: int, app_factory: AppFactory, verbosity: int, request_timeout: float = 0.0) -> None:
    """The same application over HTTP, served by gunicorn's pre-fork sync workers."""
    import gunicorn.http.wsgi
    from gunicorn.app.base import BaseApplication

    # gunicorn puts "Server: gunicorn" before the application's headers, so the application's
    # own would come second.  Its Response takes the value from this module global; set there
    # (before the workers fork), every response gunicorn writes, its own error pages included,
    # names this server once.
    gunicorn.http.wsgi.SERVER = SERVER_SOFTWARE

    options = {
        "bind": bind,
        "workers": max(1, workers),
        "worker_class": "sync",
        # gunicorn's own watchdog replaces a worker stuck in a request, as the FastCGI pool's
        # supervisor does (0: never).
        "timeout": math.ceil(deadline.hard_limit(request_timeout)) if request_timeout > 0 else 0,
        "graceful_timeout": int(STOP_GRACE),
        "loglevel": "warning" if verbosity <= 1 else "info",
        "accesslog": None,
        "proc_name": "iipsrv-py",
    }

    class _Gunicorn(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)
            if "control_socket_disable" in self.cfg.settings:
                # gunicorn >= 24 opens a control socket in $HOME by default; nothing uses it here.
                self.cfg.set("control_socket_disable", True)

        def load(self) -> Any:
            return _without_server_header(app_factory())

    _Gunicorn().run()


# -- debug mode -----------------------------------------------------------------------------------


def run_debug(app: Any, lines: io.TextIOBase, output_path: str = "iipsrv.debug") -> int:
    """One request per input line; each response body replaces ``output_path``."""
    failures = 0
    for raw in lines:
        request = raw.strip()
        if not request:
            continue
        captured: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None, captured: dict[str, Any] = captured
        ) -> None:
            captured["status"] = status

        environ = {
            "REQUEST_METHOD": "GET",
            "QUERY_STRING": request,
            "REQUEST_URI": "/?" + request,
            "PATH_INFO": "/",
            "SCRIPT_NAME": "",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "HTTP_HOST": "localhost",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
        }
        body = b"".join(app(environ, start_response))
        with open(output_path, "wb") as out:
            out.write(body)
        status = captured.get("status", "500")
        if not status.startswith(("2", "3")):
            failures += 1
        log.warning("debug: %s -> %s, %d bytes written to %s", request, status, len(body), output_path)
    return failures
