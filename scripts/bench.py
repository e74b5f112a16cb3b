#!/usr/bin/env python3
"""iipsrv_py next to the C++ iipsrv (Debian's iipimage-server), behind the same nginx.

    scripts/bench [--quick] [--engine native|flup|both] [--workers N] [--duration S] [--markdown FILE]

Both servers get the same images, the same worker count, the same cache size and the same
URLs, through one nginx on loopback, each over a unix socket.  Every scenario runs wrk against
one server, then the other, and the table shows requests per second, latency percentiles,
errors, the peak resident memory of each worker pool and the ratio ours / iipsrv.  With
``--engine both`` iipsrv-py runs twice, once per FastCGI engine (two pools side by side).

Scenario 6 ("warm tiles while slow renders run") is about latency, not rate: slow renderings
keep some workers busy while warm tiles are timed, once with nginx keeping FastCGI connections
open and once without, because a kept connection belongs to one worker and a request sent on
it waits while that worker renders.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import tifffile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IIPSRV_CPP = "/usr/lib/iipimage-server/iipsrv.fcgi"
ENGINES = ("native", "flup")
CACHE_MB = 256  # MAX_IMAGE_CACHE_SIZE of both servers
PATH = "/fcgi-bin/iipsrv.fcgi"


# -- benchmark images ----------------------------------------------------------------------------


def _tile_pixels(x0: int, y0: int, w: int, h: int, scale: float, seed: int) -> np.ndarray:
    """A procedural picture sampled at ``scale`` full-size pixels per pixel: the same content at
    every level, with texture so that JPEG tiles have realistic sizes."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    fx = (xs + x0) * scale
    fy = (ys + y0) * scale
    r = 128 + 100 * np.sin(fx / 700.0) * np.cos(fy / 1100.0)
    g = 128 + 100 * np.sin((fx + fy) / 900.0)
    b = 128 + 60 * np.cos(fx / 150.0) + 40 * np.sin(fy / 90.0)
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 10, (h, w, 1)).astype(np.float32)
    return np.clip(np.dstack([r, g, b]) + noise, 0, 255).astype(np.uint8)


