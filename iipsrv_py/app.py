"""The WSGI application: the one router, method checks, the one error handler and the headers every
response carries.

Front ends (FastCGI pool, plain HTTP, debug stdin) only differ in how the environ arrives.

Routing happens here and nowhere else: a path under a URI_MAP prefix is a request of that
prefix's protocol; otherwise the query string (or a POSTed form) is an IIP request, unless it
carries a whole request of another protocol (``IIIF=``, ``DeepZoom=``, ``Zoomify=``).  The
protocol names its handler in ``HANDLERS``.  Any path outside the claimed prefixes is IIP, as in
iipsrv: the mount point is the web server's choice.

The slide REST API's paths (``/health``, ``/slides``, ``/tiles``, ``/view``; see
``protocols/rest.py``) are routed first, parsed here into their route object, and answer errors
as JSON.
"""

from __future__ import annotations

import html
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from . import SERVER_SOFTWARE, __version__, deadline, metrics
from .auth import authorize, strip_auth_params
from .cache.keys import etag
from .cache.memcached import shared_cache
from .cache.responses import CachedResponse, ResponseCache, Shortcut, request_text
from .cache.shared import SharedCache
from .cache.shared_responses import SharedResponses
from .cache.store import WorkerCache
from .catalog import Catalog
from .errors import (
    BadRequest,
    IIPError,
    MethodNotAllowed,
    NotFound,
    RequestTooLong,
    ServerError,
    SignatureError,
    TooLarge,
    rest_body,
    status_line,
)
from .handlers import deepzoom, iiif, iip, slides, zoomify
from .handlers.context import ClientRequest, RequestContext
from .pipeline import Pipeline
from .protocols import iip as iip_protocol
from .protocols import rest as rest_protocol
from .responses import PLAIN_TEXT, Response, http_date
from .settings import Settings
from .storage import make_storage

log = logging.getLogger("iipsrv_py")

ALLOWED_METHODS = "GET, HEAD, POST, OPTIONS"
REST_METHODS = "GET, HEAD, OPTIONS"
MAX_POST_BODY = 64 * 1024
StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class Route:
    """Where a request goes: its protocol, the protocol's request text (a parsed IIP request
    for IIP, the parsed route for REST) and the URL the protocol's own paths follow (IIIF builds
    its ids on it)."""

    protocol: str
    text: str
    base: str
    iip: iip_protocol.IIPRequest | None = None
    rest: rest_protocol.RestRoute | None = None


Handler = Callable[[Route, RequestContext], Response]


def _iip(route: Route, ctx: RequestContext) -> Response:
    assert route.iip is not None  # the router parsed it to choose the route
    return iip.handle(route.iip, ctx)


def _rest(route: Route, ctx: RequestContext) -> Response:
    assert route.rest is not None  # the router parsed it to choose the route
    return slides.handle(route.rest, ctx)


HANDLERS: dict[str, Handler] = {
    "IIP": _iip,
    "IIIF": lambda route, ctx: iiif.handle(route.text, ctx),
    "DeepZoom": lambda route, ctx: deepzoom.handle(route.text, ctx),
    "Zoomify": lambda route, ctx: zoomify.handle(route.text, ctx),
    "REST": _rest,
}


