"""Running an IIP request: its commands left to right over a small session state.

Modifiers (WID, HEI, RGN, QLT, SDS, LYR) change the state; OBJ appends lines; the first
rendering command (CVT or a tile command) produces the response, and nothing after it runs.  A
request that produces nothing at all is IIP error ``2 1``.  Requests of other protocols carried
in a query (``IIIF=``, ``DeepZoom=``, ``Zoomify=``) never get here: the router hands them to their
own handlers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import planning
from ..errors import image_not_set, malformed
from ..model import Quality
from ..planning import Region, Size, StoredTile, ViewRequest
from ..protocols.iip import (
    Command,
    Cvt,
    Fif,
    Hei,
    IIPRequest,
    Lyr,
    Obj,
    Qlt,
    Rgn,
    Sds,
    Tile,
    Wid,
)
from ..protocols.iip_data import DataCommand
from ..responses import Response
from ..sources.base import ImageSource
from . import iip_data, objects
from .context import RequestContext

NETFPX = "application/vnd.netfpx"


@dataclass
class _State:
    image: ImageSource | None = None
    width: int = 0
    height: int = 0
    region: Region = field(default_factory=Region)
    quality: Quality = field(default_factory=Quality)
    layers: int = 0  # LYR: JPEG 2000 quality layers, 0 = all
    angles: tuple[int, int] | None = None  # SDS
    output: objects.ObjectOutput = field(default_factory=objects.ObjectOutput)
    produced: bool = False

    def target(self, command: Command) -> ImageSource:
        """The image to render: the view SDS selects (a stack page, a sequence member)."""
        if self.image is None:
            raise image_not_set(command.name)
        return self.image if self.angles is None else self.image.view(*self.angles)


def size_rule(width: int, height: int) -> Size:
    """WID and HEI (0: not given) as a size rule: IIP clamps to its limits rather than refusing."""
    if width and height:
        return Size("fit", width, height)
    if width:
        return Size("width", width=width)
    if height:
        return Size("height", height=height)
    return Size("full")


def handle(request: IIPRequest, ctx: RequestContext) -> Response:
    state = _State()
    for command in request.commands:
        response = _run(command, state, ctx)
        if response is not None:
            return response
    if not state.produced:
        raise malformed(request.canonical)
    return _text_response(state, request, ctx)


def _run(command: Command, state: _State, ctx: RequestContext) -> Response | None:
    match command:
        case Fif(path=path):
            state.image = ctx.catalog.open(path)
        case Wid(value=value):
            state.width = value
        case Hei(value=value):
            state.height = value
        case Rgn(region=region) if region is not None:
            state.region = Region("fraction", *region)
        case Qlt(quality=quality):
            state.quality = quality
        case Lyr(value=value):
            state.layers = value
        case Sds(horizontal=horizontal, vertical=vertical):
            state.angles = (horizontal, vertical)
        case Obj(object=name):
            info = state.image.info if state.image is not None else None
            out = objects.render(name, info, ctx.settings.copyright)
            state.output.lines.extend(out.lines)
            state.output.content_type = out.content_type or state.output.content_type
            state.output.protocol = out.protocol or state.output.protocol
            state.produced = True
        case Cvt(encoding=encoding):
            source = state.target(command)
            view = ViewRequest(
                state.region, size_rule(state.width, state.height), encoding, state.quality, layers=state.layers
            )
            return ctx.image_response(source, planning.plan(view, source.info, ctx.settings), filename=True)
        case Tile(resolution=resolution, index=index):
            source = state.target(command)
            view = ViewRequest(
                StoredTile(resolution, index), encoding=command.encoding, quality=state.quality, layers=state.layers
            )
            return ctx.image_response(source, planning.plan(view, source.info, ctx.settings))
        case DataCommand():
            return iip_data.answer(command, state, ctx)
    return None


def _text_response(state: _State, request: IIPRequest, ctx: RequestContext) -> Response:
    out = state.output
    body = "".join(line + "\r\n" for line in out.lines).encode("utf-8")
    headers = [("IIP", out.protocol)] if out.protocol else []
    response = Response(200, body, out.content_type or NETFPX, headers)
    if state.image is None:
        return response
    answer = ctx.respond(state.image, request.canonical, lambda: response)
    answer.headers = headers
    return answer
