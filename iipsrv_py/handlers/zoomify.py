"""Zoomify: ImageProperties.xml and tiles of every Zoomify level.

Zoomify levels halve (rounding down) from the full size until the image fits in one tile;
level 0 is that smallest one.  This is how Zoomify's own converter and OpenSeadragon's
Zoomify tile source count them.
"""

from __future__ import annotations

import math

from ..errors import NotFound
from ..model import ImageInfo
from ..planning import plan
from ..protocols import zoomify
from ..responses import Response
from .context import RequestContext
from .levels import tile_view


def level_sizes(info: ImageInfo, tile: int) -> list[tuple[int, int]]:
    """Zoomify level sizes, smallest (level 0) first."""
    w, h = info.width, info.height
    sizes = [(w, h)]
    while w > tile or h > tile:
        w, h = max(1, w // 2), max(1, h // 2)
        sizes.append((w, h))
    return sizes[::-1]


def tile_count(sizes: list[tuple[int, int]], tile: int) -> int:
    return sum(math.ceil(w / tile) * math.ceil(h / tile) for w, h in sizes)


def handle(path: str, ctx: RequestContext) -> Response:
    request = zoomify.parse(path)
    source = ctx.catalog.open(request.identifier)
    info = source.info
    tile = info.levels[0].tile_width
    sizes = level_sizes(info, tile)
    if isinstance(request, zoomify.PropertiesRequest):
        etag, early = ctx.validated(source, "zoomify-properties")
        if early is not None:
            return early
        body = (
            f'<IMAGE_PROPERTIES WIDTH="{info.width}" HEIGHT="{info.height}" NUMTILES="{tile_count(sizes, tile)}" '
            f'NUMIMAGES="1" VERSION="1.8" TILESIZE="{tile}"/>'
        )
        return Response(200, body.encode(), "application/xml", etag=etag, last_modified=source.identity.mtime)
    if request.level >= len(sizes):
        raise NotFound("tile out of range", f"Zoomify level {request.level} of {len(sizes)}")
    lw, lh = sizes[request.level]
    x, y = request.x, request.y
    if x >= math.ceil(lw / tile) or y >= math.ceil(lh / tile):
        raise NotFound("tile out of range", f"Zoomify tile {x},{y} at level {request.level}")
    rect = (x * tile, y * tile, min((x + 1) * tile, lw), min((y + 1) * tile, lh))
    view = tile_view(info, rect, (info.width / lw, info.height / lh), request.encoding)
    return ctx.image_response(source, plan(view, info, ctx.settings))
