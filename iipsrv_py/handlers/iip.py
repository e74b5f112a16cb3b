"""Running an IIP request: its commands left to right over a small session state.

Modifiers (WID, HEI, RGN, QLT, SDS, LYR) change the state; OBJ appends lines; the first
rendering command (CVT or a tile command) produces the response, and nothing after it runs.  A
request that produces nothing at all is IIP error ``2 1``.  Requests of other protocols carried
in a query (``IIIF=``, ``DeepZoom=``, ``Zoomify=``) never get here: the router hands them to their
own handlers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .. import planning
from ..errors import image_not_set, malformed
from ..model import Ops, Quality
from ..planning import Region, Size, StoredTile, ViewRequest
from ..protocols.iip import (
    Bit,
    Cmp,
    Cnt,
    Cnv,
    Col,
    Command,
    Ctw,
    Cvt,
    Fif,
    Gam,
    Hei,
    IIPRequest,
    Inv,
    Lyr,
    MinMax,
    Obj,
    Qlt,
    Rgn,
    Rot,
    Sds,
    Shd,
    Tile,
    Wid,
)
from ..protocols.iip_data import DataCommand
from ..responses import Response
from ..sources.base import ImageSource
from ..transforms.processing import NAMED_KERNELS
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
    ops: Ops = field(default_factory=Ops)  # the processing commands so far
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
        case Cnt() | Gam() | MinMax() | Inv() | Cmp() | Ctw() | Col() | Shd() | Cnv() | Rot() | Bit():
            state.ops = processing(command, state.ops)
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
                state.region,
                size_rule(state.width, state.height),
                encoding,
                state.quality,
                ops=state.ops,
                layers=state.layers,
            )
            return ctx.image_response(source, planning.plan(view, source.info, ctx.settings), filename=True)
        case Tile(resolution=resolution, index=index):
            source = state.target(command)
            view = ViewRequest(
                StoredTile(resolution, index),
                encoding=command.encoding,
                quality=state.quality,
                ops=state.ops,
                layers=state.layers,
            )
            return ctx.image_response(source, planning.plan(view, source.info, ctx.settings))
        case DataCommand():
            return iip_data.answer(command, state, ctx)
    return None


def processing(command: Command, ops: Ops) -> Ops:
    """``ops`` with one processing command applied; a later command of the same kind replaces
    an earlier one, except MINMAX, which sets one channel's range each time."""
    match command:
        case Cnt(factor=factor, mode=mode):
            return replace(ops, tone=mode, contrast=1.0) if mode else replace(ops, tone="", contrast=factor)
        case Gam(gamma=gamma, log=log):
            return replace(ops, gamma=1.0 if log else gamma, log=log)
        case MinMax(channel=channel, minimum=minimum, maximum=maximum):
            kept = tuple(m for m in ops.minmax if m[0] != channel and channel != -1)
            return replace(ops, minmax=(*kept, (channel, minimum, maximum)))
        case Inv():
            return replace(ops, invert=True)
        case Cmp(cmap=cmap):
            return replace(ops, cmap=cmap)
        case Ctw(matrix=matrix):
            return replace(ops, twist=matrix)
        case Col(colour=colour):
            return replace(ops, colour=colour)
        case Shd(horizontal=horizontal, vertical=vertical):
            return replace(ops, shade=(horizontal, vertical))
        case Cnv(kernel=kernel, named=named):
            return replace(ops, kernel=NAMED_KERNELS[named] if named else kernel)
        case Rot(degrees=degrees, mirror=mirror):
            return replace(ops, rotation=degrees, mirror=mirror)
        case Bit(bits=bits):
            return replace(ops, bits=bits)
    return ops


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