class Application:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Every byte a worker keeps of pixels and responses, under one budget.
        self.cache = WorkerCache(int(settings.max_image_cache_mb * 1024 * 1024))
        self.responses = ResponseCache(self.cache)
        # Shared with the other workers and machines (memcached), or nothing: whole responses
        # here, and whatever the storage keeps there (S3 blocks).  The client connects on first
        # use, in the worker process that uses it.
        self.shared: SharedCache = shared_cache(settings)
        self.shared_responses = SharedResponses(self.shared, settings.memcached_timeout)
        self.catalog = Catalog(
            make_storage(settings, self.shared),
            settings.max_metadata_cache,
            settings.filename_pattern,
            self.cache,
        )
        self.pipeline = Pipeline(settings, self.cache)
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
        # What the request being answered turned out to be, for its metrics: a protocol's
        # name once routed, "REST", "metrics", or "other" (the banner, OPTIONS, refusals before
        # any routing).
        self._protocol = "other"
        if settings.metrics and not metrics.enabled():
            metrics.enable_in_process()  # not started by the command line: count here alone

    # -- caches -------------------------------------------------------------------------------

    def request_cache_clear(self) -> None:
        """Safe to call from a signal handler: the caches are emptied before the next request."""
        self._caches_dirty = True

    def clear_caches(self) -> None:
        self.catalog.clear()
        self.cache.clear()
        self._caches_dirty = False
        log.info("caches cleared")

    # -- WSGI ---------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        if self._caches_dirty:
            self.clear_caches()
        method = environ.get("REQUEST_METHOD", "GET").upper()
        # REST answers carry headers about how they were answered (X-Tile-Cache-Hit), which a
        # shortcut hit would not: they always take the normal path.
        text = None if rest_protocol.claims(_request_path(environ)) else request_text(environ)
        self.catalog.begin_request()
        self._protocol = "other"
        deadline.start(self.settings.request_timeout)
        try:
            response = self._dispatch(method, environ, text)
        except ServerError as exc:
            response = self._error(exc, environ)
        except Exception as exc:
            log.exception("unhandled error for %s", _describe(environ))
            response = self._error(ServerError(log_detail=repr(exc)), environ, logged=True)
        finally:
            deadline.finish()
        status, headers, body = self._finish(response, method, text)
        start_response(status, headers)
        sent = 0 if method == "HEAD" else len(body)
        self._log(method, environ, response.status, sent, started, response.layer, self._protocol)
        metrics.observe_request(self._protocol, response.status, sent, time.perf_counter() - started)
        return [b""] if method == "HEAD" else [body]

    def _shortcut(self, text: tuple[str, ...]) -> CachedResponse | None:
        """The response an identical earlier request got, if its images are unchanged."""
        shortcut = self.responses.shortcut(text)
        if shortcut is None or not self.catalog.still_current(shortcut.sources):
            return None
        self._protocol = shortcut.protocol
        return self.responses.get(shortcut.key)

    def _finish(
        self, response: Response, method: str, text: tuple[str, ...] | None
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        """Status line, headers and body of a response; a fresh 200 with a key is kept, by this
        worker and in memcached (never an error: those are not worth a round trip)."""
        if response.cached is not None:
            cached = response.cached
        else:
            cached = CachedResponse(status_line(response.status), self._headers(response), response.body)
            if response.status == 200 and response.key and method != "POST":
                self.responses.put(response.key, cached)
                self.shared_responses.put(response.key, cached)
        if text is not None and response.status == 200 and response.key and len(self.catalog.opened) == 1:
            self.responses.remember_shortcut(text, Shortcut(response.key, tuple(self.catalog.opened), self._protocol))
        if response.live_headers:
            return cached.status, cached.headers + response.live_headers, cached.body
        return cached.status, cached.headers, cached.body

    @staticmethod
    def _log(
        method: str, environ: dict[str, Any], status: int, size: int, started: float, layer: str, protocol: str
    ) -> None:
        """The access line (VERBOSITY >= 2): method, request, protocol, status, body bytes,
        milliseconds, and what answered a successful request: ``shortcut`` (the request-text
        shortcut), ``worker`` (this worker's response cache), ``memcached`` or ``rendered``;
        errors name none."""
        if log.isEnabledFor(logging.INFO):
            elapsed = (time.perf_counter() - started) * 1000
            answered = f" {layer}" if layer and status < 400 else ""
            log.info(
                "%s %s %s -> %d %dB %.1fms%s", method, _describe(environ), protocol, status, size, elapsed, answered
            )

    # -- routing ------------------------------------------------------------------------------

    def _dispatch(self, method: str, environ: dict[str, Any], text: tuple[str, ...] | None = None) -> Response:
        path = _request_path(environ)
        if method not in ("GET", "HEAD", "OPTIONS") and rest_protocol.claims(path):
            raise MethodNotAllowed("method not allowed", f"{method[:10]} {path[:200]}")
        if method == "OPTIONS":
            allowed = REST_METHODS if rest_protocol.claims(path) else ALLOWED_METHODS  # REST refuses POST
            return Response(204, headers=[("Allow", allowed)])
        if method not in ("GET", "HEAD", "POST"):
            return Response(
                405, b"method not allowed\n", headers=[("Allow", ALLOWED_METHODS)], cache_control="no-cache"
            )
        query = environ.get("QUERY_STRING", "")
        if len(query) + len(path) > self.settings.max_request_length:
            raise RequestTooLong("request too long", f"{len(query) + len(path)} > MAX_REQUEST_LENGTH")
        if not query and method == "POST":
            query = self._read_form(environ)
        if len(query) > self.settings.max_parameter_length:
            _check_parameters(query, self.settings.max_parameter_length)
        if path == metrics.PATH:
            # Like /health, never signed: scrapers cannot sign.  The web server decides who may
            # read it (conf/nginx allows loopback only).
            return self._metrics()
        # The REST route, parsed once; a malformed one answers after the signature check.
        rest_route: rest_protocol.RestRoute | None = None
        rest_error: ServerError | None = None
        if rest_protocol.claims(path):
            self._protocol = "REST"
            try:
                rest_route = rest_protocol.parse(path, query)
            except ServerError as exc:
                rest_error = exc
        # Signed URLs: once per request, before any cache is consulted.  A viewer token may
        # open only the routes of its own slide that the viewer page loads.
        token_slide = rest_route.slide_id if isinstance(rest_route, rest_protocol.VIEWER_TOKEN_ROUTES) else None
        authorize(self.settings, method, path, query, token_slide, time.time())
        if rest_error is not None:
            raise rest_error
        if text is not None:
            hit = self._shortcut(text)
            if hit is not None:
                return Response(200, cached=hit, layer="shortcut")  # only 200s are remembered
        scheme = "https" if environ.get("HTTPS", "").lower() in ("on", "1") else "http"
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "localhost")
        route = self.route(path, query, f"{scheme}://{host}", rest_route)
        if route is None:
            return self._banner()
        client = ClientRequest(
            scheme, host, path, environ.get("HTTP_ACCEPT", ""), environ.get("HTTP_X_IIIF_ID", ""), route.base
        )
        ctx = RequestContext(
            self.settings,
            self.catalog,
            self.pipeline,
            self.responses,
            method,
            environ.get("HTTP_IF_NONE_MATCH"),
            environ.get("HTTP_IF_MODIFIED_SINCE"),
            client,
            self.shared_responses,
        )
        return HANDLERS[route.protocol](route, ctx)

    def route(
        self, path: str, query: str, root: str, rest_route: rest_protocol.RestRoute | None = None
    ) -> Route | None:
        """The route of a request; None for an empty request (the banner page).

        ``query`` is the query string, or the form of a POST without one.  A URI_MAP path keeps
        its percent-encoding: the protocol's parser decodes it.  The REST API's paths come first
        (BadRequest / NotFound for one of them that is malformed).  The signing parameters
        (``exp``, ``sig``, ``vt``) are no protocol's: they are removed before parsing, so they are
        no IIP command and no part of a cache key, whether auth is on or off.  ``rest_route``: the
        REST route of ``path`` when the caller has parsed it already.
        """
        # The protocol is noted as soon as it is known, so that a request refused while it is
        # parsed is counted under it.
        if rest_route is not None or rest_protocol.claims(path):
            self._protocol = "REST"
            return Route("REST", query, root, rest=rest_route or rest_protocol.parse(path, query))
        if path == "/" and not strip_auth_params(query):
            # The site root with no request: the slide list, linking each slide to its viewer
            # (other paths with an empty query keep iipsrv's banner page).
            self._protocol = "REST"
            return Route("REST", query, root, rest=rest_protocol.index(query))
        for prefix, protocol in self.settings.uri_map:
            head = f"/{prefix}/"
            if path.startswith(head) or path == head[:-1]:
                if protocol != "IIP":
                    self._protocol = protocol
                    return Route(protocol, path[len(head) :], root + head[:-1])
                break  # an IIP prefix: the query is the request, as at any other path
        query = strip_auth_params(query)
        if not query:
            return None
        self._protocol = "IIP"
        request = iip_protocol.parse(query)
        command = request.protocol_command
        if command is not None:
            self._protocol = command.protocol
            return Route(command.protocol, command.path, f"{root}{path}?{command.name}=")
        return Route("IIP", query, root + path, request)

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

    def _metrics(self) -> Response:
        if not self.settings.metrics:
            raise NotFound("not found", "/metrics with METRICS=0")
        self._protocol = "metrics"
        return Response(200, metrics.exposition(), metrics.CONTENT_TYPE, cache_control="no-store")

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
        signature = isinstance(exc, SignatureError)
        if signature or rest_protocol.claims(_request_path(environ)):
            # JSON {"error", "message", "status"}; a refused signature is never kept by any
            # cache (only 200s are), nor by a browser or proxy.
            body = json.dumps(rest_body(exc), ensure_ascii=False).encode("utf-8")
            headers = [("Allow", REST_METHODS)] if exc.status == 405 else []
            return Response(
                exc.status, body, "application/json", headers, cache_control="no-store" if signature else "no-cache"
            )
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
        if response.key:
            headers.append(("ETag", etag(response.key)))
        headers.extend(self._cors)
        headers.extend(response.headers)
        return headers


def _check_parameters(query: str, limit: int) -> None:
    """400 for a request string with one parameter longer than MAX_PARAMETER_LENGTH (a long
    request of many short parameters is MAX_REQUEST_LENGTH's to judge)."""
    for token in query.split("&"):
        if len(token) > limit:
            name = token.split("=", 1)[0][:20]
            raise BadRequest("request parameter too long", f"{name}: {len(token)} > MAX_PARAMETER_LENGTH")


def _request_path(environ: dict[str, Any]) -> str:
    """The path as the client sent it (still percent-encoded), without the query string."""
    return environ.get("REQUEST_URI", "").split("?", 1)[0] or quote(environ.get("PATH_INFO", "") or "/")


def _describe(environ: dict[str, Any]) -> str:
    """The request as a log line shows it (query strings are client data: keep them short)."""
    uri = environ.get("REQUEST_URI") or (environ.get("PATH_INFO", "") + "?" + environ.get("QUERY_STRING", ""))
    text = unquote(uri, errors="replace")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 300 else text[:300] + "..."