def write_pyramid(path: str, width: int, height: int, factors: list[int], compression: str) -> None:
    """A tiled pyramid written level by level, tile by tile (never the whole image in memory)."""
    tile = 256
    tmp = path + ".tmp"
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for index, factor in enumerate(factors):
            lw, lh = max(1, width // factor), max(1, height // factor)

            def tiles(lw: int = lw, lh: int = lh, factor: int = factor) -> Iterator[np.ndarray]:
                for ty in range(0, lh, tile):
                    for tx in range(0, lw, tile):
                        pixels = _tile_pixels(tx, ty, tile, tile, factor, seed=tx * 7919 + ty * 104729 + factor)
                        yield pixels

            tif.write(
                tiles(),
                shape=(lh, lw, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression=compression,
                compressionargs={"level": 85} if compression == "jpeg" else {"level": 6},
                subfiletype=1 if index else 0,
                metadata=None,
            )
    os.replace(tmp, path)


@dataclass(frozen=True)
class Image:
    name: str
    width: int
    height: int
    factors: tuple[int, ...]
    compression: str

    def level_size(self, index: int) -> tuple[int, int]:
        f = self.factors[index]
        return max(1, self.width // f), max(1, self.height // f)


def images(quick: bool) -> list[Image]:
    if quick:
        return [
            Image("bench-rgb-4000x3000-256tile-jpeg.tif", 4000, 3000, (1, 2, 4, 8, 16), "jpeg"),
            Image("bench-rgb-2000x1500-256tile-deflate.tif", 2000, 1500, (1, 2, 4, 8), "zlib"),
            Image("bench-rgb-4001x3001-step4-256tile-jpeg.tif", 4001, 3001, (1, 4, 16), "jpeg"),
        ]
    return [
        Image("bench-rgb-20000x15000-256tile-jpeg.tif", 20000, 15000, (1, 2, 4, 8, 16, 32, 64), "jpeg"),
        Image("bench-rgb-8000x6000-256tile-deflate.tif", 8000, 6000, (1, 2, 4, 8, 16, 32), "zlib"),
        Image("bench-rgb-30001x20001-step4-256tile-jpeg.tif", 30001, 20001, (1, 4, 16, 64), "jpeg"),
    ]


def make_images(directory: str, wanted: list[Image]) -> None:
    os.makedirs(directory, exist_ok=True)
    for image in wanted:
        path = os.path.join(directory, image.name)
        if not os.path.exists(path):
            print(f"generating {image.name} ...", file=sys.stderr, flush=True)
            write_pyramid(path, image.width, image.height, list(image.factors), image.compression)


# -- processes -----------------------------------------------------------------------------------


def wait_for_socket(path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
            sock.connect(path)
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {path}")


@dataclass
class Server:
    """One FastCGI pool on a unix socket: iipsrv-py with one engine ("native", "flup") or the
    C++ iipsrv ("iipsrv")."""

    name: str
    socket_path: str
    env: dict[str, str]
    workers: int
    proc: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)

    @property
    def ours(self) -> bool:
        return self.name in ENGINES

    @property
    def label(self) -> str:
        return f"iipsrv-py {self.name}" if self.ours else "iipsrv 1.1"

    def command(self) -> list[str]:
        if self.ours:
            return [
                os.path.join(sys.prefix, "bin", "iipsrv-py"),
                "--bind",
                self.socket_path,
                "--workers",
                str(self.workers),
                "--engine",
                self.name,
            ]
        # spawn-fcgi -F N: N single-process iipsrv instances on one socket (iipsrv has no pool).
        # Not -n: in the foreground spawn-fcgi ignores -F and runs a single process.
        return ["spawn-fcgi", "-s", self.socket_path, "-F", str(self.workers), "--", IIPSRV_CPP]

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env}
        if self.ours:
            self.proc = subprocess.Popen(
                self.command(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
        else:
            # spawn-fcgi forks the workers into sessions of their own and exits, printing
            # "child spawned successfully: PID: N" for each: those are the pool.
            done = subprocess.run(self.command(), env=env, capture_output=True, text=True, timeout=30)
            self.pids = [int(pid) for pid in re.findall(r"PID: (\d+)", done.stdout + done.stderr)]
            if done.returncode != 0 or len(self.pids) != self.workers:
                raise RuntimeError(f"spawn-fcgi started {len(self.pids)} of {self.workers}: {done.stderr.strip()}")
        wait_for_socket(self.socket_path)
        # The socket accepts before the workers exist: wait for all of them, then let them
        # settle, so that a first request measures the server, not its start-up.
        deadline = time.monotonic() + 30
        while len(self.worker_pids()) < self.workers and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: our supervisor's children, or spawn-fcgi's."""
        if not self.ours:
            return [pid for pid in self.pids if os.path.exists(f"/proc/{pid}")]
        assert self.proc is not None
        pgid = self.proc.pid
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and int(entry) != pgid:
                found.append(int(entry))
        return found

    def peak_rss_mb(self) -> float:
        total = 0
        for pid in self.worker_pids():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        return total / 1024

    def stop(self) -> None:
        if not self.ours:
            self._stop_spawned()
            return
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def _stop_spawned(self) -> None:
        """iipsrv's processes are not our children: signal them and wait for them to go."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.worker_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while self._running() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not self._running():
                break
        self.pids = []

    def _running(self) -> bool:
        """Any of spawn-fcgi's workers still alive (a zombie, reparented to init, counts as gone)."""
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/stat") as handle:
                    if handle.read().rsplit(")", 1)[1].split()[0] != "Z":
                        return True
            except OSError:
                continue
        return False

    def restart(self) -> None:
        self.stop()
        self.start()


NGINX_CONF = """
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
{user}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body; fastcgi_temp_path {dir}/fastcgi;
    proxy_temp_path {dir}/proxy; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
{fronts}
}}
"""

# One upstream and one server block per front end.  With kept connections: the upstream's
# keepalive (idle connections cached per nginx worker) and fastcgi_keep_conn, as conf/nginx/
# ships them.  Without: nginx connects, sends one request and the application closes.
NGINX_FRONT = """
    upstream {name} {{ server unix:{socket};{keepalive} }}
    server {{
        listen 127.0.0.1:{port};
        location {path} {{ fastcgi_pass {name}; {keep_conn}include {dir}/params; fastcgi_read_timeout 120s; }}
    }}
"""
KEEPALIVE = 32  # as conf/nginx/iipsrv_py-upstream.conf (--keepalive changes it)
FRONT_ORDER = ("native", "native-per-request", "flup", "iipsrv")  # rows of the tables


@dataclass(frozen=True)
class Front:
    """One nginx server block in front of one pool, with or without kept connections."""

    name: str
    server: Server
    keepalive: int  # idle connections nginx keeps per worker process; 0: a connection per request
    port: int = field(default_factory=lambda: free_port())


FASTCGI_PARAMS = """
fastcgi_param QUERY_STRING $query_string;
fastcgi_param REQUEST_METHOD $request_method;
fastcgi_param CONTENT_TYPE $content_type;
fastcgi_param CONTENT_LENGTH $content_length;
fastcgi_param REQUEST_URI $request_uri;
fastcgi_param SCRIPT_NAME $fastcgi_script_name;
fastcgi_param SERVER_PROTOCOL $server_protocol;
fastcgi_param SERVER_NAME $server_name;
fastcgi_param SERVER_PORT $server_port;
fastcgi_param HTTP_HOST $http_host;
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def nginx(workdir: str, fronts: list[Front], workers: int) -> Iterator[None]:
    with open(os.path.join(workdir, "params"), "w") as handle:
        handle.write(FASTCGI_PARAMS)
    blocks = "".join(
        NGINX_FRONT.format(
            name=front.name,
            socket=front.server.socket_path,
            keepalive=f" keepalive {front.keepalive};" if front.keepalive else "",
            keep_conn="fastcgi_keep_conn on; " if front.keepalive else "",
            port=front.port,
            path=PATH,
            dir=workdir,
        )
        for front in fronts
    )
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as handle:
        handle.write(
            NGINX_CONF.format(
                workers=workers, dir=workdir, user="user root;" if os.geteuid() == 0 else "", fronts=blocks
            )
        )
    proc = subprocess.Popen(["nginx", "-p", workdir, "-c", conf], stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", fronts[-1].port), 0.2):
                break
            time.sleep(0.05)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


# -- scenarios -----------------------------------------------------------------------------------


def tile_urls(image: Image, count: int, rng: random.Random) -> list[str]:
    """IIIF tile URLs as a viewer computes them, for levels whose factors are powers of two."""
    urls = []
    levels = [i for i, f in enumerate(image.factors) if f & (f - 1) == 0]
    while len(urls) < count:
        index = rng.choice(levels[: max(1, len(levels) - 1)])
        factor = image.factors[index]
        lw, lh = image.level_size(index)
        col, row = rng.randrange((lw + 255) // 256), rng.randrange((lh + 255) // 256)
        x, y = col * 256 * factor, row * 256 * factor
        w, h = min(256 * factor, image.width - x), min(256 * factor, image.height - y)
        size = -(-w // factor)
        urls.append(f"{PATH}?IIIF=/{image.name}/{x},{y},{w},{h}/{size},/0/default.jpg")
    return urls


def iip_tile_urls(image: Image, count: int, rng: random.Random, prefix: str, command: str) -> list[str]:
    urls = []
    levels = len(image.factors)
    while len(urls) < count:
        index = rng.randrange(levels - 1)
        lw, lh = image.level_size(index)
        tiles = ((lw + 255) // 256) * ((lh + 255) // 256)
        res = levels - 1 - index
        urls.append(f"{PATH}?FIF={image.name}{prefix}&{command}={res},{rng.randrange(tiles)}")
    return urls


def region_urls(image: Image, count: int, rng: random.Random) -> list[str]:
    boxes: set[tuple[int, int]] = set()
    while len(boxes) < count:
        boxes.add((rng.randint(512, 2048), rng.randint(512, 2048)))
    return [f"{PATH}?IIIF=/{image.name}/full/!{w},{h}/0/default.jpg" for w, h in boxes]


def crop_urls(image: Image, count: int, rng: random.Random) -> list[str]:
    urls = []
    for _ in range(count):
        x, y = rng.randrange(image.width - 2048), rng.randrange(image.height - 2048)
        urls.append(f"{PATH}?IIIF=/{image.name}/{x},{y},2048,2048/512,/0/default.jpg")
    return urls


def processing_urls(image: Image, count: int, rng: random.Random) -> list[str]:
    """IIP views through the float stage: a region at 512 wide with contrast and gamma, each
    region once (distinct URLs, so no response cache answers them)."""
    urls = []
    for _ in range(count):
        w, h = rng.uniform(0.1, 0.5), rng.uniform(0.1, 0.5)
        x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
        contrast, gamma = rng.uniform(0.8, 1.5), rng.uniform(0.5, 2.0)
        urls.append(
            f"{PATH}?FIF={image.name}&RGN={x:.5f},{y:.5f},{w:.5f},{h:.5f}&WID=512"
            f"&CNT={contrast:.4f}&GAM={gamma:.4f}&CVT=jpeg"
        )
    return urls


def metadata_urls(all_images: list[Image]) -> list[str]:
    urls = []
    for image in all_images:
        urls.append(f"{PATH}?IIIF=/{image.name}/info.json")
        urls.append(f"{PATH}?FIF={image.name}&OBJ=IIP,1.0&OBJ=Basic-info&OBJ=Tile-size&OBJ=Resolutions")
    return urls


@dataclass
class Scenario:
    name: str
    urls: list[str]
    warm: bool  # request every URL once before measuring
    cpp: bool = True  # the C++ server can answer these


@dataclass
class Result:
    rps: float = 0.0
    p50: float = 0.0
    p99: float = 0.0
    errors: int = 0
    requests: int = 0
    rss: float = 0.0


# Each wrk thread takes every other URL.  "cycle" starts over at the end of the list (warm
# scenarios); "once" stops the thread there, so no URL is ever requested twice and no cache of
# either server can answer a region it has seen (the rate is then over the time actually run).
WRK_SCRIPT = """
local paths = {}
for line in io.lines("%(paths)s") do paths[#paths + 1] = line end
local threads = 0
function setup(thread)
  thread:set("first", threads)
  threads = threads + 1
end
function init(args) i = first; step = %(threads)d end
request = function()
  local index = i
  i = i + step
  if index >= #paths then
    if %(once)s then wrk.thread:stop() end
    index = index %% #paths
  end
  return wrk.format("GET", paths[index + 1])
end
"""


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(port: int, urls: list[str], workdir: str, duration: float, connections: int, once: bool) -> Result:
    paths = os.path.join(workdir, "paths.txt")
    with open(paths, "w") as handle:
        handle.write("\n".join(urls) + "\n")
    script = os.path.join(workdir, "paths.lua")
    with open(script, "w") as handle:
        handle.write(WRK_SCRIPT % {"paths": paths, "threads": 2, "once": "true" if once else "false"})
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "-s",
            script,
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 30,
        check=True,
    ).stdout
    result = Result()
    result.rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    result.requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    result.p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    result.p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result.errors = int(errors.group(1)) if errors else 0
    if socket_errors:
        result.errors += sum(int(v) for v in socket_errors.groups())
    if result.errors and os.environ.get("BENCH_KEEP"):
        print(out, file=sys.stderr)
    return result


def fetch(port: int, url: str, timeout: float = 60.0) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{url}", timeout=timeout) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return status, (time.perf_counter() - started) * 1000


def warm(port: int, urls: list[str]) -> None:
    for url in dict.fromkeys(urls):
        fetch(port, url)


def drop_file_pages(directory: str) -> bool:
    """Evict the benchmark images' pages from the page cache (POSIX_FADV_DONTNEED), so the
    first tile is read from the disk.  Only the images: dropping every cache would also evict
    both servers' own code, which a cold tile in service does not have to reload."""
    try:
        for name in os.listdir(directory):
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        return True
    except OSError:
        return False


def cold_tiles(
    servers: dict[str, tuple[Server, int]], urls: list[str], warm_up: str, trials: int, images_dir: str
) -> tuple[dict[str, Result], bool]:
    """Latency of the first tile of an image the server has not opened yet.

    Each trial restarts the server (every cache empty), has it answer one request for another
    image (so that what is measured is the cold image, not a cold process or a first
    connection), evicts the images' file pages, then times the tile."""
    samples: dict[str, list[float]] = {name: [] for name in servers}
    dropped = True
    for trial in range(trials):
        for name, (server, port) in servers.items():
            server.restart()
            fetch(port, warm_up)
            dropped = drop_file_pages(images_dir) and dropped
            status, elapsed = fetch(port, urls[trial % len(urls)])
            if status != 200:
                raise RuntimeError(f"{name}: cold tile answered {status}")
            samples[name].append(elapsed)
    results = {}
    for name, values in samples.items():
        ordered = sorted(values)
        results[name] = Result(
            rps=0.0,
            p50=statistics.median(ordered),
            p99=ordered[-1],
            requests=len(values),
            rss=servers[name][0].peak_rss_mb(),
        )
    return results, dropped


# -- 6. warm tiles while slow renders run -------------------------------------------------------------


def render_urls(image: Image, count: int, rng: random.Random, quick: bool) -> list[str]:
    """Large downscales of the whole image, each size once (no cache can answer them)."""
    low, high = (1000, 2000) if quick else (3000, 4000)
    boxes: set[tuple[int, int]] = set()
    while len(boxes) < count:
        boxes.add((rng.randint(low, high), rng.randint(low, high)))
    return [f"{PATH}?IIIF=/{image.name}/full/!{w},{h}/0/default.jpg" for w, h in boxes]


class Renders:
    """Background load: ``streams`` clients, each sending slow renderings one after another on a
    kept HTTP connection to nginx, until stopped."""

    def __init__(self, port: int, urls: list[str], streams: int) -> None:
        self.port = port
        self.urls = iter(urls)
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.failures = 0
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(streams)]

    def _next(self) -> str | None:
        with self.lock:
            return next(self.urls, None)

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            while not self.stopping.is_set() and (url := self._next()) is not None:
                started = time.perf_counter()
                try:
                    connection.request("GET", url)
                    response = connection.getresponse()
                    response.read()
                    ok = response.status == 200
                except (OSError, http.client.HTTPException):
                    connection.close()
                    ok = False
                with self.lock:
                    if ok:
                        self.latencies.append((time.perf_counter() - started) * 1000)
                    else:
                        self.failures += 1
        finally:
            connection.close()

    def __enter__(self) -> Renders:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=150)


@dataclass
class BlockingResult:
    label: str
    kept: int
    tiles: Result
    renders: list[float]
    render_failures: int


def tiles_during_renders(
    front: Front, tiles: list[str], renders: list[str], streams: int, workdir: str, duration: float
) -> BlockingResult:
    """Warm tiles timed by wrk (4 connections) while ``streams`` clients keep workers rendering."""
    warm(front.port, tiles)
    with Renders(front.port, renders, streams) as load:
        time.sleep(min(1.0, duration / 4))  # let the first renderings start
        result = run_wrk(front.port, tiles, workdir, duration, TILE_CONNECTIONS, once=False)
    return BlockingResult(front.server.label, front.keepalive, result, sorted(load.latencies), load.failures)


TILE_CONNECTIONS = 4


def blocking_table(results: list[BlockingResult], streams: int, workers: int) -> str:
    lines = [
        f"| 6. warm tiles while slow renders run ({streams} of {workers} workers rendering) | nginx → FastCGI "
        "| tile req/s | tile p50 ms | tile p99 ms | tile errors | renders done | render p50 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        kept = f"kept (`keepalive {r.kept}`, `fastcgi_keep_conn on`)" if r.kept else "a connection per request"
        render_p50 = f"{statistics.median(r.renders):.0f}" if r.renders else "-"
        failed = f" ({r.render_failures} failed)" if r.render_failures else ""
        lines.append(
            f"| {r.label} | {kept} | {r.tiles.rps:,.0f} | {r.tiles.p50:.2f} | {r.tiles.p99:.2f} | "
            f"{r.tiles.errors} | {len(r.renders)}{failed} | {render_p50} |"
        )
    return "\n".join(lines)


# -- report ----------------------------------------------------------------------------------------


def table(
    rows: list[tuple[str, dict[str, Result | None]]],
    cold: tuple[dict[str, Result], bool] | None,
    labels: dict[str, str],
) -> str:
    """One row per server and scenario; each iipsrv-py row has its ratio to iipsrv 1.1."""
    lines = [
        "| scenario | server | req/s | p50 ms | p99 ms | errors | peak RSS MB | ours / iipsrv |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, results in rows:
        cpp = results.get("iipsrv")
        for key, result in results.items():
            label = labels[key]
            if result is None:
                lines.append(f"| {name} | {label} | not supported | | | | | |")
                continue
            ratio = ""
            if key != "iipsrv":
                ratio = f"**{result.rps / cpp.rps:.2f}×**" if cpp and cpp.rps else "n/a"
            lines.append(
                f"| {name} | {label} | {result.rps:,.0f} | {result.p50:.2f} | {result.p99:.2f} | "
                f"{result.errors} | {result.rss:.0f} | {ratio} |"
            )
    if cold is not None:
        results, dropped = cold
        note = "server restarted, image not yet opened, its pages dropped" if dropped else "pages NOT dropped"
        cpp = results["iipsrv"]
        for key, result in results.items():
            ratio = f"**{cpp.p50 / result.p50:.2f}×** (latency)" if key != "iipsrv" else ""
            lines.append(
                f"| 5. cold first tile ({note}; median / max of {result.requests}) | {labels[key]} | | "
                f"{result.p50:.1f} | {result.p99:.1f} | 0 | {result.rss:.0f} | {ratio} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small images, 2 s per scenario (proves the script works)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="worker processes of each server")
    parser.add_argument("--duration", type=float, help="seconds of load per scenario and server (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent client connections")
    parser.add_argument(
        "--engine",
        choices=(*ENGINES, "both"),
        default="native",
        help="FastCGI engine of iipsrv-py (both: one pool of each, side by side; default native)",
    )
    parser.add_argument(
        "--keepalive",
        type=int,
        default=KEEPALIVE,
        metavar="N",
        help=f"nginx upstream keepalive for the native engine (default {KEEPALIVE}; 0: a connection per request)",
    )
    parser.add_argument("--images", default=os.path.join(ROOT, ".bench"), help="where benchmark images are kept")
    parser.add_argument("--markdown", help="also write the tables to this file")
    parser.add_argument("--only", help="comma-separated scenario numbers to run (e.g. 1,3b,5,6)")
    parser.add_argument(
        "--s3",
        action="store_true",
        help="instead: the same image from an S3-compatible store (moto on loopback) and from the local disk, "
        "warm and cold tiles with the store requests they cost",
    )
    args = parser.parse_args()
    duration = args.duration or (2.0 if args.quick else 10.0)
    if args.s3:
        import bench_s3

        report = bench_s3.run(args, duration, args.workers, args.connections, args.images.rstrip("/"))
        print(report)
        if args.markdown:
            with open(args.markdown, "w") as handle:
                handle.write(report + "\n")
        return 0
    engines = list(ENGINES) if args.engine == "both" else [args.engine]
    # Regions are requested once each: the lists must outlast the run at either server's rate.
    counts = (60, 3000, 3000) if args.quick else (3000, 20000, 40000)
    wanted = images(args.quick)
    make_images(args.images, wanted)
    big, lossless, step4 = wanted
    rng = random.Random(20261122)
    scenarios = [
        Scenario("1. warm JPEG tiles, IIIF URLs", tile_urls(big, counts[0], rng), warm=True),
        Scenario(
            "1b. warm JPEG tiles, 4× pyramid, IIP JTL", iip_tile_urls(step4, counts[0], rng, "", "JTL"), warm=True
        ),
        Scenario(
            "2. re-encoded tiles, JTL with QLT=90", iip_tile_urls(big, counts[0], rng, "&QLT=90", "JTL"), warm=True
        ),
        Scenario(
            "2b. PNG tiles, lossless image, PTL",
            iip_tile_urls(lossless, counts[0], rng, "", "PTL"),
            warm=True,
            cpp=False,
        ),
        Scenario("3. region downscale full/!w,h (512–2048, each once)", region_urls(big, counts[1], rng), warm=False),
        Scenario("3b. 2048² region of level 0 to 512 (each once)", crop_urls(big, counts[2], rng), warm=False),
        Scenario(
            "3c. processing: RGN at 512 wide with CNT and GAM (each once)",
            processing_urls(big, counts[2], rng),
            warm=False,
        ),
        Scenario("4. metadata: info.json and OBJ", metadata_urls(wanted), warm=True),
    ]
    only = set(args.only.split(",")) if args.only else None
    if only is not None:
        scenarios = [s for s in scenarios if s.name.split(".")[0] in only]
    workdir = tempfile.mkdtemp(prefix="iipbench-")
    env = {"FILESYSTEM_PREFIX": args.images.rstrip("/") + "/", "VERBOSITY": "0", "MAX_IMAGE_CACHE_SIZE": str(CACHE_MB)}
    pools = [Server(engine, os.path.join(workdir, f"{engine}.sock"), env, args.workers) for engine in engines]
    cpp = Server("iipsrv", os.path.join(workdir, "cpp.sock"), env, args.workers)
    # The main fronts: iipsrv-py with kept connections for the native engine only (a flup
    # worker holds a kept connection until nginx closes it), iipsrv without (libfcgi serves
    # one connection at a time per process).  Scenario 6 adds the native engine without them.
    fronts = {
        server.name: Front(server.name, server, keepalive=args.keepalive if server.name == "native" else 0)
        for server in pools
    }
    fronts["iipsrv"] = Front("iipsrv", cpp, keepalive=0)
    if "native" in engines and args.keepalive:
        fronts["native-per-request"] = Front("native_per_request", fronts["native"].server, keepalive=0)
    labels = {name: front.server.label for name, front in fronts.items()}
    labels["native-per-request"] = "iipsrv-py native, a connection per request"
    rows: list[tuple[str, dict[str, Result | None]]] = []
    blocking: list[BlockingResult] = []
    streams = max(1, args.workers // 2)
    cold = None
    try:
        for server in (*pools, cpp):
            server.start()
        with nginx(workdir, list(fronts.values()), args.workers):
            main_fronts = [name for name in fronts if name != "native-per-request"]
            for scenario in scenarios:
                print(f"running {scenario.name} ...", file=sys.stderr, flush=True)
                results: dict[str, Result | None] = {}
                # Scenario 1 also compares the engines on equal terms: both without kept connections.
                first = scenario.name.startswith("1.")
                compared = [n for n in FRONT_ORDER if n in fronts and (first or n != "native-per-request")]
                for name in compared:
                    front = fronts[name]
                    if name == "iipsrv" and not scenario.cpp:
                        results[name] = None
                        continue
                    status, _ = fetch(front.port, scenario.urls[0])
                    if status != 200:
                        raise RuntimeError(f"{name} answers {status} to {scenario.urls[0]}")
                    if scenario.warm:
                        warm(front.port, scenario.urls)
                    result = run_wrk(
                        front.port, scenario.urls, workdir, duration, args.connections, once=not scenario.warm
                    )
                    result.rss = front.server.peak_rss_mb()
                    results[name] = result
                rows.append((scenario.name, results))
            if only is None or "6" in only:
                print("running 6. warm tiles while slow renders run ...", file=sys.stderr, flush=True)
                tiles = tile_urls(big, min(counts[0], 1000), random.Random(6))
                for index, name in enumerate(n for n in FRONT_ORDER if n in fronts):
                    renders = render_urls(big, 400, random.Random(600 + index), args.quick)
                    blocking.append(tiles_during_renders(fronts[name], tiles, renders, streams, workdir, duration))
            if only is None or "5" in only:
                print("running 5. cold first tiles ...", file=sys.stderr, flush=True)
                cold_urls = tile_urls(big, 12, random.Random(5))
                warm_up = f"{PATH}?FIF={lossless.name}&JTL=0,0"
                pairs = {name: (fronts[name].server, fronts[name].port) for name in main_fronts}
                cold = cold_tiles(pairs, cold_urls, warm_up, 3 if args.quick else 9, args.images)
    finally:
        for server in (*pools, cpp):
            server.stop()
        if os.environ.get("BENCH_KEEP"):
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = table(rows, cold, labels) if rows or cold else ""
    if blocking:
        report += ("\n\n" if report else "") + blocking_table(blocking, streams, args.workers)
    engine_text = " and ".join(f"iipsrv-py --engine {e} --workers {args.workers}" for e in engines)
    settings = (
        f"Workers: {args.workers} per server ({engine_text}; spawn-fcgi -F {args.workers} iipsrv). "
        f"MAX_IMAGE_CACHE_SIZE={CACHE_MB} MB for both; iipsrv-py also keeps whole responses in that budget, "
        "revalidated by a stat on every request. nginx: same process, worker_processes "
        f"{args.workers}; unix sockets; kept FastCGI connections (keepalive {args.keepalive}, fastcgi_keep_conn on) "
        "for the native engine only (flup and iipsrv hold a kept connection until nginx closes it). "
        f"wrk: 2 threads, {args.connections} connections, {duration:g} s per run; URLs shuffled over "
        f"{counts[0]} tiles / {counts[1]} regions; warm scenarios request every URL once first."
    )
    if blocking:
        settings += (
            f" Scenario 6: {streams} client(s) request whole-image downscales (each size once) one after another "
            f"while wrk times warm tiles on {TILE_CONNECTIONS} connections for {duration:g} s."
        )
    print(report)
    print()
    print(settings)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(report + "\n\n" + settings + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
