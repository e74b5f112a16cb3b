"""DeepZoom: the .dzi descriptor and tiles of every DeepZoom level down to 1x1.

DeepZoom level L of an image W x H is ceil(W / 2^(maxL - L)) x ceil(H / 2^(maxL - L)) with
maxL = ceil(log2(max(W, H))), as DeepZoom clients and OpenSlide's DeepZoomGenerator compute
it.  Tile (x, y) covers [x*T - O, (x+1)*T + O) of its level, the overlap O only on sides that
have a neighbour, clipped at the level's edge.
"""

from __future__ import annotations

import math

from ..errors import NotFound
from ..model import ImageInfo
from ..planning import plan
from ..protocols import deepzoom
from ..responses import Response
from .context import RequestContext
from .levels import tile_view


def max_level(info: ImageInfo) -> int:
    return math.ceil(math.log2(max(info.width, info.height))) if max(info.width, info.height) > 1 else 0


def level_size(info: ImageInfo, level: int) -> tuple[int, int]:
    factor = 2 ** (max_level(info) - level)
    return math.ceil(info.width / factor), math.ceil(info.height / factor)


def tile_size(info: ImageInfo) -> int:
    return info.levels[0].tile_width


def handle(path: str, ctx: RequestContext) -> Response:
    request = deepzoom.parse(path)
    source = ctx.catalog.open(request.identifier)
    info = source.info
    size, overlap = tile_size(info), ctx.settings.deepzoom_overlap
    if isinstance(request, deepzoom.DziRequest):
        etag, early = ctx.validated(source, f"dzi/{size}/{overlap}/{ctx.settings.deepzoom_format}")
        if early is not None:
            return early
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" TileSize="{size}" Overlap="{overlap}" '
            f'Format="{ctx.settings.deepzoom_format}"><Size Width="{info.width}" Height="{info.height}"/></Image>\n'
        )
        return Response(200, body.encode(), "application/xml", etag=etag, last_modified=source.identity.mtime)
    top = max_level(info)
    if request.level > top:
        raise NotFound("tile out of range", f"DeepZoom level {request.level} > {top}")
    lw, lh = level_size(info, request.level)
    cols, rows = math.ceil(lw / size), math.ceil(lh / size)
    x, y = request.x, request.y
    if x >= cols or y >= rows:
        raise NotFound("tile out of range", f"DeepZoom tile {x},{y} of {cols}x{rows} at level {request.level}")
    rect = (
        x * size - (overlap if x > 0 else 0),
        y * size - (overlap if y > 0 else 0),
        min((x + 1) * size + overlap, lw),
        min((y + 1) * size + overlap, lh),
    )
    factor = float(2 ** (top - request.level))
    view = tile_view(info, rect, (factor, factor), request.encoding)
    return ctx.image_response(source, plan(view, info, ctx.settings))
