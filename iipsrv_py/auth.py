"""Signed URLs: HMAC-SHA256 over the request path and its canonical query (WSI Streamer's scheme).

With ``AUTH_SECRET`` set, every request but ``GET /health`` carries ``exp`` (Unix seconds) and
``sig`` = lowercase hex HMAC-SHA256(secret, message), where the message is the path as the client
sent it (still percent-encoded) + ``?`` + the canonical query: every parameter but ``sig``,
percent-decoded (``+`` is a space), sorted by name then value, ``name=value`` joined by ``&``.

A viewer page may instead hand its tile requests a per-slide token ``vt`` =
hex HMAC-SHA256(secret, ``viewer:{slide_id}:{exp}``) with the same ``exp``; the router accepts
it only on routes it names a slide for (``slide_id``), and only for that slide.

Everything here is a pure function: the router passes the settings, the request and the time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, unquote_plus

from .errors import SignatureError
from .protocols.rest import ASSETS, HEALTH
from .settings import Settings

# Query parameters that belong to signing, never to the protocols.
AUTH_PARAMS = frozenset(("exp", "sig", "vt"))
# GET/HEAD of these paths need no signature.
EXEMPT_PATHS = frozenset((HEALTH,))
# The viewer's static files (its script, style and OpenSeadragon): the same for everyone, no
# slide data; the page that loads them and every slide request are signed.
EXEMPT_PREFIX = ASSETS

_HEX_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")
_EXPIRY = re.compile(r"[0-9]{1,19}")  # Unix seconds; bounded so int() stays cheap
# Characters left as they are in a query value built by ``signed_query``: the protocols split on
# "&" only and read "," ":" "/" literally (IIP's RGN, IIIF= paths); "+" must be escaped because
# the canonical form reads it as a space.
_QUERY_SAFE = "/:,;@!$'()*~="


def parse_query(query_string: str) -> list[tuple[str, str]]:
    """The query's parameters, percent-decoded (``+`` = space), in order; a name without ``=``
    has the empty value."""
    return parse_qsl(query_string, keep_blank_values=True, errors="replace")


def canonical_query(query_string: str) -> str:
    """Every parameter but ``sig``, decoded, sorted by name then value, ``k=v`` joined by ``&``."""
    pairs = sorted((k, v) for k, v in parse_query(query_string) if k != "sig")
    return "&".join(f"{k}={v}" for k, v in pairs)


def signing_message(path: str, query_string: str) -> str:
    """What is signed: the path as sent (undecoded) + ``?`` + the canonical query."""
    return f"{path}?{canonical_query(query_string)}"


def _hmac_hex(secret: str, message: str) -> str:
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def signature(secret: str, path: str, query_string: str) -> str:
    """The ``sig`` of a request whose query (with ``exp``, without ``sig``) is ``query_string``."""
    return _hmac_hex(secret, signing_message(path, query_string))


def viewer_token(secret: str, slide_id: str, exp: int) -> str:
    """The ``vt`` a viewer page gives its tile requests for one slide until ``exp``."""
    return _hmac_hex(secret, f"viewer:{slide_id}:{exp}")


def signed_query(secret: str, path: str, params: Iterable[tuple[str, str]], exp: int) -> tuple[str, str]:
    """(query string, sig) of a signed request: ``params`` in their order, then ``exp`` and ``sig``.

    The order is kept because IIP commands run left to right; the signature does not depend on it.
    """
    pairs = [(k, v) for k, v in params if k not in ("exp", "sig")] + [("exp", str(exp))]
    query = "&".join(f"{quote(k, safe=_QUERY_SAFE)}={quote(v, safe=_QUERY_SAFE)}" for k, v in pairs)
    sig = signature(secret, path, query)
    return f"{query}&sig={sig}", sig


def strip_auth_params(query_string: str) -> str:
    """The query without its ``exp``, ``sig`` and ``vt`` parameters, the rest byte for byte as sent.

    The router gives the protocols this, so that signing parameters are no IIP commands and no part
    of any cache key: signed URLs with different expiries share one cached rendering.
    """
    kept = [
        token
        for token in query_string.split("&")
        if unquote_plus(token.partition("=")[0], errors="replace") not in AUTH_PARAMS
    ]
    return "&".join(kept)


def _single(params: list[tuple[str, str]], name: str, code: str, what: str) -> str | None:
    values = [v for k, v in params if k == name]
    if len(values) > 1:
        raise SignatureError(code, f"{what} must be given once")
    return values[0] if values else None


def authorize(settings: Settings, method: str, path: str, query_string: str, slide_id: str | None, now: float) -> None:
    """Raise ``SignatureError`` unless the request may be served (always, when auth is off).

    ``path`` is the request path as sent (percent-encoded), ``query_string`` the raw query (or a
    POSTed form), ``slide_id`` the slide of a route a viewer token may open (None elsewhere).
    """
    secret = settings.auth_secret
    if not secret or (method in ("GET", "HEAD") and (path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIX))):
        return
    params = parse_query(query_string)
    sig = _single(params, "sig", "invalid_signature_format", "sig")
    exp_text = _single(params, "exp", "invalid_expiry_format", "exp")
    token = _single(params, "vt", "invalid_signature_format", "vt") if sig is None else None
    if sig is None and (token is None or slide_id is None):
        raise SignatureError("missing_signature", "this URL must be signed (sig and exp parameters)")
    given = sig if sig is not None else token
    assert given is not None
    if not _HEX_SIGNATURE.fullmatch(given):
        raise SignatureError("invalid_signature_format", "the signature must be 64 hexadecimal characters")
    if exp_text is None:
        raise SignatureError("missing_expiry", "the exp parameter (Unix seconds) is missing")
    if not _EXPIRY.fullmatch(exp_text):
        raise SignatureError("invalid_expiry_format", "exp must be an integer (Unix seconds)")
    exp = int(exp_text)
    if now > exp:
        raise SignatureError("signature_expired", "the signature has expired")
    if sig is not None:
        expected = signature(secret, path, query_string)
    else:
        assert slide_id is not None
        expected = viewer_token(secret, slide_id, exp)
    if not hmac.compare_digest(bytes.fromhex(given), bytes.fromhex(expected)):
        raise SignatureError("invalid_signature", "the signature does not match this URL")
