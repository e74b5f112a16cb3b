"""Prometheus metrics (``GET /metrics``), counted across the pre-forked workers.

prometheus_client's multiprocess mode keeps each process's values in memory-mapped files of one
directory and sums them when ``/metrics`` is read, whichever worker answers.  Writing those files
costs microseconds per value, a tenth of a warm tile's time, so a worker tallies in plain
dictionaries and a background thread writes the changes every ``FLUSH_INTERVAL`` (and at once
before this worker answers ``/metrics`` itself, and when it stops).  A worker killed with
SIGKILL loses at most that interval of counts; what it wrote before stays in the sums.

The directory is METRICS_DIR (or Prometheus' own PROMETHEUS_MULTIPROC_DIR); unset, each pool
makes a private temporary one, which is enough when one pool serves (process managers that
start independent processes, like mod_fcgid, need a shared METRICS_DIR to add them up).
prometheus_client reads the directory from the environment when it is first imported, so
``setup`` runs before anything imports it, and nothing here imports it at module level.

Metrics: requests by protocol and status, their duration (histogram) and response bytes by
protocol; cache lookups per layer (``shortcut``: request text to an earlier response,
``response``: a worker's whole responses, ``memcached``, ``pixels``: decoded tiles,
``metadata``: opened images, ``s3``: object blocks) and their result; S3 requests by operation and bytes received;
worker restarts by reason (``exited``, ``timeout``).  Requests answered during warm-up are not
counted.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

from .settings import Settings

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0  # seconds
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PATH = "/metrics"
# The classic text format every Prometheus version reads (these names need nothing newer).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ENV = "PROMETHEUS_MULTIPROC_DIR"

# name -> (kind, help, label names); "_total" is added to counters by the exposition.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "iipsrv_requests": ("counter", "Requests answered, by protocol and HTTP status.", ("protocol", "status")),
    "iipsrv_request_duration_seconds": ("histogram", "Time to answer a request, by protocol.", ("protocol",)),
    "iipsrv_response_bytes": ("counter", "Response body bytes sent, by protocol.", ("protocol",)),
    "iipsrv_cache_lookups": ("counter", "Cache lookups by layer and result (hit or miss).", ("layer", "result")),
    "iipsrv_s3_requests": ("counter", "Requests made to the object store, by operation.", ("operation",)),
    "iipsrv_s3_received_bytes": ("counter", "Bytes received from the object store.", ()),
    "iipsrv_worker_restarts": ("counter", "Workers replaced by the supervisor, by reason.", ("reason",)),
}


class _Tally:
    """This process's counts since start, and what of them the files already hold.

    The request path only adds to these dictionaries, without a lock: each worker answers one
    request at a time, so its main thread is their only writer (a storage thread's rare counts
    go through ``counts``, under the lock).  The flushing thread copies them and writes what
    grew since its last copy; a copy taken halfway through an update is only a partial total,
    completed by the next one."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], list[float]] = {}  # (protocol, status) -> [count, bytes]
        self.hist: dict[str, list[float]] = {}  # protocol -> bucket counts (the last but one +Inf) + [sum]
        self.lookups: dict[tuple[str, bool], int] = {}  # (layer, hit) -> count
        self.lock = threading.Lock()
        self.counts: dict[tuple[str, tuple[str, ...]], float] = {}  # anything else, under the lock
        self.written: dict[tuple[str, tuple[str, ...]], float] = {}  # series -> total in the files
        self.written_hist: dict[str, list[float]] = {}
        self.flushing = threading.Lock()
        self.thread: threading.Thread | None = None
        self.suspended = 0


_enabled = False
_multiprocess = False
_tally = _Tally()
_families: dict[str, Any] = {}


def _reset_in_child() -> None:
    # A forked worker starts counting from zero: what the supervisor holds is the supervisor's.
    global _tally
    _tally = _Tally()


os.register_at_fork(after_in_child=_reset_in_child)


def setup(settings: Settings) -> None:
    """Turn metrics on for this process and the workers it forks (before they fork)."""
    global _enabled, _multiprocess
    _enabled = settings.metrics
    if not _enabled:
        return
    directory = settings.metrics_dir
    if not directory:
        directory = tempfile.mkdtemp(prefix="iipsrv_py-metrics-")
        owner = os.getpid()

        def remove() -> None:
            if os.getpid() == owner:  # never from a worker (they leave through os._exit anyway)
                shutil.rmtree(directory, ignore_errors=True)

        atexit.register(remove)
    else:
        os.makedirs(directory, exist_ok=True)
    os.environ[ENV] = directory
    _multiprocess = True


def enable_in_process() -> None:
    """Metrics in this process alone (tests, the debug mode): no files, no thread."""
    global _enabled
    _enabled = True


