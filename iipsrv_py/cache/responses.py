"""Whole responses in the worker cache, under the one key, and a shortcut to them from request text.

A response is stored under its key (``keys.cache_key``): any request that plans to the same
bytes with the same headers finds it there after parsing and planning.  A warm tile would
still pay for that parse and plan, so the exact request text (path, query, and the request
headers a response can depend on: Host, Accept, HTTPS, X-IIIF-ID) also maps to the key it
produced last time, with the identities of the images it used.  A hit through that shortcut is
revalidated exactly as a fresh request revalidates its image — each identifier resolved again
inside the root and the file stat'ed — so a replaced file or a retargeted link is never answered
from here.  Conditional requests and anything but GET/HEAD take the normal path.  The router
consults it only after the signed-URL check (``auth.py``): a remembered answer is never a way
around an expired or missing signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import metrics
from ..model import SourceIdentity
from .store import WorkerCache

_CONDITIONAL = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE")
_ENTRY_OVERHEAD = 256  # bytes of Python objects around an entry, roughly


@dataclass(frozen=True)
class CachedResponse:
    status: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def size(self) -> int:
        return len(self.body) + 64 * (len(self.headers) + 4)


@dataclass(frozen=True)
class Shortcut:
    key: str
    sources: tuple[tuple[str, SourceIdentity], ...]  # (identifier, identity) of each image used
    protocol: str  # what the request was, for its metrics


def request_text(environ: dict[str, Any]) -> tuple[str, ...] | None:
    """What identifies a request for the shortcut, or None when it must take the normal path."""
    if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
        return None
    if any(name in environ for name in _CONDITIONAL):
        return None
    get = environ.get
    return (
        "alias",
        get("REQUEST_URI", ""),
        get("PATH_INFO", ""),
        get("QUERY_STRING", ""),
        # The request headers a response may depend on.
        get("HTTP_HOST", ""),
        get("HTTP_ACCEPT", ""),
        get("HTTPS", ""),
        get("HTTP_X_IIIF_ID", ""),
    )


class ResponseCache:
    def __init__(self, store: WorkerCache) -> None:
        self.store = store

    def get(self, key: str) -> CachedResponse | None:
        entry = self.store.get(("resp", key))
        found = entry if isinstance(entry, CachedResponse) else None
        metrics.lookup("response", found is not None)
        return found

    def put(self, key: str, response: CachedResponse) -> None:
        self.store.put(("resp", key), response, response.size)

    def shortcut(self, text: tuple[str, ...]) -> Shortcut | None:
        entry = self.store.get(text)
        found = entry if isinstance(entry, Shortcut) else None
        metrics.lookup("shortcut", found is not None)
        return found

    def remember_shortcut(self, text: tuple[str, ...], shortcut: Shortcut) -> None:
        self.store.put(text, shortcut, sum(map(len, text)) + _ENTRY_OVERHEAD)
