"""The Response value, validators (ETag, Last-Modified) and conditional GET."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime

from .model import SourceIdentity

PLAIN_TEXT = "text/plain; charset=utf-8"


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = PLAIN_TEXT
    headers: list[tuple[str, str]] = field(default_factory=list)
    last_modified: float | None = None  # source mtime, seconds since the epoch
    etag: str | None = None
    # None: CACHE_CONTROL from the settings (successful responses) or no-cache (errors).
    cache_control: str | None = None


def etag_for(identity: SourceIdentity, canonical_request: str, fingerprint: str) -> str:
    """A strong ETag: the source's identity, the canonical request and the settings."""
    text = f"{identity.token}\0{canonical_request}\0{fingerprint}"
    # surrogatepass: a canonical request can keep client text verbatim (an ignored JTLS), and
    # input read with surrogateescape may hold any lone surrogate.
    return '"' + hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest() + '"'


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
