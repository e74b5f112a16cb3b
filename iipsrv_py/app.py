"""The WSGI application: method checks, request intake, dispatch, the one error handler and
the headers every response carries.

Front ends (FastCGI pool, plain HTTP, debug stdin) only differ in how the environ arrives.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, unquote

from . import SERVER_SOFTWARE, __version__
from .cache.responses import CachedResponse, request_key
from .catalog import Catalog
from .errors import IIPError, ServerError, TooLarge, status_line
from .handlers import iip as iip_handler
from .handlers.context import ClientRequest, RequestContext
from .pipeline import Pipeline
from .protocols import iip as iip_protocol
from .responses import PLAIN_TEXT, Response, http_date
from .settings import Settings
from .storage.local import LocalStorage

log = logging.getLogger("iipsrv_py")

ALLOWED_METHODS = "GET, HEAD, POST, OPTIONS"
MAX_POST_BODY = 64 * 1024
StartResponse = Callable[..., Any]


class Application:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = Catalog(
            LocalStorage(settings.filesystem_prefix, settings.filesystem_suffix),
            settings.max_metadata_cache,
            settings.filename_pattern,
        )
        self.pipeline = Pipeline(settings)
        self._cors = (
            [
                ("Access-Control-Allow-Origin", settings.cors),
                ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
                ("Access-Control-Allow-Headers", "Accept, Content-Type, X-Requested-With, If-Modified-Since"),
                ("Access-Control-Max-Age", "86400"),
            ]
            if settings.cors
            else []
        )
        self._caches_dirty = False

    # -- caches -------------------------------------------------------------------------------

    def request_cache_clear(self) -> None:
        """Safe to call from a signal handler: the caches are emptied before the next request."""
        self._caches_dirty = True

    def clear_caches(self) -> None:
        self.catalog.clear()
        self.pipeline.clear()
        self._caches_dirty = False
        log.info("caches cleared")

    # -- WSGI ---------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        if self._caches_dirty:
            self.clear_caches()
        method = environ.get("REQUEST_METHOD", "GET").upper()
        key = request_key(environ)
        if key is not None:
            hit = self.pipeline.cache.get(key)
            if isinstance(hit, CachedResponse) and self.catalog.still_current(hit.sources):
                start_response(hit.status, hit.headers)
                self._log(method, environ, 200, len(hit.body), started)
                return [b""] if method == "HEAD" else [hit.body]
        self.catalog.begin_request()
        try:
            response = self._dispatch(method, environ)
        except ServerError as exc:
            response = self._error(exc, environ)
        except Exception as exc:
            log.exception("unhandled error for %s", _describe(environ))
            response = self._error(ServerError(log_detail=repr(exc)), environ, logged=True)
        headers = self._headers(response)
        status = status_line(response.status)
        start_response(status, headers)
        if key is not None and response.status == 200 and response.etag and len(self.catalog.opened) == 1:
            entry = CachedResponse(status, headers, response.body, tuple(self.catalog.opened))
            self.pipeline.remember(key, entry, entry.size)
        self._log(method, environ, response.status, len(response.body), started)
        return [b""] if method == "HEAD" else [response.body]

    @staticmethod
    def _log(method: str, environ: dict[str, Any], status: int, size: int, started: float) -> None:
        if log.isEnabledFor(logging.INFO):
            elapsed = (time.perf_counter() - started) * 1000
            log.info("%s %s -> %d %dB %.1fms", method, _describe(environ), status, size, elapsed)

    def _dispatch(self, method: str, environ: dict[str, Any]) -> Response:
        if method == "OPTIONS":
            return Response(204, headers=[("Allow", ALLOWED_METHODS)])
        if method not in ("GET", "HEAD", "POST"):
            return Response(
                405, b"method not allowed\n", headers=[("Allow", ALLOWED_METHODS)], cache_control="no-cache"
            )
        protocol, request_text = self._request_string(method, environ)
        if not request_text:
            return self._banner()
        path = _request_path(environ)
        ctx = RequestContext(
            self.settings,
            self.catalog,
            self.pipeline,
            method,
            environ.get("HTTP_IF_NONE_MATCH"),
            environ.get("HTTP_IF_MODIFIED_SINCE"),
            ClientRequest(
                scheme="https" if environ.get("HTTPS", "").lower() in ("on", "1") else "http",
                host=environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "localhost"),
                path=path,
                accept=environ.get("HTTP_ACCEPT", ""),
                iiif_id=environ.get("HTTP_X_IIIF_ID", ""),
            ),
        )
        if protocol != "IIP":
            prefix = path[: len(path) - len(request_text)].rstrip("/")
            return iip_handler.protocol_response(protocol, request_text, ctx, ctx.client.root + prefix)
        request = iip_protocol.parse(request_text)
        return iip_handler.handle(request, ctx, request_text)

    def _request_string(self, method: str, environ: dict[str, Any]) -> tuple[str, str]:
        """``(protocol, request text)`` from URI_MAP, the query string or a POSTed form.

        A URI_MAP path keeps its percent-encoding: the protocol's parser decodes it.
        """
        query = environ.get("QUERY_STRING", "")
        if self.settings.uri_map:
            path = _request_path(environ)
            for prefix, protocol in self.settings.uri_map:
                head = f"/{prefix}/"
                if path.startswith(head) or (protocol != "IIP" and path == head[:-1]):
                    return protocol, (query if protocol == "IIP" else path[len(head) :])
        if not query and method == "POST":
            return "IIP", self._read_form(environ)
        return "IIP", query

    @staticmethod
    def _read_form(environ: dict[str, Any]) -> str:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_POST_BODY:
            raise TooLarge("request body too large", f"{length} bytes")
        if length <= 0:
            return ""
        body: bytes = environ["wsgi.input"].read(length)
        return body.decode("latin-1").strip()

    @staticmethod
    def _banner() -> Response:
        text = (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"/><title>iipsrv-py</title></head>'
            f"<body><h1>iipsrv-py</h1><p>IIPImage-compatible image server, version {html.escape(__version__)}.</p>"
            "</body></html>"
        )
        return Response(200, text.encode(), "text/html; charset=utf-8")

    # -- errors and headers ---------------------------------------------------------------------

    def _error(self, exc: ServerError, environ: dict[str, Any], logged: bool = False) -> Response:
        if not logged:
            if exc.status >= 500:
                log.error("%d for %s: %s", exc.status, _describe(environ), exc, exc_info=exc.__cause__ or exc)
            else:
                log.warning("%d for %s: %s", exc.status, _describe(environ), exc)
        if isinstance(exc, IIPError):
            return Response(exc.status, exc.body(), "application/vnd.netfpx", cache_control="no-cache")
        return Response(exc.status, (exc.message + "\n").encode("utf-8"), PLAIN_TEXT, cache_control="no-cache")

    def _headers(self, response: Response) -> list[tuple[str, str]]:
        headers = [("Server", SERVER_SOFTWARE), ("X-Powered-By", "IIPImage")]
        if response.status not in (204, 304):
            headers.append(("Content-Type", response.content_type))
            # HTTP forbids a length on 204, and on 304 it would have to be the length of
            # the body not sent; everything else states its length.
            headers.append(("Content-Length", str(len(response.body))))
        if response.last_modified is not None:
            headers.append(("Last-Modified", http_date(response.last_modified)))
        if response.status < 400:
            headers.append(("Cache-Control", response.cache_control or self.settings.cache_control))
        else:
            headers.append(("Cache-Control", response.cache_control or "no-cache"))
        if response.etag:
            headers.append(("ETag", response.etag))
        headers.extend(self._cors)
        headers.extend(response.headers)
        return headers


def _request_path(environ: dict[str, Any]) -> str:
    """The path as the client sent it (still percent-encoded), without the query string."""
    return environ.get("REQUEST_URI", "").split("?", 1)[0] or quote(environ.get("PATH_INFO", "") or "/")


def _describe(environ: dict[str, Any]) -> str:
    """The request as a log line shows it (query strings are client data: keep them short)."""
    uri = environ.get("REQUEST_URI") or (environ.get("PATH_INFO", "") + "?" + environ.get("QUERY_STRING", ""))
    text = unquote(uri, errors="replace")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 300 else text[:300] + "..."
