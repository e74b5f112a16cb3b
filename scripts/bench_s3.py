"""``scripts/bench --s3``: the same image served from an S3-compatible store and from the local disk.

iipsrv-py pools (native engine, the same worker count and cache settings) behind the same
nginx: one reads the benchmark pyramid from the local disk, the other from a bucket of moto's
standalone server on 127.0.0.1, through a counting proxy that records every request the pool
makes to the store; and the same two again with one memcached shared by their workers.
Scenarios: warm tiles (scenario 1's URLs, every one answered once before) and the cold first
tile (the pool restarted, so its block and response caches are empty; for the local pool the
file's pages are dropped too), each with the store requests it cost.  moto keeps
objects in memory on loopback: the figures show what the range reader, its block cache and the
request budget cost, not a network's latency.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
from dataclasses import dataclass

import bench

sys.path.insert(0, bench.ROOT)

from tests import s3_store  # the test suite's moto server and counting proxy
from tests.integration import memcached_server

BUCKET = "bench"
TRIALS = 9


@dataclass
class Row:
    scenario: str
    storage: str
    rps: str
    p50: float
    p99: float
    errors: int
    gets: str
    heads: str
    mb: str


def run(args: object, duration: float, workers: int, connections: int, images_dir: str) -> str:
    wanted = bench.images(bool(getattr(args, "quick", False)))
    bench.make_images(images_dir, wanted)
    big, lossless, _ = wanted
    workdir = tempfile.mkdtemp(prefix="iipbench-s3-")
    s3_store.use_dummy_credentials()
    print("starting moto and uploading the images ...", file=sys.stderr, flush=True)
    store = s3_store.MotoServer(workdir)
    proxy = s3_store.CountingProxy(store.port)
    rows: list[Row] = []
    pools: list[bench.Server] = []
    shared: memcached_server.Memcached | None = None
    try:
        shared = memcached_server.Memcached(os.path.join(workdir, "memcached"), memory_mb=512)
        s3_store.upload(store, BUCKET, {img.name: os.path.join(images_dir, img.name) for img in (big, lossless)})
        common = {"VERBOSITY": "0", "MAX_IMAGE_CACHE_SIZE": str(bench.CACHE_MB)}
        local = bench.Server(
            "native", os.path.join(workdir, "local.sock"), {**common, "FILESYSTEM_PREFIX": images_dir + "/"}, workers
        )
        remote_env = {
            **common,
            **s3_store.CREDENTIALS,
            "FILESYSTEM_PREFIX": f"s3://{BUCKET}/",
            "S3_ENDPOINT": proxy.endpoint,
        }
        remote = bench.Server("native", os.path.join(workdir, "s3.sock"), remote_env, workers)
        # The same two pools sharing one memcached: a response one worker rendered is answered
        # by the other without reading the store again (a pool's caches are per worker).
        with_memcached = {"MEMCACHED_SERVERS": shared.address}
        local_mc = bench.Server(
            "native",
            os.path.join(workdir, "local-mc.sock"),
            {**common, **with_memcached, "FILESYSTEM_PREFIX": images_dir + "/"},
            workers,
        )
        remote_mc = bench.Server(
            "native", os.path.join(workdir, "s3-mc.sock"), {**remote_env, **with_memcached}, workers
        )
        fronts = {
            "local disk": bench.Front("local", local, keepalive=bench.KEEPALIVE),
            "S3 (moto)": bench.Front("s3", remote, keepalive=bench.KEEPALIVE),
            "local disk + memcached": bench.Front("localmc", local_mc, keepalive=bench.KEEPALIVE),
            "S3 (moto) + memcached": bench.Front("s3mc", remote_mc, keepalive=bench.KEEPALIVE),
        }
        for server in (local, remote, local_mc, remote_mc):
            pools.append(server)
            server.start()
        with bench.nginx(workdir, list(fronts.values()), workers):
            urls = bench.tile_urls(big, 3000 if duration >= 5 else 300, random.Random(20261202))
            print("running warm tiles ...", file=sys.stderr, flush=True)
            for name, front in fronts.items():
                bench.warm(front.port, urls)
                proxy.reset()
                result = bench.run_wrk(front.port, urls, workdir, duration, connections, once=False)
                counts = _counts(proxy, name)
                rows.append(
                    Row(
                        "warm JPEG tiles, IIIF URLs",
                        name,
                        f"{result.rps:,.0f}",
                        result.p50,
                        result.p99,
                        result.errors,
                        *counts,
                    )
                )
            print("running cold first tiles ...", file=sys.stderr, flush=True)
            cold_urls = bench.tile_urls(big, TRIALS, random.Random(5))
            warm_up = f"{bench.PATH}?FIF={lossless.name}&JTL=0,0"
            for name, front in fronts.items():
                if "memcached" in name:
                    continue  # memcached would answer the cold tile: these pools are for warm tiles
                samples, gets, heads, nbytes = [], [], [], []
                for url in cold_urls:
                    front.server.restart()
                    bench.fetch(front.port, warm_up)
                    bench.drop_file_pages(images_dir)
                    proxy.reset()
                    status, elapsed = bench.fetch(front.port, url)
                    if status != 200:
                        raise RuntimeError(f"{name}: cold tile answered {status}")
                    samples.append(elapsed)
                    gets.append(len(proxy.gets()))
                    heads.append(len(proxy.heads()))
                    nbytes.append(sum(end - start for start, end in (g.span() for g in proxy.gets())))
                remote_name = name.startswith("S3")
                rows.append(
                    Row(
                        f"cold first tile (pool restarted; median / max of {TRIALS})",
                        name,
                        "",
                        statistics.median(samples),
                        max(samples),
                        0,
                        f"{statistics.median(gets):g} ({min(gets)}–{max(gets)})" if remote_name else "",
                        f"{statistics.median(heads):g}" if remote_name else "",
                        f"{statistics.median(nbytes) / 1e6:.2f}" if remote_name else "",
                    )
                )
    finally:
        for server in pools:
            server.stop()
        proxy.close()
        store.stop()
        if shared is not None:
            shared.stop()
    lines = [
        "| scenario | storage | req/s | p50 ms | p99 (max) ms | errors | GETs | HEADs | MB read |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.scenario} | {row.storage} | {row.rps} | {row.p50:.2f} | {row.p99:.2f} | {row.errors} | "
            f"{row.gets} | {row.heads} | {row.mb} |"
        )
    settings = (
        f"\n\nImage {big.name}. Workers: {workers} per pool (iipsrv-py --engine native), MAX_IMAGE_CACHE_SIZE="
        f"{bench.CACHE_MB} MB, S3 defaults (256 KiB blocks, S3_CACHE_SIZE 64 MB, identity TTL 5 s); "
        "rows marked + memcached share one memcached (512 MB) between the pool's workers, the others have none; "
        f"nginx keepalive {bench.KEEPALIVE}; wrk 2 threads, {connections} connections, {duration:g} s. "
        "Warm rows count the store requests made during the timed run, after every URL was answered once "
        "through nginx (by one of the pool's workers: without memcached the other worker reads the tile "
        "from the store the first time it is asked for it); "
        "cold rows count those of the one cold tile after a warm-up request on another image."
    )
    return "\n".join(lines) + settings


def _counts(proxy: s3_store.CountingProxy, name: str) -> tuple[str, str, str]:
    if not name.startswith("S3"):
        return "", "", ""
    gets = proxy.gets()
    nbytes = sum(end - start for start, end in (g.span() for g in gets))
    return str(len(gets)), str(len(proxy.heads())), f"{nbytes / 1e6:.2f}"
