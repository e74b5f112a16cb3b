"""The per-request time limit (REQUEST_TIMEOUT), in two parts.

* In the worker, cooperatively: the application starts a deadline with each request and the
  pipeline checks it between units of work (before decoding a tile, between stages), so a
  request past its time fails alone with 503 and leaves every cache consistent.  An exception
  thrown into arbitrary code by a signal could not promise that.
* In the supervisor, by force: a request stuck inside one call that never returns to a check
  (a decoder, a storage read that ignores its timeout) cannot be stopped from inside.  Each
  worker publishes when its current request started in a board of shared memory made before
  the fork; the supervisor kills a worker whose request has run past ``hard_limit`` and starts
  another.  Only that request is lost.

A worker runs one request at a time (the native responder, flup and gunicorn's sync workers
all do), so one deadline per process is the whole state.
"""

from __future__ import annotations

import mmap
import struct
import time

from .errors import RequestTimeout

_SLOT = struct.Struct("d")

_timeout = 0.0
_deadline = 0.0  # time.monotonic() past which the current request fails; 0 = none
_board: mmap.mmap | None = None
_offset = 0


def hard_limit(timeout: float) -> float:
    """Seconds after which the supervisor kills a worker stuck in one request: the timeout
    plus as much again (at least a second), so a request that reaches a check in time always
    fails by itself first."""
    return timeout + max(timeout, 1.0)


def start(timeout: float) -> None:
    """A request begins: it may run ``timeout`` seconds (0: no limit)."""
    global _deadline, _timeout
    now = time.monotonic()
    _timeout = timeout
    _deadline = now + timeout if timeout > 0 else 0.0
    if _board is not None and timeout > 0:
        _SLOT.pack_into(_board, _offset, now)


def finish() -> None:
    global _deadline
    _deadline = 0.0
    if _board is not None:
        _SLOT.pack_into(_board, _offset, 0.0)


def check() -> None:
    """Raise RequestTimeout (503) once the current request has run out of time."""
    if _deadline and time.monotonic() > _deadline:
        raise RequestTimeout("request took too long", f"over REQUEST_TIMEOUT={_timeout:g}s")


class Board:
    """The supervisor's view: one slot per worker, holding when its current request started
    (CLOCK_MONOTONIC is the same clock in every process) or 0 while it is idle."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.memory = mmap.mmap(-1, _SLOT.size * slots)  # anonymous and shared across fork()

    def attach(self, slot: int) -> None:
        """In a new worker: publish this process's requests in ``slot``."""
        global _board, _offset
        _board, _offset = self.memory, slot * _SLOT.size
        _SLOT.pack_into(self.memory, _offset, 0.0)

    def clear(self, slot: int) -> None:
        _SLOT.pack_into(self.memory, slot * _SLOT.size, 0.0)

    def running_for(self, slot: int, now: float) -> float:
        """Seconds the worker in ``slot`` has been in its current request (0 when idle)."""
        started = _SLOT.unpack_from(self.memory, slot * _SLOT.size)[0]
        return now - started if started else 0.0
