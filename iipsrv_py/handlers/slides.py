"""The slide REST API (WSI Streamer's routes and JSON, plus our fields): health, the slide list,
slide metadata, thumbnails, associated images, DeepZoom, tiles by pyramid level; the viewer page
is a hook (``view_page``).

Every image answer is a ``ViewRequest`` through the planner and the pipeline, cached like any
other protocol's (``ctx.image_response``); metadata answers are keyed on the slide's identity
(``ctx.respond``).  Errors are raised, and the application writes them as JSON.
"""

from __future__ import annotations

import bisect
import json
from typing import Any
from urllib.parse import unquote, urlencode

from .. import __version__, auth, planning, viewer
from ..errors import BadRequest, NotFound
from ..model import ImageInfo, Quality
from ..planning import Region, Size, StoredTile, ViewRequest
from ..protocols import rest
from ..responses import Response
from ..sources.base import ImageSource
from ..storage.listing import image_names
from . import deepzoom
from .context import RequestContext

JSON = "application/json"
INDEX_LIMIT = 1000  # slides listed on the / page (the /slides API pages through any number)
# The viewer pages run only this server's scripts; nothing inline but the JSON configuration
# (a data block, which script-src does not run).  Inline styles are allowed because
# OpenSeadragon sets its elements' style attributes; tiles it fetched are drawn on canvases
# (blob: and data: images).
VIEWER_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
)
# What /slides/{id} says of each ImageInfo.format.
FORMAT_NAMES = {
    "svs": "Aperio SVS",
    "tiff": "Generic Pyramidal TIFF",
    "jp2": "JPEG 2000",
    "jpeg": "JPEG",
}
VENDORS = {"svs": "aperio", "tiff": "generic-tiff"}
# Caches that answered a response (``Response.layer``) for X-Tile-Cache-Hit.
CACHE_LAYERS = ("worker", "memcached")


def json_response(document: dict[str, Any], status: int = 200, cache_control: str | None = None) -> Response:
    body = json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogateescape")
    return Response(status, body, JSON, cache_control=cache_control)


def handle(route: rest.RestRoute, ctx: RequestContext) -> Response:
    if isinstance(route, rest.Health):
        return json_response({"status": "healthy", "version": __version__}, cache_control="no-cache")
    if isinstance(route, rest.SlideList):
        return slide_list(route, ctx)
    if isinstance(route, rest.View):
        return view_page(route, ctx)
    if isinstance(route, rest.Index):
        return index_page(route, ctx)
    if isinstance(route, rest.Asset):
        return asset(route, ctx)
    source = ctx.catalog.open(route.slide_id)
    if isinstance(route, rest.SlideInfo):
        return slide_info(route.slide_id, source, ctx)
    if isinstance(route, rest.Thumbnail):
        return thumbnail(route, source, ctx)
    if isinstance(route, rest.Associated):
        return associated(route.name, source, ctx)
    if isinstance(route, rest.Dzi):
        return deepzoom.descriptor(source, ctx)
    if isinstance(route, rest.DziTile):
        return deepzoom.tile(source, route.level, route.col, route.row, route.encoding, ctx)
    return tile(route, source, ctx)


def view_page(route: rest.View, ctx: RequestContext) -> Response:
    """``/view/{id}``: the viewer page of a slide that opens (404 otherwise).  With signed URLs
    on, the page was itself signed (the router checked it) and carries a viewer token for this
    slide that expires with the page's own signature; no unsigned request ever gets one."""
    ctx.catalog.open(route.slide_id)
    query, cache_control = "", "no-cache"
    secret = ctx.settings.auth_secret
    if secret:
        exp = int(route.exp)  # authorize() accepted it: digits
        query = "?" + urlencode({"vt": auth.viewer_token(secret, route.slide_id, exp), "exp": exp})
        cache_control = "private, no-store"
    return _html(viewer.view_page(route.slide_id, query), cache_control)


def slide_ids(ctx: RequestContext) -> list[str]:
    """The images under the root (by name, one listing of the storage), sorted."""
    return sorted(image_names(ctx.catalog.storage.list_names(), ctx.settings.filesystem_suffix))


def index_page(route: rest.Index, ctx: RequestContext) -> Response:
    """``/``: the first INDEX_LIMIT slides, each linked to its viewer (links signed with the
    page's own expiry when signed URLs are on)."""
    names = slide_ids(ctx)
    shown = names[:INDEX_LIMIT]
    secret = ctx.settings.auth_secret
    links = []
    for slide_id in shown:
        href = viewer.view_href(slide_id)
        if secret:
            href += "?" + auth.signed_query(secret, href, [], int(route.exp))[0]
        links.append((slide_id, href))
    return _html(viewer.index_page(links, more=len(names) > len(shown)), "private, no-store" if secret else "no-cache")


def asset(route: rest.Asset, ctx: RequestContext) -> Response:
    """A file of the viewer (public: no slide data)."""
    found = viewer.asset(unquote(route.path), ctx.settings.viewer_assets or viewer.default_assets_dir())
    if found is None:
        raise NotFound("no such viewer file", f"{route.path[:200]!r} (OpenSeadragon: see VIEWER_ASSETS)")
    body, content_type = found
    return Response(200, body, content_type, [("X-Content-Type-Options", "nosniff")])


