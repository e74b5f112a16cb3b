"""Real processes for the integration tests: iipsrv-py, a private nginx and spawn-fcgi.

Every process is started in a session of its own, so that stopping it can signal its whole
process group (the FastCGI supervisor and the workers it forked, nginx and its workers) and
then check that not one member is left.  Everything listens on 127.0.0.1 or on a unix socket
in a private temporary directory; nothing here touches the system's nginx configuration.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests import helpers

IIPSRV = os.path.join(sys.prefix, "bin", "iipsrv-py")
NGINX_SNIPPET = os.path.join(helpers.ROOT, "conf", "nginx", "iipsrv_py.conf")
NGINX_UPSTREAM = os.path.join(helpers.ROOT, "conf", "nginx", "iipsrv_py-upstream.conf")
FCGI_PATH = "/fcgi-bin/iipsrv.fcgi"

# The FastCGI engines of the pool (``--engine``); every nginx test runs under each.
ENGINES = ("native", "flup")

START_TIMEOUT = 20.0  # seconds for a process to accept connections (imports numpy, pyvips...)
STOP_TIMEOUT = 5.0  # seconds for a process group to disappear after SIGTERM
HTTP_TIMEOUT = (5.0, 20.0)  # connect, read


# -- small utilities ------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def short_tempdir() -> Iterator[str]:
    """A private directory with a short path: unix socket paths are limited to 107 bytes,
    which pytest's tmp_path (named after the test) can exceed."""
    path = tempfile.mkdtemp(prefix="iip-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """The first true value of ``predicate()``; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def accepts(address: tuple[str, int] | str) -> bool:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(address)
        except OSError:
            return False
        return True


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, ppid, pgrp)`` of a process from /proc, or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ")".
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def running(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie is dead: it only waits to be reaped)."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def children(pid: int) -> list[int]:
    """Live child processes of ``pid``."""
    found = []
    for candidate in _all_pids():
        stat = _proc_stat(candidate)
        if stat is not None and stat[1] == pid and stat[0] not in ("Z", "X"):
            found.append(candidate)
    return sorted(found)


