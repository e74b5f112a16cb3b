"""Running an IIP request: commands left to right over a small session state.

Modifiers (WID, HEI, RGN, QLT, SDS) change the state; OBJ appends lines; the first rendering
command (CVT or a tile command) produces the response, and nothing after it runs.  A request
that produces nothing at all is IIP error ``2 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import image_not_set, malformed
from ..model import Quality
from ..planning import Region, TileView, View, plan
from ..protocols.iip import PROTOCOL_COMMANDS, TILE_COMMANDS, Command, IIPRequest
from ..responses import Response
from ..sources.base import ImageSource
from ..sources.sequence import SequenceSource
from . import deepzoom, iiif, objects, zoomify
from .context import RequestContext

NETFPX = "application/vnd.netfpx"


@dataclass
class _State:
    image: ImageSource | None = None
    width: int = 0
    height: int = 0
    region: Region = field(default_factory=Region)
    quality: Quality = field(default_factory=Quality)
    page: int = 0
    layers: int = 0  # LYR: JPEG 2000 quality layers, 0 = all
    angles: tuple[int, int] | None = None
    output: objects.ObjectOutput = field(default_factory=objects.ObjectOutput)
    produced: bool = False

    def need_image(self, command: Command) -> ImageSource:
        """The image to render: the SDS-selected page of a stack (SDS is ignored for an image
        that is not a stack, as old clients send ``SDS=0,90`` to every image)."""
        if self.image is None:
            raise image_not_set(command.name)
        if isinstance(self.image, SequenceSource) and self.angles is not None:
            return self.image.view(*self.angles)
        if self.page and len(self.image.info.pages) > 1:
            return self.image.page(self.page)
        return self.image


def handle(request: IIPRequest, ctx: RequestContext, request_text: str) -> Response:
    state = _State()
    for command in request.commands:
        response = _run(command, state, ctx)
        if response is not None:
            return response
    if not state.produced:
        raise malformed(request_text)
    return _text_response(state, request, ctx)


def _run(command: Command, state: _State, ctx: RequestContext) -> Response | None:
    name, value = command.name, command.value
    if name == "FIF":
        state.image = ctx.catalog.open(value)
    elif name == "WID":
        state.width = value
    elif name == "HEI":
        state.height = value
    elif name == "RGN":
        if value is not None:
            x, y, w, h = value
            state.region = Region("fraction", x, y, w, h)
    elif name == "QLT":
        state.quality = value
    elif name == "LYR":
        state.layers = value
    elif name == "SDS":
        state.page = value[0]
        state.angles = value
    elif name == "OBJ":
        info = state.image.info if state.image is not None else None
        out = objects.render(value, info, ctx.settings.copyright)
        state.output.lines.extend(out.lines)
        state.output.content_type = out.content_type or state.output.content_type
        state.output.protocol = out.protocol or state.output.protocol
        state.produced = True
    elif name in PROTOCOL_COMMANDS:
        return protocol_response(name, value, ctx, f"{ctx.client.root}{ctx.client.path}?{command.name}=")
    elif name == "CVT":
        source = state.need_image(command)
        view = View(
            region=state.region,
            width=state.width or None,
            height=state.height or None,
            encoding=value,
            quality=state.quality,
            layers=state.layers,
        )
        return ctx.image_response(source, plan(view, source.info, ctx.settings), filename=True)
    elif name in TILE_COMMANDS or name == "JTLS":
        if value is None:
            return None  # JTLS without its four values is ignored
        if name == "JTLS":
            _, res, tile, _ = value
            encoding = "jpeg"
        else:
            res, tile = value
            encoding = TILE_COMMANDS[name]
        source = state.need_image(command)
        return ctx.image_response(
            source, plan(_tile_view(source, res, tile, encoding, state), source.info, ctx.settings)
        )
    return None


def protocol_response(protocol: str, path: str, ctx: RequestContext, route_base: str) -> Response:
    """A request of another protocol: IIIF (URLs built on ``route_base``), DeepZoom, Zoomify."""
    protocol = protocol.upper()
    if protocol == "IIIF":
        return iiif.handle(path, ctx, route_base)
    if protocol == "DEEPZOOM":
        return deepzoom.handle(path, ctx)
    return zoomify.handle(path, ctx)


def _tile_view(source: ImageSource, res: int, tile: int, encoding: str, state: _State) -> TileView:
    """IIP numbers resolutions from the smallest (0) and tiles row-major from the top left."""
    levels = source.info.levels
    level = len(levels) - 1 - res
    if not 0 <= level < len(levels):
        return TileView(-1, 0, 0)  # planning answers 404 for it
    across = levels[level].tiles_x
    if tile < 0:
        return TileView(level, -1, 0, encoding, state.quality)
    return TileView(level, tile % across, tile // across, encoding, state.quality, layers=state.layers)


def _text_response(state: _State, request: IIPRequest, ctx: RequestContext) -> Response:
    out = state.output
    body = "".join(line + "\r\n" for line in out.lines).encode("utf-8")
    headers = [("IIP", out.protocol)] if out.protocol else []
    response = Response(200, body, out.content_type or NETFPX, headers)
    if state.image is not None:
        etag, early = ctx.validated(state.image, request.canonical)
        if early is not None:
            early.headers = headers
            return early
        response.etag = etag
        response.last_modified = state.image.identity.mtime
    return response
