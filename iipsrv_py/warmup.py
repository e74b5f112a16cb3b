"""Work done before any client waits: once in the supervisor, and once in each new worker.

Codec libraries load their shared objects on first use, tifffile builds its machinery lazily,
and a freshly forked worker copies every memory page it first writes to (reference counts
make even reading Python objects a write).  Measured on a cold first tile, that was most of
the latency.  So:

* the supervisor runs a few throwaway requests on a small sample image (a tile sent as
  stored, a resized rendering, info.json, OBJ, a missing image) through a throwaway
  application, then ``gc.freeze()``s what exists so that collections in the workers do not
  write to those pages;
* each worker runs the same requests right after the fork, before it accepts connections, so
  the page copying happens at start-up rather than on a client's first request.

The throwaway application has its own caches and reads only the sample image in a private
temporary directory.  Nothing here starts a thread in the supervisor: libvips' thread pool
must be created in each worker, after the fork.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tifffile

from . import metrics
from .fastcgi import Responder
from .settings import Settings

log = logging.getLogger(__name__)
# The path of the warm-up requests: iipsrv's, where an empty query is the banner page.
PATH = "/fcgi-bin/iipsrv.fcgi"

SAMPLE = "warm-up.tif"
# Requests that touch the paths real ones take (the workers' resize needs libvips, which is
# only used after the fork: see module docstring).
SUPERVISOR_REQUESTS = (
    "",
    f"FIF={SAMPLE}&OBJ=IIP,1.0&OBJ=Basic-info&OBJ=Resolutions",
    f"FIF={SAMPLE}&JTL=1,1",
    f"IIIF=/{SAMPLE}/info.json",
    f"IIIF=/{SAMPLE}/256,0,256,256/256,/0/default.jpg",
    "FIF=warm-up-no-such-image.tif&OBJ=Basic-info",
)
WORKER_REQUESTS = (*SUPERVISOR_REQUESTS, f"FIF={SAMPLE}&WID=200&CVT=jpeg", f"FIF={SAMPLE}&QLT=80&JTL=0,0")


def _write_sample(directory: str) -> None:
    y, x = np.mgrid[0:512, 0:512]
    pixels = np.dstack([x % 256, y % 256, (x + y) % 256]).astype(np.uint8)
    with tifffile.TiffWriter(os.path.join(directory, SAMPLE)) as tif:
        tif.write(pixels, tile=(256, 256), compression="jpeg", photometric="rgb")
        tif.write(pixels[::2, ::2], tile=(256, 256), compression="jpeg", photometric="rgb", subfiletype=1)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No warnings from the throwaway requests (the deliberate 404 is not worth a log line),
    and no metrics: they are no client's."""
    logging.disable(logging.WARNING)
    try:
        with metrics.suspended():
            yield
    finally:
        logging.disable(logging.NOTSET)


class WarmUp:
    """Throwaway requests on a sample image, with the real settings but another root."""

    def __init__(self, app_class: Callable[[Settings], Any], settings: Settings) -> None:
        self.app_class = app_class
        self.settings = settings
        self.directory: str | None = None

    def _run(self, queries: tuple[str, ...]) -> None:
        assert self.directory is not None
        # No memcached: the sample's renderings are of no use to anyone, and the supervisor
        # must not connect before it forks.
        settings = dataclasses.replace(
            self.settings, filesystem_prefix=self.directory + "/", filesystem_suffix="", memcached_servers=()
        )
        app = self.app_class(settings)
        with _quiet():
            for query in queries:
                environ: dict[str, Any] = {
                    "REQUEST_METHOD": "GET",
                    "REQUEST_URI": PATH,
                    "HTTP_HOST": "localhost",
                    "QUERY_STRING": query,
                    "wsgi.input": io.BytesIO(),
                }
                b"".join(app(environ, lambda status, headers, exc_info=None: None))

    def before_fork(self) -> None:
        """In the supervisor, before the first fork."""
        try:
            self.directory = tempfile.mkdtemp(prefix="iipsrv-py-warm-up-")
            _write_sample(self.directory)
            self._run(SUPERVISOR_REQUESTS)
        except Exception:
            log.exception("warm-up failed (the first requests will be slower)")
        gc.collect()
        gc.freeze()

    def in_worker(self) -> None:
        """In a new worker, before it accepts connections."""
        if self.directory is None or not os.path.isdir(self.directory):
            return
        try:
            self._run(WORKER_REQUESTS)
        except Exception:
            log.exception("worker warm-up failed (its first requests will be slower)")

    @staticmethod
    def rehearse_responder(responder: Responder) -> None:
        """The real worker's FastCGI path and application, on requests that need no image."""
        try:
            with _quiet():
                responder.rehearse(
                    [
                        {
                            "REQUEST_METHOD": "GET",
                            "QUERY_STRING": query,
                            "REQUEST_URI": f"{PATH}?{query}",
                            "HTTP_HOST": "x",
                        }
                        # Neither touches storage: this is the real application, whose storage
                        # may be a bucket, where a probe would cost requests at every start (at
                        # "/" an empty query is the slide list, which lists the storage).
                        for query in ("", "OBJ=Basic-info")
                    ]
                )
        except Exception:
            log.exception("worker warm-up failed (its first requests will be slower)")

    def clean_up(self) -> None:
        """In the supervisor, when the pool stops."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
