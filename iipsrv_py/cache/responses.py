"""Whole responses of this worker, reused for an identical request while the image is unchanged.

A warm tile otherwise still costs a parse, a plan, a cache lookup and header formatting on
every request.  Here the request itself is the key (path, query, and the headers a response
can depend on: Host, Accept, HTTPS, X-IIIF-ID), and a hit is revalidated exactly as a normal
request revalidates its image — the identifier is resolved again inside the root and the file
stat'ed — so a replaced file or a retargeted link is never answered from here.  Conditional
requests and anything but GET/HEAD take the normal path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..model import SourceIdentity

# Request headers a response may depend on (besides the path and query).
_VARYING = ("HTTP_HOST", "HTTP_ACCEPT", "HTTPS", "HTTP_X_IIIF_ID")
_CONDITIONAL = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE")


@dataclass(frozen=True)
class CachedResponse:
    status: str
    headers: list[tuple[str, str]]
    body: bytes
    sources: tuple[tuple[str, SourceIdentity], ...]  # (identifier, identity) of each image used

    @property
    def size(self) -> int:
        return len(self.body) + 64 * (len(self.headers) + 4)


def request_key(environ: dict[str, Any]) -> tuple[str, ...] | None:
    """The cache key of a request, or None when it must take the normal path."""
    if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
        return None
    if any(name in environ for name in _CONDITIONAL):
        return None
    return (
        "resp",
        environ.get("REQUEST_URI", ""),
        environ.get("PATH_INFO", ""),
        environ.get("QUERY_STRING", ""),
        *(environ.get(name, "") for name in _VARYING),
    )
