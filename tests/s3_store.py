"""An S3-compatible store on loopback for the tests: moto's standalone server, and a counting
proxy in front of it.

``moto_server`` (moto[server], a test extra) is started as a process of its own on
127.0.0.1:<free port> with dummy credentials; the proxy is a small threaded HTTP server that
forwards every request to it unchanged and records its method, path and Range header, which is
how the tests count the requests iipsrv_py makes (the store itself, not the code under test,
is asked what happened).  The proxy can also stop answering (a store that hangs).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests import helpers

REGION = "us-east-1"
# Dummy credentials for moto and the clients; no configuration file of the developer's is read.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_PROXY": "127.0.0.1,localhost",
}
_FORGET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "HTTP_PROXY", "HTTPS_PROXY")


def use_dummy_credentials() -> None:
    """This process's boto3 clients (the application under test's too) use the dummy ones."""
    for name in _FORGET:
        os.environ.pop(name, None)
        os.environ.pop(name.lower(), None)
    os.environ.update(CREDENTIALS)


def require_moto_server() -> str:
    """The moto_server program of this virtualenv.  Missing: a failure under CI=true."""
    path = os.path.join(os.path.dirname(sys.executable), "moto_server")
    if not os.access(path, os.X_OK):
        path = shutil.which("moto_server") or ""
    if not path:
        message = "moto_server is not installed (pip install -e .[test] installs moto[server])"
        if helpers.IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class MotoServer:
    """``moto_server -H 127.0.0.1 -p PORT`` in a session of its own."""

    def __init__(self, workdir: str, port: int | None = None) -> None:
        self.binary = require_moto_server()
        self.port = port or free_port()
        self.workdir = workdir
        self.popen: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
        env.update(CREDENTIALS)
        log = open(os.path.join(self.workdir, f"moto-{self.port}.log"), "ab")  # noqa: SIM115 - the child keeps it
        with log:
            self.popen = subprocess.Popen(
                [self.binary, "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not _accepts(self.port):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"moto_server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)
        self.popen = None

    def client(self) -> Any:
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


def upload(store: MotoServer, bucket: str, files: dict[str, str]) -> None:
    """``{key: local path}`` into ``bucket`` (created when missing)."""
    client = store.client()
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=bucket)
    for key, path in files.items():
        client.upload_file(path, bucket, key)


# -- the counting proxy --------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # without the query string
    range: str | None  # the Range header, as sent

    def span(self) -> tuple[int, int]:
        """``(start, end)`` (end exclusive) of a ``bytes=a-b`` range."""
        assert self.range is not None and self.range.startswith("bytes="), self.range
        first, _, last = self.range[len("bytes=") :].partition("-")
        return int(first), int(last) + 1


class CountingProxy:
    """Forwards HTTP requests to ``upstream_port`` on 127.0.0.1 and records each one."""

    HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"})

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.seen: list[Seen] = []
        self.hang = threading.Event()  # set: requests are held unanswered
        self._released = threading.Event()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                with proxy._lock:
                    proxy.seen.append(Seen(self.command, self.path.split("?")[0], self.headers.get("Range")))
                if proxy.hang.is_set():
                    proxy._released.wait(30)
                    self.close_connection = True
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in proxy.HOP_BY_HOP}
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    self.send_response_only(answer.status, answer.reason)
                    for name, value in answer.getheaders():
                        if name.lower() not in proxy.HOP_BY_HOP and name.lower() != "content-length":
                            self.send_header(name, value)
                    upstream_length = answer.getheader("Content-Length")
                    if self.command == "HEAD" and upstream_length is not None:
                        self.send_header("Content-Length", upstream_length)
                    else:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()

    def gets(self) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.method == "GET"]

    def heads(self) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.method == "HEAD"]

    @contextlib.contextmanager
    def hanging(self) -> Iterator[None]:
        """Requests meanwhile get no answer (until the block ends)."""
        self._released.clear()
        self.hang.set()
        try:
            yield
        finally:
            self.hang.clear()
            self._released.set()

    def close(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
