"""IIIF Image API 2.1 and 3.0: info.json, the redirect from a bare identifier, and images.

The version comes from IIIF_VERSION unless the request's Accept header names a version's
context (then the response is ``Cache-Control: private`` and varies by Accept).
"""

from __future__ import annotations

import json
import logging
import math
from functools import lru_cache
from typing import Any

from ..errors import BadRequest, NotFound, TooLarge
from ..model import ImageInfo, Ops
from ..planning import Region, TileView, View, match_tile, plan
from ..protocols import iiif
from ..responses import Response
from ..settings import Settings
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


def handle(path: str, ctx: RequestContext, route_base: str) -> Response:
    """``path``: what follows the IIIF prefix, as sent; ``route_base``: the URL before it."""
    version, negotiated = requested_version(ctx)
    request = iiif.parse(path, version, ctx.settings.iiif_extensions)
    image_id = _image_id(request.raw_identifier, ctx, route_base)
    if isinstance(request, iiif.BaseRequest):
        return Response(303, b"", headers=[("Location", image_id + "/info.json")], cache_control="no-cache")
    source, page = _open(request.identifier, ctx)
    if isinstance(request, iiif.InfoRequest):
        return _info(source, image_id, version, negotiated, ctx)
    return _image(request, source, page, image_id, version, ctx)


def _image_id(raw_identifier: str, ctx: RequestContext, route_base: str) -> str:
    if ctx.settings.base_url:
        return ctx.settings.base_url + raw_identifier
    if ctx.client.iiif_id:
        return ctx.client.iiif_id.rstrip("/")
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
    etag, early = ctx.validated(source, f"iiif-info/{version}/{content_type}/{image_id}")
    cache = "private" if negotiated else None
    headers = [("Vary", "Accept")]
    if early is not None:
        early.headers, early.cache_control = headers, cache
        return early
    document = iiif_info.build(source.info, image_id, version, ctx.settings)
    document.update(extra_info(ctx.settings.iiif_extra_info))
    body = json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8")
    return Response(
        200, body, content_type, headers, last_modified=source.identity.mtime, etag=etag, cache_control=cache
    )


@lru_cache(maxsize=4)
def extra_info(text: str) -> dict[str, Any]:
    """IIIF_EXTRA_INFO: a JSON object, or its members without the braces, merged into info.json."""
    text = text.strip()
    if not text:
        return {}
    for candidate in (text, "{" + text + "}"):
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    log.error("IIIF_EXTRA_INFO is not a JSON object and is ignored: %.80s", text)
    return {}


# -- images -----------------------------------------------------------------------------------


def region_pixels(region: iiif.Region, info: ImageInfo) -> tuple[int, int, int, int]:
    """The region in full-size pixels, clipped to the image; 400 when nothing is left."""
    width, height = info.width, info.height
    if region.kind == "full":
        return 0, 0, width, height
    if region.kind == "square":
        side = min(width, height)
        return (width - side) // 2, (height - side) // 2, side, side
    if region.kind == "percent":
        x0, y0 = round(region.x * width / 100), round(region.y * height / 100)
        x1, y1 = round((region.x + region.w) * width / 100), round((region.y + region.h) * height / 100)
    else:
        x0, y0 = round(region.x), round(region.y)
        x1, y1 = round(region.x + region.w), round(region.y + region.h)
    x1, y1 = min(x1, width), min(y1, height)
    if x0 >= width or y0 >= height or x1 <= x0 or y1 <= y0:
        raise BadRequest("IIIF region lies outside the image", f"{region.canonical} on {width}x{height}")
    return x0, y0, x1 - x0, y1 - y0


def output_size(size: iiif.Size, rw: int, rh: int, version: int, settings: Settings) -> tuple[int, int]:
    """Output width and height for a region of rw x rh pixels (IIIF 2.1/3.0 section 4.2)."""
    limit = settings.max_cvt if settings.max_cvt > 0 else 0
    if size.kind == "max":
        # "^max" may exceed the region only up to announced limits, and limits are only
        # announced when they are smaller than the image: both forms mean the same here.
        scale = limit / max(rw, rh) if limit and max(rw, rh) > limit else 1.0
        w, h = rw * scale, rh * scale
    elif size.kind == "width":
        w, h = size.width, size.width * rh / rw
    elif size.kind == "height":
        w, h = size.height * rw / rh, size.height
    elif size.kind == "percent":
        w, h = rw * size.percent / 100, rh * size.percent / 100
    elif size.kind == "exact":
        w, h = size.width, size.height
    else:  # fit inside the box, keeping the aspect ratio
        # In 3.0 a box larger than the region without "^" is an upscaling request like any
        # other and fails below (as the IIIF validator requires), rather than being shrunk.
        scale = min(size.width / rw, size.height / rh)
        w, h = rw * scale, rh * scale
        if round(w) > size.width or round(h) > size.height:
            w, h = math.floor(w), math.floor(h)
    out_w, out_h = max(1, round(w)), max(1, round(h))
    upscaled = out_w > rw or out_h > rh
    if upscaled and version >= 3 and not size.upscale:
        raise BadRequest("IIIF 3 size larger than the region needs the ^ prefix", size.canonical)
    if upscaled and not settings.allow_upscaling:
        raise BadRequest("upscaling is disabled on this server", size.canonical)
    if limit and max(out_w, out_h) > limit:
        raise TooLarge("requested size exceeds the server's limit", f"{out_w}x{out_h} > {limit}")
    return out_w, out_h


_COLOURS = {"default": "", "color": "", "gray": "gray", "bitonal": "bitonal"}


def _image(
    request: iiif.ImageRequest, source: ImageSource, page: int, image_id: str, version: int, ctx: RequestContext
) -> Response:
    info = source.info
    if request.quality == "color" and info.channels < 3 and version < 3:
        # 2.1 lists the qualities an image has (not color for grey) and refuses others; 3.0
        # says a color request "MUST NOT result in an error": it gets the grey pixels.
        raise BadRequest("quality color is not available for a grey image")
    x, y, w, h = region_pixels(request.region, info)
    out_w, out_h = output_size(request.size, w, h, version, ctx.settings)
    ops = Ops(
        rotation=request.rotation % 360,
        mirror=request.mirror,
        colour=_COLOURS.get(request.quality, ""),
        tone=request.quality if request.quality in iiif.EXTENSION_QUALITIES else "",
    )
    encoding = iiif.FORMATS[request.format]
    tile = match_tile(info, x, y, w, h, out_w, out_h)
    view: View | TileView
    if tile is not None:
        view = TileView(tile[0], tile[1], tile[2], encoding, page=page, ops=ops)
    else:
        region = Region("pixels", x, y, w, h)
        view = View(region, out_w, out_h, fit=False, upscale=True, encoding=encoding, page=page, ops=ops)
    response = ctx.image_response(source, plan(view, info, ctx.settings), filename=True)
    canonical = _canonical_url(image_id, (x, y, w, h), (out_w, out_h), request, info, version)
    profile = f"http://iiif.io/api/image/{version}/level2.json"
    response.headers.append(("Link", f'<{canonical}>;rel="canonical", <{profile}>;rel="profile"'))
    return response


def _canonical_url(
    image_id: str,
    region: tuple[int, int, int, int],
    size: tuple[int, int],
    request: iiif.ImageRequest,
    info: ImageInfo,
    version: int,
) -> str:
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
