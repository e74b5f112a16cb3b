#!/usr/bin/env python3
"""iipsrv_py next to the C++ iipsrv (Debian's iipimage-server), behind the same nginx.

    scripts/bench [--quick] [--workers N] [--duration S] [--markdown FILE]

Both servers get the same images, the same worker count, the same cache size and the same
URLs, through one nginx on loopback, each over a unix socket.  Every scenario runs wrk against
one server, then the other, and the table shows requests per second, latency percentiles,
errors, the peak resident memory of each worker pool and the ratio ours / iipsrv.
"""

from __future__ import annotations

import argparse
import contextlib
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
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import tifffile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IIPSRV_CPP = "/usr/lib/iipimage-server/iipsrv.fcgi"
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
    """One FastCGI pool on a unix socket: ours or the C++ iipsrv."""

    name: str
    socket_path: str
    env: dict[str, str]
    workers: int
    proc: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)

    def command(self) -> list[str]:
        if self.name == "ours":
            return [
                os.path.join(sys.prefix, "bin", "iipsrv-py"),
                "--bind",
                self.socket_path,
                "--workers",
                str(self.workers),
            ]
        # spawn-fcgi -F N: N single-process iipsrv instances on one socket (iipsrv has no pool).
        # Not -n: in the foreground spawn-fcgi ignores -F and runs a single process.
        return ["spawn-fcgi", "-s", self.socket_path, "-F", str(self.workers), "--", IIPSRV_CPP]

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env}
        if self.name == "ours":
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
        if self.name != "ours":
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
        if self.name != "ours":
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
    # iipsrv-py keeps FastCGI connections open (one worker watches many); iipsrv's libfcgi
    # serves one connection at a time per process, so nginx must close them after each request.
    upstream ours {{ server unix:{ours}; keepalive 32; }}
    upstream cpp {{ server unix:{cpp}; }}
    server {{
        listen 127.0.0.1:{port_ours};
        location {path} {{ fastcgi_pass ours; fastcgi_keep_conn on; include {dir}/params; }}
    }}
    server {{
        listen 127.0.0.1:{port_cpp};
        location {path} {{ fastcgi_pass cpp; include {dir}/params; }}
    }}
}}
"""

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
def nginx(workdir: str, ours: str, cpp: str, workers: int) -> Iterator[tuple[int, int]]:
    ports = free_port(), free_port()
    with open(os.path.join(workdir, "params"), "w") as handle:
        handle.write(FASTCGI_PARAMS)
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as handle:
        handle.write(
            NGINX_CONF.format(
                workers=workers,
                dir=workdir,
                user="user root;" if os.geteuid() == 0 else "",
                ours=ours,
                cpp=cpp,
                port_ours=ports[0],
                port_cpp=ports[1],
                path=PATH,
            )
        )
    proc = subprocess.Popen(["nginx", "-p", workdir, "-c", conf], stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", ports[1]), 0.2):
                break
            time.sleep(0.05)
        yield ports
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


# -- report ----------------------------------------------------------------------------------------


def table(rows: list[tuple[str, dict[str, Result | None]]], cold: tuple[dict[str, Result], bool] | None) -> str:
    lines = [
        "| scenario | server | req/s | p50 ms | p99 ms | errors | peak RSS MB | ours / iipsrv |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, results in rows:
        ours, cpp = results["ours"], results.get("iipsrv")
        ratio = f"**{ours.rps / cpp.rps:.2f}×**" if ours and cpp and cpp.rps else "n/a"
        for label, result in (("iipsrv-py", ours), ("iipsrv 1.1", cpp)):
            if result is None:
                lines.append(f"| {name} | {label} | not supported | | | | | |")
                continue
            lines.append(
                f"| {name} | {label} | {result.rps:,.0f} | {result.p50:.2f} | {result.p99:.2f} | "
                f"{result.errors} | {result.rss:.0f} | {ratio if label == 'iipsrv-py' else ''} |"
            )
    if cold is not None:
        results, dropped = cold
        note = "server restarted, image not yet opened, its pages dropped" if dropped else "pages NOT dropped"
        ours, cpp = results["ours"], results["iipsrv"]
        for label, result in (("iipsrv-py", ours), ("iipsrv 1.1", cpp)):
            ratio = f"**{cpp.p50 / ours.p50:.2f}×** (latency)" if label == "iipsrv-py" else ""
            lines.append(
                f"| 5. cold first tile ({note}; median / max of {result.requests}) | {label} | | "
                f"{result.p50:.1f} | {result.p99:.1f} | 0 | {result.rss:.0f} | {ratio} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small images, 2 s per scenario (proves the script works)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="worker processes of each server")
    parser.add_argument("--duration", type=float, help="seconds of load per scenario and server (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent client connections")
    parser.add_argument("--images", default=os.path.join(ROOT, ".bench"), help="where benchmark images are kept")
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--only", help="comma-separated scenario numbers to run (e.g. 1,3b,5)")
    args = parser.parse_args()
    duration = args.duration or (2.0 if args.quick else 10.0)
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
        Scenario("4. metadata: info.json and OBJ", metadata_urls(wanted), warm=True),
    ]
    only = set(args.only.split(",")) if args.only else None
    if only is not None:
        scenarios = [s for s in scenarios if s.name.split(".")[0] in only]
    workdir = tempfile.mkdtemp(prefix="iipbench-")
    env = {"FILESYSTEM_PREFIX": args.images.rstrip("/") + "/", "VERBOSITY": "0", "MAX_IMAGE_CACHE_SIZE": str(CACHE_MB)}
    ours = Server("ours", os.path.join(workdir, "ours.sock"), env, args.workers)
    cpp = Server("iipsrv", os.path.join(workdir, "cpp.sock"), env, args.workers)
    rows: list[tuple[str, dict[str, Result | None]]] = []
    try:
        ours.start()
        cpp.start()
        with nginx(workdir, ours.socket_path, cpp.socket_path, args.workers) as (port_ours, port_cpp):
            pairs = {"ours": (ours, port_ours), "iipsrv": (cpp, port_cpp)}
            for scenario in scenarios:
                print(f"running {scenario.name} ...", file=sys.stderr, flush=True)
                results: dict[str, Result | None] = {}
                for name, (server, port) in pairs.items():
                    if name == "iipsrv" and not scenario.cpp:
                        results[name] = None
                        continue
                    status, _ = fetch(port, scenario.urls[0])
                    if status != 200:
                        raise RuntimeError(f"{name} answers {status} to {scenario.urls[0]}")
                    if scenario.warm:
                        warm(port, scenario.urls)
                    result = run_wrk(port, scenario.urls, workdir, duration, args.connections, once=not scenario.warm)
                    result.rss = server.peak_rss_mb()
                    results[name] = result
                rows.append((scenario.name, results))
            cold = None
            if only is None or "5" in only:
                print("running 5. cold first tiles ...", file=sys.stderr, flush=True)
                cold_urls = tile_urls(big, 12, random.Random(5))
                warm_up = f"{PATH}?FIF={lossless.name}&JTL=0,0"
                cold = cold_tiles(pairs, cold_urls, warm_up, 3 if args.quick else 9, args.images)
    finally:
        ours.stop()
        cpp.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report = table(rows, cold)
    settings = (
        f"Workers: {args.workers} per server (iipsrv-py --workers {args.workers}; "
        f"spawn-fcgi -F {args.workers} iipsrv). "
        f"MAX_IMAGE_CACHE_SIZE={CACHE_MB} MB for both; iipsrv-py also keeps whole responses in that budget, "
        "revalidated by a stat on every request. nginx: same process, worker_processes "
        f"{args.workers}; unix sockets; keep-alive FastCGI connections for iipsrv-py only (iipsrv cannot use them). "
        f"wrk: 2 threads, {args.connections} connections, {duration:g} s per run; URLs shuffled over "
        f"{counts[0]} tiles / {counts[1]} regions; warm scenarios request every URL once first."
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
