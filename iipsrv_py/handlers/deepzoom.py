"""DeepZoom: the .dzi descriptor and tiles of every DeepZoom level down to 1x1.

DeepZoom level L of an image W x H is ceil(W / 2^(maxL - L)) x ceil(H / 2^(maxL - L)) with
maxL = ceil(log2(max(W, H))), as DeepZoom clients and OpenSlide's DeepZoomGenerator compute
it.  Tiles are the file's tile width, with DEEPZOOM_OVERLAP pixels towards each neighbour; the
planner cuts them (GridTile) and reads each from the nearest stored level.
"""

from __future__ import annotations

import math

from .. import planning
from ..errors import NotFound
from ..model import ImageInfo
from ..planning import GridTile, ViewRequest
from ..protocols import deepzoom
from ..responses import Response
from ..sources.base import ImageSource
from .context import RequestContext


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
    if isinstance(request, deepzoom.DziRequest):
        return descriptor(source, ctx)
    return tile(source, request.level, request.x, request.y, request.encoding, ctx)


def descriptor(source: ImageSource, ctx: RequestContext) -> Response:
    """The .dzi document of an image (also the slide REST API's ``/slides/{id}/dzi``)."""
    info = source.info
    size, overlap = tile_size(info), ctx.settings.deepzoom_overlap

    def build() -> Response:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" TileSize="{size}" '
            f'Overlap="{overlap}" Format="{ctx.settings.deepzoom_format}">'
            f'<Size Width="{info.width}" Height="{info.height}"/></Image>\n'
        )
        return Response(200, body.encode(), "application/xml")

    return ctx.respond(source, f"dzi/{size}/{overlap}/{ctx.settings.deepzoom_format}", build)


def tile(source: ImageSource, level: int, x: int, y: int, encoding: str, ctx: RequestContext) -> Response:
    """Tile (x, y) of DeepZoom level ``level`` (also ``/slides/{id}/dzi_files/...``)."""
    view = tile_request(source.info, level, x, y, ctx.settings.deepzoom_overlap, encoding)
    return ctx.image_response(source, planning.plan(view, source.info, ctx.settings))


def tile_request(info: ImageInfo, level: int, x: int, y: int, overlap: int, encoding: str) -> ViewRequest:
    """Tile (x, y) of DeepZoom level ``level`` in the planner's terms; 404 past the top level."""
    top = max_level(info)
    if level > top:
        raise NotFound("tile out of range", f"DeepZoom level {level} > {top}")
    factor = float(2 ** (top - level))
    size = tile_size(info)
    return ViewRequest(
        GridTile(level_size(info, level), (factor, factor), (size, size), x, y, overlap), encoding=encoding
    )