def _family(name: str) -> Any:
    family = _families.get(name)
    if family is None:
        import prometheus_client

        kind, text, labels = FAMILIES[name]
        if kind == "histogram":
            family = prometheus_client.Histogram(name, text, labels, buckets=DURATION_BUCKETS, registry=None)
        else:
            family = prometheus_client.Counter(name, text, labels, registry=None)
        _families[name] = family
    return family


# -- counting (cheap: a few dictionary updates) ----------------------------------------------------


def count(name: str, labels: tuple[str, ...] = (), amount: float = 1.0) -> None:
    tally = _tally
    if not _enabled or tally.suspended:
        return
    key = (name, labels)
    with tally.lock:
        tally.counts[key] = tally.counts.get(key, 0.0) + amount
    if tally.thread is None and _multiprocess:
        _start_flusher(tally)


def observe_request(protocol: str, status: int, size: int, seconds: float) -> None:
    """One answered request: its count, duration and bytes."""
    tally = _tally
    if not _enabled or tally.suspended:
        return
    record = tally.requests.get((protocol, status))
    if record is None:
        record = tally.requests[(protocol, status)] = [0.0, 0.0]
    record[0] += 1
    record[1] += size
    buckets = tally.hist.get(protocol)
    if buckets is None:
        buckets = tally.hist[protocol] = [0.0] * (len(DURATION_BUCKETS) + 2)
    buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1  # le: the first bound >= seconds
    buckets[-1] += seconds
    if tally.thread is None and _multiprocess:
        _start_flusher(tally)


def lookup(layer: str, hit: bool) -> None:
    """A cache lookup of ``layer`` and whether it found what it looked for."""
    tally = _tally
    if _enabled and not tally.suspended:
        lookups = tally.lookups
        lookups[(layer, hit)] = lookups.get((layer, hit), 0) + 1


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """Nothing counted inside (warm-up requests are not clients')."""
    _tally.suspended += 1
    try:
        yield
    finally:
        _tally.suspended -= 1


# -- writing the files ------------------------------------------------------------------------------


def _start_flusher(tally: _Tally) -> None:
    tally.thread = threading.Thread(target=_flush_loop, args=(tally,), name="metrics", daemon=True)
    tally.thread.start()


def _flush_loop(tally: _Tally) -> None:
    while tally is _tally:
        time.sleep(FLUSH_INTERVAL)
        try:
            flush()
        except Exception:  # metrics never fail a worker
            log.warning("writing metrics failed", exc_info=True)


def _totals(tally: _Tally) -> dict[tuple[str, tuple[str, ...]], float]:
    """Every counter series of this process with its total so far."""
    # list(d.items()) copies in one step: other threads may add keys meanwhile.
    totals: dict[tuple[str, tuple[str, ...]], float] = {}
    for (protocol, status), (requests, sent) in list(tally.requests.items()):
        totals[("iipsrv_requests", (protocol, str(status)))] = requests
        key = ("iipsrv_response_bytes", (protocol,))
        totals[key] = totals.get(key, 0.0) + sent
    for (layer, hit), found in list(tally.lookups.items()):
        totals[("iipsrv_cache_lookups", (layer, "hit" if hit else "miss"))] = found
    with tally.lock:
        totals.update(tally.counts)
    return totals


def flush() -> None:
    """Add what was counted since the last flush to this process's values."""
    tally = _tally
    with tally.flushing:
        for key, total in _totals(tally).items():
            delta = total - tally.written.get(key, 0.0)
            if delta:
                name, labels = key
                family = _family(name)
                (family.labels(*labels) if labels else family).inc(delta)
                tally.written[key] = total
        for protocol, counted in list(tally.hist.items()):
            buckets = list(counted)
            written = tally.written_hist.get(protocol) or [0.0] * len(buckets)
            if buckets == written:
                continue
            child = _family("iipsrv_request_duration_seconds").labels(protocol)
            # prometheus_client has no public call to add many observations at once; its
            # histogram keeps one value per bucket and one for the sum (a test reads the
            # exposition back, so a change of these internals fails loudly).
            for i in range(len(buckets) - 1):
                if buckets[i] != written[i]:
                    child._buckets[i].inc(buckets[i] - written[i])
            child._sum.inc(buckets[-1] - written[-1])
            tally.written_hist[protocol] = buckets


def count_now(name: str, labels: tuple[str, ...] = ()) -> None:
    """Count and write at once (the supervisor's rare events: it has no flushing thread)."""
    if not _enabled:
        return
    try:
        _family(name).labels(*labels).inc()
    except Exception:
        log.warning("writing metrics failed", exc_info=True)


def exposition() -> bytes:
    """The Prometheus text format of every process's values (this one's flushed first)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    flush()
    registry = CollectorRegistry()
    if _multiprocess:
        MultiProcessCollector(registry)
    else:
        for name in FAMILIES:
            registry.register(_family(name))
    return bytes(generate_latest(registry))


def enabled() -> bool:
    return _enabled
