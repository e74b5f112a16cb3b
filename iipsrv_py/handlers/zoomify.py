"""Zoomify: ImageProperties.xml and tiles of every Zoomify level.

Zoomify levels halve (rounding down) from the full size until the image fits in one tile;
level 0 is that smallest one.  This is how Zoomify's own converter and OpenSeadragon's
Zoomify tile source count them.  The planner cuts the tiles (GridTile) and reads each from the
nearest stored level.
"""

from __future__ import annotations

import math

from .. import planning
from ..errors import NotFound
from ..model import ImageInfo
from ..planning import GridTile, ViewRequest
from ..protocols import zoomify
from ..responses import Response
from .context import RequestContext


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

        def build() -> Response:
            body = (
                f'<IMAGE_PROPERTIES WIDTH="{info.width}" HEIGHT="{info.height}" '
                f'NUMTILES="{tile_count(sizes, tile)}" NUMIMAGES="1" VERSION="1.8" TILESIZE="{tile}"/>'
            )
            return Response(200, body.encode(), "application/xml")

        return ctx.respond(source, "zoomify-properties", build)
    view = tile_request(info, request.level, request.x, request.y, request.encoding)
    return ctx.image_response(source, planning.plan(view, info, ctx.settings))


def tile_request(info: ImageInfo, level: int, x: int, y: int, encoding: str) -> ViewRequest:
    """Tile (x, y) of Zoomify level ``level`` in the planner's terms; 404 past the top level."""
    tile = info.levels[0].tile_width
    sizes = level_sizes(info, tile)
    if level >= len(sizes):
        raise NotFound("tile out of range", f"Zoomify level {level} of {len(sizes)}")
    lw, lh = sizes[level]
    return ViewRequest(GridTile((lw, lh), (info.width / lw, info.height / lh), (tile, tile), x, y), encoding=encoding)
