"""IIIF Image API 2.1 and 3.0: info.json, the redirect from a bare identifier, and images.

The version comes from IIIF_VERSION unless the request's Accept header names a version's
context (then the response is ``Cache-Control: private`` and varies by Accept).
"""

from __future__ import annotations

import json
import logging

from .. import planning
from ..errors import BadRequest, NotFound
from ..model import ImageInfo, Ops
from ..planning import ImagePlan, ViewRequest
from ..protocols import iiif
from ..responses import Response
from ..sources.base import ImageSource
from . import iiif_info
from .context import RequestContext

log = logging.getLogger(__name__)


def requested_version(ctx: RequestContext) -> tuple[int, bool]:
    """``(version, chosen by the Accept header)``."""
    accept = ctx.client.accept
    for version in (3, 2):
        if f"iiif.io/api/image/{version}/context.json" in accept:
            return version, True
    return ctx.settings.iiif_version, False


def handle(path: str, ctx: RequestContext) -> Response:
    """``path``: what follows the IIIF prefix (``ctx.client.route_base``), as sent."""
    version, negotiated = requested_version(ctx)
    request = iiif.parse(path, version, ctx.settings.iiif_extensions)
    image_id = _image_id(request.raw_identifier, ctx)
    if isinstance(request, iiif.BaseRequest):
        return Response(303, b"", headers=[("Location", image_id + "/info.json")], cache_control="no-cache")
    source, page = _open(request.identifier, ctx)
    if isinstance(request, iiif.InfoRequest):
        return _info(source, image_id, version, negotiated, ctx)
    return _image(request, source, page, image_id, version, ctx)


def _image_id(raw_identifier: str, ctx: RequestContext) -> str:
    if ctx.settings.base_url:
        return ctx.settings.base_url + raw_identifier
    if ctx.client.iiif_id:
        return ctx.client.iiif_id.rstrip("/")
    route_base = ctx.client.route_base
    separator = "" if route_base.endswith(("/", "=")) else "/"
    return route_base + separator + raw_identifier


def _open(identifier: str, ctx: RequestContext) -> tuple[ImageSource, int]:
    """The image and the stack page IIIF_DELIMITER selects (``id<delim>N``)."""
    delimiter = ctx.settings.iiif_delimiter
    page = 0
    if delimiter and delimiter in identifier:
        name, _, suffix = identifier.rpartition(delimiter)
        if suffix.isdigit():
            identifier, page = name, int(suffix)
    source = ctx.catalog.open(identifier)
    if page >= max(1, len(source.info.pages)):
        raise NotFound("image not found", f"page {page} of {identifier!r}")
    return source.page(page), page


# -- info.json --------------------------------------------------------------------------------


def _info(source: ImageSource, image_id: str, version: int, negotiated: bool, ctx: RequestContext) -> Response:
    # 3.0 section 5.1: JSON-LD when asked for, and by default when no Accept header is sent;
    # 2.1 section 5: JSON-LD only when asked for.
    accept = ctx.client.accept
    ld = "application/ld+json" in accept or (version >= 3 and not accept.strip())
    content_type = (
        f'application/ld+json;profile="http://iiif.io/api/image/{version}/context.json"' if ld else "application/json"
    )
    cache = "private" if negotiated else None

    def build() -> Response:
        document = iiif_info.build(source.info, image_id, version, ctx.settings)
        document.update(ctx.settings.iiif_extra)
        body = json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8")
        return Response(200, body, content_type, [("Vary", "Accept")], cache_control=cache)

    response = ctx.respond(source, f"iiif-info/{version}/{content_type}/{negotiated}/{image_id}", build)
    if response.status == 304:
        response.headers, response.cache_control = [("Vary", "Accept")], cache
    return response


# -- images -----------------------------------------------------------------------------------


_COLOURS = {"default": "", "color": "", "gray": "gray", "bitonal": "bitonal"}


def _image(
    request: iiif.ImageRequest, source: ImageSource, page: int, image_id: str, version: int, ctx: RequestContext
) -> Response:
    info = source.info
    if request.quality == "color" and info.channels < 3 and version < 3:
        # 2.1 lists the qualities an image has (not color for grey) and refuses others; 3.0
        # says a color request "MUST NOT result in an error": it gets the grey pixels.
        raise BadRequest("quality color is not available for a grey image")
    plan = planning.plan(view_request(request, page), info, ctx.settings)
    canonical = _canonical_url(image_id, plan, request, info, version)
    profile = f"http://iiif.io/api/image/{version}/level2.json"
    link = ("Link", f'<{canonical}>;rel="canonical", <{profile}>;rel="profile"')
    # The Link header names the request; the plan only the bytes.
    return ctx.image_response(source, plan, f"iiif/{canonical}", [link], filename=True)


def view_request(request: iiif.ImageRequest, page: int = 0) -> ViewRequest:
    """An image request in the planner's terms."""
    ops = Ops(
        rotation=request.rotation % 360,
        mirror=request.mirror,
        colour=_COLOURS.get(request.quality, ""),
        # The extension qualities are the IIP commands of the same meaning (INV, GAM=log,
        # CNT=st, CNT=eq), run by the same transforms.
        tone=request.quality if request.quality in ("stretch", "equalization") else "",
        invert=request.quality == "negative",
        log=request.quality == "log",
    )
    return ViewRequest(request.region, request.size, iiif.FORMATS[request.format], page=page, ops=ops)


def _canonical_url(image_id: str, plan: ImagePlan, request: iiif.ImageRequest, info: ImageInfo, version: int) -> str:
    region = tuple(round(v) for v in plan.region)
    size = (plan.out_width, plan.out_height)
    full = region == (0, 0, info.width, info.height)
    region_text = "full" if full else ",".join(map(str, region))
    rw, rh = region[2:]
    if version >= 3:
        # "^" whenever the output is larger than the region: without it the URL is a 400.
        caret = "^" if size[0] > rw or size[1] > rh else ""
        size_text = "max" if size == (rw, rh) else f"{caret}{size[0]},{size[1]}"
    elif size == (rw, rh):
        size_text = "full"
    else:
        # 2.1: "w," for a scaled image keeping its aspect ratio, "w,h" for a distorted one.
        kept = max(1, round(size[0] * rh / rw)) == size[1]
        size_text = f"{size[0]}," if kept else f"{size[0]},{size[1]}"
    return f"{image_id}/{region_text}/{size_text}/{request.rotation_text}/{request.quality}.{request.format}"
