"""What a handler needs to answer one request, and the one way every answer about an image is made:
key it, answer a conditional request or a cached copy when there is one, else build it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from .. import encoders
from ..cache.keys import cache_key
from ..cache.responses import ResponseCache
from ..cache.shared_responses import SharedResponses
from ..catalog import Catalog
from ..pipeline import Pipeline
from ..planning import ImagePlan
from ..responses import Response, not_modified
from ..settings import Settings
from ..sources.base import ImageSource


@dataclass(frozen=True)
class ClientRequest:
    """What handlers may know of the HTTP request beyond the request string."""

    scheme: str = "http"
    host: str = "localhost"  # Host header, with its port
    path: str = "/"  # request path as sent (percent-encoded), without the query
    accept: str = ""
    iiif_id: str = ""  # X-IIIF-ID header
    # The URL the protocol's own paths follow (a URI_MAP prefix, or "<path>?IIIF="), for ids.
    route_base: str = ""

    @property
    def root(self) -> str:
        return f"{self.scheme}://{self.host}"


@dataclass
class RequestContext:
    settings: Settings
    catalog: Catalog
    pipeline: Pipeline
    responses: ResponseCache
    method: str = "GET"
    if_none_match: str | None = None
    if_modified_since: str | None = None
    client: ClientRequest = field(default_factory=ClientRequest)
    # Responses other workers and machines rendered (memcached); nothing when it is off.
    shared_responses: SharedResponses = field(default_factory=SharedResponses)

    def respond(self, source: ImageSource, canonical: str, build: Callable[[], Response]) -> Response:
        """The answer named by ``canonical`` about ``source``: a 304 when the client has it, the
        cached response when this worker has it, else when memcached has it, else ``build()``'s,
        keyed for reuse (the application stores a fresh 200 in both caches).

        Checked before anything is decoded, so a revalidation or a cache hit costs a hash (and
        a memcached hit one round trip).  The key holds the source's current identity, so a
        copy made from an older version of the image can never be found.
        """
        key = cache_key(source.identity, canonical, self.settings.fingerprint)
        mtime = source.identity.mtime
        if not_modified(self.if_none_match, self.if_modified_since, f'"{key}"', mtime):
            return Response(304, key=key, last_modified=mtime)
        if self.method != "POST":
            cached = self.responses.get(key)
            if cached is not None:
                return Response(200, cached.body, key=key, last_modified=mtime, cached=cached, layer="worker")
            cached = self.shared_responses.get(key)
            if cached is not None:
                # Kept by this worker too: its next request for it needs no round trip.
                self.responses.put(key, cached)
                return Response(200, cached.body, key=key, last_modified=mtime, cached=cached, layer="memcached")
        response = build()
        response.key = key
        response.last_modified = mtime
        response.layer = "rendered"
        return response

    def image_response(
        self,
        source: ImageSource,
        plan: ImagePlan,
        variant: str = "",
        headers: list[tuple[str, str]] | None = None,
        filename: bool = False,
    ) -> Response:
        """The rendering of ``plan``.  ``variant`` names whatever besides the plan the response
        depends on (the IIIF canonical URL in a Link header), ``headers`` are such headers."""
        kind = "attachment" if self.method == "POST" else "inline"

        def build() -> Response:
            encoder = encoders.get(plan.encoding)
            response = Response(200, self.pipeline.render(source, plan), encoder.mime)
            if headers:
                response.headers.extend(headers)
            if filename:
                stem = os.path.splitext(source.name)[0]
                name = f"{stem}_{plan.out_width}x{plan.out_height}.{encoder.extension}"
                response.headers.append(("Content-Disposition", content_disposition(kind, name)))
            return response

        canonical = f"{plan.canonical}|{variant}|{kind if filename else ''}|{self.pipeline.variant}"
        return self.respond(source, canonical, build)


def content_disposition(kind: str, filename: str) -> str:
    """``inline; filename="a.jpg"``, with an RFC 6266 ``filename*`` when the name is not ASCII.

    Header values travel as latin-1 through WSGI, so the plain ``filename`` is always
    reduced to printable ASCII.
    """
    plain = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    if plain == filename:
        return f'{kind}; filename="{plain}"'
    return (
        f"{kind}; filename=\"{plain}\"; filename*=UTF-8''{quote(filename.encode('utf-8', 'surrogateescape'), safe='')}"
    )
