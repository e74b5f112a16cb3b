"""What a handler needs to answer one request, and the image response every protocol shares."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import quote

from .. import encoders
from ..catalog import Catalog
from ..pipeline import Pipeline
from ..planning import ImagePlan
from ..responses import Response, etag_for, not_modified
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

    @property
    def root(self) -> str:
        return f"{self.scheme}://{self.host}"


@dataclass
class RequestContext:
    settings: Settings
    catalog: Catalog
    pipeline: Pipeline
    method: str = "GET"
    if_none_match: str | None = None
    if_modified_since: str | None = None
    client: ClientRequest = field(default_factory=ClientRequest)

    def validated(self, source: ImageSource, canonical: str) -> tuple[str, Response | None]:
        """The ETag for this rendering, and a 304 when the client already has it.

        Checked before any pixel is decoded, so a revalidation costs one stat and a hash.
        """
        etag = etag_for(source.identity, canonical, self.settings.fingerprint)
        mtime = source.identity.mtime
        if not_modified(self.if_none_match, self.if_modified_since, etag, mtime):
            return etag, Response(304, etag=etag, last_modified=mtime)
        return etag, None

    def image_response(self, source: ImageSource, plan: ImagePlan, filename: bool = False) -> Response:
        etag, early = self.validated(source, plan.canonical)
        if early is not None:
            return early
        body = self.pipeline.render(source, plan)
        encoder = encoders.get(plan.encoding)
        response = Response(200, body, encoder.mime, etag=etag, last_modified=source.identity.mtime)
        if filename:
            name = f"{os.path.splitext(source.name)[0]}_{plan.out_width}x{plan.out_height}.{encoder.extension}"
            kind = "attachment" if self.method == "POST" else "inline"
            response.headers.append(("Content-Disposition", content_disposition(kind, name)))
        return response


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