def _html(page: str, cache_control: str) -> Response:
    headers = [("Content-Security-Policy", VIEWER_CSP), ("X-Content-Type-Options", "nosniff")]
    return Response(200, page.encode("utf-8"), "text/html; charset=utf-8", headers, cache_control=cache_control)


# -- the slide list ---------------------------------------------------------------------------------


def slide_list(route: rest.SlideList, ctx: RequestContext) -> Response:
    """One page of the images under the root, sorted by id, filtered before paging; the cursor
    is the last id of the previous page."""
    search = route.search.casefold()
    ids = [
        name for name in slide_ids(ctx) if name.startswith(route.prefix) and (not search or search in name.casefold())
    ]
    start = bisect.bisect_right(ids, route.cursor) if route.cursor is not None else 0
    page = ids[start : start + route.limit]
    more = start + route.limit < len(ids)
    document = {
        "slides": page,
        "next_cursor": rest.encode_cursor(page[-1]) if more and page else None,
        "count": len(page),
    }
    return json_response(document, cache_control="no-cache")


# -- metadata ---------------------------------------------------------------------------------------


def _float_or_none(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value > 0 else None


def mpp(info: ImageInfo) -> tuple[float | None, float | None]:
    """Micrometres per pixel (x, y): Aperio's MPP as written, else the resolution tags'."""
    stated = _float_or_none(info.meta("aperio.MPP"))
    if stated is not None:
        return stated, stated
    if info.dpi is None or info.dpi[0] <= 0 or info.dpi[1] <= 0:
        return None, None
    return 1e6 / info.dpi[0], 1e6 / info.dpi[1]


def describe(slide_id: str, info: ImageInfo) -> dict[str, Any]:
    """The /slides/{id} document."""
    mpp_x, mpp_y = mpp(info)
    levels = [
        {
            "level": index,
            "width": level.width,
            "height": level.height,
            "tile_width": level.tile_width,
            "tile_height": level.tile_height,
            "tiles_x": level.tiles_x,
            "tiles_y": level.tiles_y,
            # As OpenSlide reports it: the mean of the two axes' factors.
            "downsample": (level.downsample_x + level.downsample_y) / 2,
        }
        for index, level in enumerate(info.levels)
    ]
    return {
        "slide_id": slide_id,
        "format": FORMAT_NAMES.get(info.format, info.format),
        "width": info.width,
        "height": info.height,
        "level_count": len(info.levels),
        "levels": levels,
        "mpp_x": mpp_x,
        "mpp_y": mpp_y,
        "objective_power": _float_or_none(info.meta("aperio.AppMag")),
        "vendor": VENDORS.get(info.format),
        "properties": {key: value for key, value in info.metadata if "." in key},
        "associated_images": list(info.associated),
    }


def slide_info(slide_id: str, source: ImageSource, ctx: RequestContext) -> Response:
    def build() -> Response:
        return json_response(describe(slide_id, source.info))

    return ctx.respond(source, f"rest-slide/{slide_id}", build)


# -- images -----------------------------------------------------------------------------------------


def thumbnail(route: rest.Thumbnail, source: ImageSource, ctx: RequestContext) -> Response:
    """The whole slide fitting max_size x max_size (never enlarged), JPEG: read from the smallest
    level large enough, one resize."""
    size = route.max_size
    view = ViewRequest(Region(), Size("fit", size, size, upscale=False), "jpeg")
    plan = planning.plan(view, source.info, ctx.settings)
    headers = [
        ("X-Thumbnail-Size-Clamped", "true" if route.clamped else "false"),
        ("X-Thumbnail-Requested-Size", str(route.requested)),
        ("X-Thumbnail-Actual-Size", f"{plan.out_width}x{plan.out_height}"),
    ]
    return ctx.image_response(source, plan, f"rest-thumbnail/{route.requested}", headers)


def associated(name: str, source: ImageSource, ctx: RequestContext) -> Response:
    """A picture stored beside the pyramid (label, macro, thumbnail) as JPEG; 404 when absent."""
    picture = source.associated(name)
    view = ViewRequest(Region(), Size("max"), "jpeg")
    return ctx.image_response(picture, planning.plan(view, picture.info, ctx.settings))


def tile(route: rest.Tile, source: ImageSource, ctx: RequestContext) -> Response:
    """Tile (x, y) of pyramid level ``route.level`` (0 = full resolution)."""
    info = source.info
    count = len(info.levels)
    if route.level >= count:
        raise BadRequest(f"level {route.level} does not exist: levels are 0 to {count - 1}", api_code="invalid_level")
    level = info.levels[route.level]
    if route.x >= level.tiles_x or route.y >= level.tiles_y:
        raise BadRequest(
            f"tile ({route.x}, {route.y}) is outside level {route.level}'s {level.tiles_x} x {level.tiles_y} tiles",
            api_code="tile_out_of_bounds",
        )
    # PNG is lossless: its quality would be a zlib level, not the JPEG/WebP quality asked for.
    quality = Quality() if route.encoding == "png" else Quality(route.quality)
    view = ViewRequest(
        StoredTile(count - 1 - route.level, route.y * level.tiles_x + route.x), encoding=route.encoding, quality=quality
    )
    plan = planning.plan(view, info, ctx.settings)
    response = ctx.image_response(source, plan, f"rest-tile/q{route.quality}", [("X-Tile-Quality", str(route.quality))])
    response.live_headers.append(("X-Tile-Cache-Hit", "true" if response.layer in CACHE_LAYERS else "false"))
    return response