def zombie_children(pid: int) -> list[int]:
    """Children of ``pid`` that have exited and were never reaped."""
    return sorted(p for p in _all_pids() if (stat := _proc_stat(p)) is not None and stat[1] == pid and stat[0] == "Z")


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` (VmRSS) in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid``."""
    found = []
    for candidate in _all_pids():
        stat = _proc_stat(candidate)
        if stat is not None and stat[2] == pgid and stat[0] not in ("Z", "X"):
            found.append(candidate)
    return found


def http_session() -> requests.Session:
    """A client that talks straight to 127.0.0.1, whatever proxy the environment names."""
    session = requests.Session()
    session.trust_env = False
    return session


# -- managed processes -----------------------------------------------------------------------------


class Managed:
    """A process started in its own session; ``stop()`` leaves nothing of its group behind."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        workdir: str,
        env: dict[str, str] | None = None,
        **popen: Any,
    ) -> None:
        self.name = name
        self.argv = argv
        self.output_path = os.path.join(workdir, f"{name}.out")
        with open(self.output_path, "wb") as output:
            self.popen = subprocess.Popen(
                argv,
                env=env,
                cwd=workdir,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **popen,
            )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        with open(self.output_path, errors="replace") as f:
            return f.read()

    def wait_accepting(self, address: tuple[str, int] | str, timeout: float = START_TIMEOUT) -> None:
        def ready() -> bool:
            if not self.alive():
                raise AssertionError(
                    f"{self.name} exited with status {self.popen.returncode} before accepting connections:\n"
                    + self.describe()
                )
            return accepts(address)

        wait_until(ready, timeout, f"{self.name} to accept connections on {address}")

    def describe(self) -> str:
        return f"$ {' '.join(self.argv)}\n{self.output()[-4000:]}"

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        """SIGTERM the whole group, SIGKILL what is left after STOP_TIMEOUT, reap, verify."""
        pgid = self.pid  # start_new_session: the group is named after its leader
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=STOP_TIMEOUT)
            wait_until(lambda: not group_members(pgid), STOP_TIMEOUT, f"the processes of {self.name} to exit")
        except (subprocess.TimeoutExpired, AssertionError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.popen.wait(timeout=STOP_TIMEOUT)
        wait_until(lambda: not group_members(pgid), STOP_TIMEOUT, f"every process of {self.name} to be gone")


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment: the developer's own iipsrv variables must not change a test."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if name in os.environ}
    env.update(extra)
    return env


class IIPServer(Managed):
    """``iipsrv-py`` serving FastCGI, with its log in a file the tests read."""

    def __init__(
        self,
        workdir: str,
        argv: list[str],
        address: tuple[str, int] | str,
        env: dict[str, str] | None = None,
        name: str = "iipsrv-py",
        **popen: Any,
    ) -> None:
        if not os.access(IIPSRV, os.X_OK):
            pytest.fail(f"{IIPSRV} is missing: install the project with `pip install -e .[test]`")
        self.address = address
        self.log_path = os.path.join(workdir, f"{name}.log")
        variables = {
            "FILESYSTEM_PREFIX": helpers.fixture_dir() + "/",
            "VERBOSITY": "2",
            "LOGFILE": self.log_path,
            **(env or {}),
        }
        super().__init__(name, argv, workdir, base_env(**variables), **popen)

    @property
    def upstream(self) -> str:
        """The address as nginx's fastcgi_pass names it."""
        if isinstance(self.address, str):
            return f"unix:{self.address}"
        return f"{self.address[0]}:{self.address[1]}"

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def workers(self) -> list[int]:
        return children(self.pid)

    def wait_workers(self, count: int, timeout: float = START_TIMEOUT) -> list[int]:
        return wait_until(
            lambda: pids if len(pids := self.workers()) == count else None,
            timeout,
            f"{count} workers of {self.name}",
        )

    def describe(self) -> str:
        return super().describe() + "\n--- log ---\n" + self.log()[-4000:]


def start_iipsrv(
    workdir: str,
    bind: tuple[str, int] | str,
    workers: int = 2,
    env: dict[str, str] | None = None,
    engine: str = "native",
    wrapper: list[str] | None = None,
) -> IIPServer:
    """``iipsrv-py --bind ADDR --workers N --engine E``, accepting connections with all its workers.
    ``wrapper``: a program (with its arguments) that execs the server, such as setpriv."""
    text = bind if isinstance(bind, str) else f"{bind[0]}:{bind[1]}"
    argv = [*(wrapper or []), IIPSRV, "--bind", text, "--workers", str(workers), "--engine", engine]
    server = IIPServer(workdir, argv, bind, env)
    try:
        server.wait_accepting(bind)
        server.wait_workers(workers)
    except BaseException:
        server.stop()
        raise
    return server


def start_spawn_fcgi(
    workdir: str, bind: tuple[str, int] | str, env: dict[str, str] | None = None, args: list[str] | None = None
) -> IIPServer:
    """spawn-fcgi creates the listening socket and execs iipsrv-py with it as fd 0 (``-n``: no
    fork, so the process we started is the server itself)."""
    spawn = helpers.require_binary("spawn-fcgi")
    where = ["-s", bind] if isinstance(bind, str) else ["-a", bind[0], "-p", str(bind[1])]
    argv = [spawn, "-n", *where, "--", IIPSRV, *(args or [])]
    server = IIPServer(workdir, argv, bind, env, name="spawn-fcgi")
    try:
        server.wait_accepting(bind)
    except BaseException:
        server.stop()
        raise
    return server


# -- nginx -----------------------------------------------------------------------------------------

_FASTCGI_PASS = re.compile(r"^(?P<indent>[ \t]*)fastcgi_pass[ \t]+[^;#\n]+;", re.MULTILINE)


_UPSTREAM_SERVER = re.compile(r"^(?P<indent>[ \t]*)server[ \t]+[^;#\n]+;", re.MULTILINE)
# The two lines that keep FastCGI connections open, which the files say to remove for flup.
_KEEP_CONN = re.compile(r"^[ \t]*fastcgi_keep_conn[ \t]+on;[ \t]*\n", re.MULTILINE)
_KEEPALIVE = re.compile(r"^[ \t]*keepalive[ \t]+\d+;[ \t]*\n", re.MULTILINE)


def _without(pattern: re.Pattern[str], text: str, path: str) -> str:
    lines = pattern.findall(text)
    assert len(lines) == 1, f"{path} must have exactly one active {pattern.pattern!r} line"
    return pattern.sub("", text)


def nginx_location(upstream: str, keep_conn: bool = True) -> str:
    """The shipped location (conf/nginx/iipsrv_py.conf); it passes to "iipsrv_py".  Without
    ``keep_conn`` its fastcgi_keep_conn line is removed, as its comment says to for flup."""
    with open(NGINX_SNIPPET) as f:
        snippet = f.read()
    # One location for every image and REST path, and the local-only /metrics one.
    passes = _FASTCGI_PASS.findall(snippet)
    assert len(passes) == 2, f"{NGINX_SNIPPET} must have exactly two active fastcgi_pass lines"
    return snippet if keep_conn else _without(_KEEP_CONN, snippet, NGINX_SNIPPET)


def nginx_upstream(upstream: str, keep_conn: bool = True) -> str:
    """The shipped upstream (conf/nginx/iipsrv_py-upstream.conf) with its server at ``upstream``;
    without ``keep_conn``, also without its keepalive line."""
    with open(NGINX_UPSTREAM) as f:
        text = f.read()
    servers = _UPSTREAM_SERVER.findall(text)
    assert len(servers) == 1, f"{NGINX_UPSTREAM} must have exactly one active server line"
    text = _UPSTREAM_SERVER.sub(lambda m: f"{m['indent']}server {upstream};", text)
    return text if keep_conn else _without(_KEEPALIVE, text, NGINX_UPSTREAM)


def keeps_connections(engine: str) -> bool:
    """Whether nginx may keep FastCGI connections to this engine open.  A flup worker serves
    one connection at a time and holds a kept one until nginx closes it, so with more kept
    connections than workers the others would wait in the backlog: the shipped files say to
    remove the two keep-alive lines for flup, and the tests do so."""
    return engine == "native"


def nginx_upstream_hosts(path: str, upstreams: list[str]) -> str:
    """A shipped upstream over several hosts with its server lines, in order, at ``upstreams``
    (their parameters, such as max_fails, kept).  The file must have one active server line per
    upstream given."""
    with open(path) as f:
        text = f.read()
    found = _UPSTREAM_SERVER.findall(text)
    assert len(found) == len(upstreams), f"{path} has {len(found)} active server lines, not {len(upstreams)}"
    addresses = iter(upstreams)
    return re.sub(
        r"^(?P<indent>[ \t]*)server[ \t]+\S+(?P<rest>[^;#\n]*);",
        lambda m: f"{m['indent']}server {next(addresses)}{m['rest']};",
        text,
        flags=re.MULTILINE,
    )


def nginx_conf(
    workdir: str, port: int, upstream: str, keep_conn: bool = True, upstream_block: str | None = None
) -> str:
    """A whole nginx.conf around the shipped location; the shipped upstream at ``upstream`` unless
    ``upstream_block`` gives another one (several hosts)."""
    # As root nginx would switch its workers to "nobody", who may not open the test's unix
    # socket; every file nginx writes is kept inside the private directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""# generated by tests/integration/servers.py
{user}daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {workdir}/access.log;
    client_body_temp_path {workdir}/client_body_temp;
    proxy_temp_path {workdir}/proxy_temp;
    fastcgi_temp_path {workdir}/fastcgi_temp;
    uwsgi_temp_path {workdir}/uwsgi_temp;
    scgi_temp_path {workdir}/scgi_temp;
{upstream_block if upstream_block is not None else nginx_upstream(upstream, keep_conn)}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
{nginx_location(upstream, keep_conn)}
    }}
}}
"""


class WebServer(Managed):
    """A web server of the tests' own on a free loopback port, its files in ``workdir``."""

    def __init__(self, name: str, argv: list[str], workdir: str, port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.workdir = workdir
        super().__init__(name, argv, workdir, env)
        try:
            self.wait_accepting(("127.0.0.1", self.port))
        except BaseException:
            self.stop()
            raise

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        with open(os.path.join(self.workdir, "error.log"), errors="replace") as f:
            return f.read()


class Nginx(WebServer):
    def __init__(self, workdir: str, upstream: str, keep_conn: bool = True, upstream_block: str | None = None) -> None:
        binary = helpers.require_binary("nginx")
        port = free_port()
        workdir = os.path.join(workdir, "nginx")
        os.makedirs(workdir, exist_ok=True)
        conf = os.path.join(workdir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_conf(workdir, port, upstream, keep_conn, upstream_block))
        error_log = os.path.join(workdir, "error.log")
        super().__init__("nginx", [binary, "-p", workdir + "/", "-e", error_log, "-c", conf], workdir, port)

    def url(self, query: str = "", path: str = FCGI_PATH) -> str:
        return f"{self.base_url}{path}" + (f"?{query}" if query else "")


# -- a whole front end: nginx in front of iipsrv-py --------------------------------------------------


class Stack:
    """nginx -> FastCGI -> iipsrv-py, with a client."""

    def __init__(self, server: IIPServer, nginx: Nginx) -> None:
        self.server = server
        self.nginx = nginx
        self.session = http_session()

    def request(self, method: str, query: str = "", **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        kwargs.setdefault("allow_redirects", False)
        return self.session.request(method, self.nginx.url(query), **kwargs)

    def get(self, query: str = "", **kwargs: Any) -> requests.Response:
        return self.request("GET", query, **kwargs)

    def fresh_get(self, query: str) -> requests.Response:
        """A GET on a new connection (a thread must not share the stack's session)."""
        with http_session() as session:
            return session.get(self.nginx.url(query), timeout=HTTP_TIMEOUT)

    def close(self) -> None:
        self.session.close()


@contextlib.contextmanager
def nginx_stack(
    workdir: str,
    bind: tuple[str, int] | str | None = None,
    workers: int = 2,
    env: dict[str, str] | None = None,
    engine: str = "native",
    wrapper: list[str] | None = None,
) -> Iterator[Stack]:
    """iipsrv-py (``--bind``, TCP on a free port unless told) behind a private nginx, which
    keeps FastCGI connections open for the native engine only (see keeps_connections)."""
    helpers.require_binary("nginx")
    with contextlib.ExitStack() as stack:
        server = start_iipsrv(workdir, bind or ("127.0.0.1", free_port()), workers, env, engine, wrapper)
        stack.callback(server.stop)
        nginx = Nginx(workdir, server.upstream, keeps_connections(engine))
        stack.callback(nginx.stop)
        front = Stack(server, nginx)
        stack.callback(front.close)
        yield front


@contextlib.contextmanager
def spawn_fcgi_stack(
    workdir: str,
    bind: tuple[str, int] | str,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    engine: str = "native",
) -> Iterator[Stack]:
    """spawn-fcgi -> iipsrv-py (``--engine E``) on fd 0, behind a private nginx."""
    helpers.require_binary("nginx")
    with contextlib.ExitStack() as stack:
        server = start_spawn_fcgi(workdir, bind, env, [*(args or []), "--engine", engine])
        stack.callback(server.stop)
        nginx = Nginx(workdir, server.upstream, keeps_connections(engine))
        stack.callback(nginx.stop)
        front = Stack(server, nginx)
        stack.callback(front.close)
        yield front


def cpu_ticks(pid: int) -> int:
    """User plus system CPU time of ``pid`` in clock ticks (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except FileNotFoundError:
        return 0
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def wait_busy_worker(server: IIPServer, timeout: float = 10.0) -> int:
    """The worker that is working on a request: an idle one blocks in accept() and uses no CPU."""
    start = {pid: cpu_ticks(pid) for pid in server.workers()}
    ticks = os.sysconf("SC_CLK_TCK")

    def busy() -> int | None:
        for pid, before in start.items():
            if cpu_ticks(pid) - before >= ticks // 10:  # 100 ms of CPU since we started looking
                return pid
        return None

    return int(wait_until(busy, timeout, "a worker to be busy with the request"))


class LoadLoop:
    """A thread sending sequential requests until stopped; remembers what went wrong."""

    def __init__(self, stack: Stack, queries: list[str]) -> None:
        self.stack = stack
        self.queries = queries
        self.done = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with http_session() as session:
            while not self._stop.is_set():
                query = self.queries[self.done % len(self.queries)]
                try:
                    response = session.get(self.stack.nginx.url(query), timeout=HTTP_TIMEOUT)
                    if response.status_code != 200:
                        self.failures.append(f"{query} -> {response.status_code}")
                except requests.RequestException as exc:
                    self.failures.append(f"{query} -> {exc}")
                self.done += 1

    def __enter__(self) -> LoadLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=HTTP_TIMEOUT[1] + 5)
        assert not self._thread.is_alive(), "the load thread did not stop"


@dataclass
class Outcome:
    """One request of a ConcurrentLoad: when it ran and what came back (status 0: no answer)."""

    url: str
    started: float  # time.monotonic()
    ended: float
    status: int
    body: bytes | None  # kept for a sample only (``keep_body``)
    error: str = ""


class ConcurrentLoad:
    """``clients`` threads, each with a keep-alive connection of its own, sending GETs for the
    URLs ``pick(client, count)`` chooses (``count``: that client's requests so far) until
    stopped.  Every outcome is kept, with its times; bodies only where ``keep_body(url)``."""

    def __init__(
        self, pick: Callable[[int, int], str], clients: int, keep_body: Callable[[str], bool] = lambda url: True
    ) -> None:
        self.pick = pick
        self.keep_body = keep_body
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, client: int) -> None:
        with http_session() as session:
            count = 0
            while not self._stop.is_set():
                url = self.pick(client, count)
                count += 1
                started = time.monotonic()
                try:
                    response = session.get(url, timeout=HTTP_TIMEOUT, allow_redirects=False)
                except requests.RequestException as exc:
                    self.outcomes.append(Outcome(url, started, time.monotonic(), 0, None, repr(exc)))
                    continue
                body = response.content if self.keep_body(url) else None
                self.outcomes.append(Outcome(url, started, time.monotonic(), response.status_code, body))

    def since(self, moment: float) -> list[Outcome]:
        return [o for o in list(self.outcomes) if o.started >= moment]

    def __enter__(self) -> ConcurrentLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=HTTP_TIMEOUT[1] + 5)
        assert not any(thread.is_alive() for thread in self._threads), "a load thread did not stop"
