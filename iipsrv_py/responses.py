"""The Response value, validators (ETag, Last-Modified) and conditional GET."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime

from .cache.responses import CachedResponse

PLAIN_TEXT = "text/plain; charset=utf-8"


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = PLAIN_TEXT
    headers: list[tuple[str, str]] = field(default_factory=list)
    last_modified: float | None = None  # source mtime, seconds since the epoch
    # The one cache key (cache/keys.py): the ETag, and where the response is kept for reuse.
    key: str | None = None
    # None: CACHE_CONTROL from the settings (successful responses) or no-cache (errors).
    cache_control: str | None = None
    # A response found in the cache under ``key``: sent exactly as it was stored.
    cached: CachedResponse | None = None
    # Which layer answered, for the access log: "worker" or "memcached" (a cached copy),
    # "rendered" (built for this request); "" when no cache was consulted.
    layer: str = ""
    # Headers about this answer alone (whether a cache answered it): sent, never stored with it.
    live_headers: list[tuple[str, str]] = field(default_factory=list)


def http_date(seconds: float) -> str:
    return formatdate(int(seconds), usegmt=True)


def _parse_http_date(text: str) -> float | None:
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def not_modified(if_none_match: str | None, if_modified_since: str | None, etag: str, mtime: float) -> bool:
    """RFC 9110 section 13.2.2: If-None-Match decides when present, else If-Modified-Since."""
    if if_none_match is not None:
        candidates = [tag.strip() for tag in if_none_match.split(",")]
        # GET uses the weak comparison: W/"x" matches "x".
        return any(tag == "*" or tag.removeprefix("W/") == etag for tag in candidates)
    if if_modified_since is not None:
        since = _parse_http_date(if_modified_since)
        # A date in the future is invalid and must be ignored.
        if since is not None and since <= time.time():
            return int(mtime) <= since
    return False
