"""Every geometric decision of a request, in one place: from a protocol-neutral request to one ImagePlan.

Protocol handlers say *what* a client asked for, in the client's own terms translated to neutral
ones (a ``ViewRequest``): an area of the image — a region of the full image, a tile of a
protocol's virtual level (DeepZoom, Zoomify), or a stored tile by IIP's numbering — and, for
regions, a size rule with what to do past a limit (clamp, as IIP does, or refuse, as IIIF does).
``plan`` decides everything else: clipping, the output size, limits, which stored level to read,
which pixels of it, and whether the answer is exactly one stored tile (the tile path, where the
stored bytes may be sent as they are).  Nothing else in the server computes any of these.

The plan's canonical text names the bytes it produces; with the source identity it forms the one
cache key (``cache/keys.py``), so two requests that would produce the same bytes share them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from . import encoders
from .encoders import tiff
from .errors import BadRequest, NotFound, TooLarge
from .model import ImageInfo, Level, Ops, Quality
from .settings import Settings

# Never decode more than MAX_DECODED_PIXELS (settings) for one response: a region that large
# can only come from a pyramid with missing levels and would exhaust a worker's memory.
# Nor produce more, whatever MAX_CVT says (it may be -1, "no limit").
MAX_OUTPUT_PIXELS = 1 << 28
# Client numbers beyond this are "larger than any image" before any arithmetic is done with
# them, so a 400-digit width cannot overflow a float.
_HUGE = float(1 << 40)
_EPS = 1e-9


# -- what a request asks for -------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """A region of the full-size image.

    ``kind``: ``full``; ``square`` (the centred square, IIIF); ``fraction`` (IIP RGN: fractions
    of the full size, clamped into the image, never empty); ``pixels`` and ``percent`` (IIIF:
    rounded to whole pixels, clipped at the edges, an empty remainder is a 400).
    """

    kind: str = "full"
    x: float = 0.0
    y: float = 0.0
    w: float = 1.0
    h: float = 1.0


@dataclass(frozen=True)
class GridTile:
    """Tile (``col``, ``row``) of a protocol's own level (DeepZoom, Zoomify).

    The level is ``frame`` pixels large and each of its pixels covers ``scale`` full-size
    pixels; tiles are ``tile`` pixels with ``overlap`` extra pixels towards each neighbour,
    clipped at the level's edge.  Levels that the file does not store are read from the
    nearest larger stored one.
    """

    frame: tuple[int, int]
    scale: tuple[float, float]
    tile: tuple[int, int]
    col: int
    row: int
    overlap: int = 0


@dataclass(frozen=True)
class StoredTile:
    """A stored tile by IIP's numbering: ``resolution`` 0 is the smallest level, tiles are
    counted row by row from the top left."""

    resolution: int
    index: int


@dataclass(frozen=True)
class Size:
    """How large the output of a region should be.

    ``kind``: ``full`` (the region at full resolution), ``max`` (the same, but shrunk to the
    server's limit rather than refused), ``width`` / ``height`` (the other side keeps the aspect
    ratio), ``percent``, ``exact`` (both sides as given) or ``fit`` (inside the box, aspect kept).
    ``upscale``: None lets ALLOW_UPSCALING decide, False forbids it (IIIF 3 without ``^``).
    ``strict``: past a limit (MAX_CVT, no upscaling) refuse with 413/400 (IIIF) instead of
    clamping to it (IIP).
    """

    kind: str = "full"
    width: int = 0
    height: int = 0
    percent: float = 0.0
    upscale: bool | None = None
    strict: bool = False


@dataclass(frozen=True)
class ViewRequest:
    """One rendering a client asked for, in terms no protocol owns."""

    area: Region | GridTile | StoredTile = field(default_factory=Region)
    size: Size = field(default_factory=Size)  # for regions; a tile's size is its own
    encoding: str = "jpeg"
    quality: Quality = field(default_factory=Quality)
    page: int = 0
    ops: Ops = field(default_factory=Ops)
    layers: int = 0  # JPEG 2000 quality layers asked for (IIP LYR); 0 = all


# -- what the server will do ---------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePlan:
    level: int
    x: int
    y: int
    w: int
    h: int
    out_width: int
    out_height: int
    encoding: str
    quality: Quality
    page: int = 0
    # (col, row) when the rectangle is exactly one stored tile of the level at its own size.
    tile: tuple[int, int] | None = None
    ops: Ops = field(default_factory=Ops)
    # Quality layers to decode (the least of LYR and MAX_LAYERS), 0 = all.  Only JPEG 2000
    # sources have layers: the pipeline reads from the source's ``with_layers(n)`` view,
    # whose identity keys its decoded tiles apart; it is in the canonical text only when set.
    layers: int = 0
    # The full-size region served (x, y, w, h), for headers that name it (IIIF's canonical
    # link).  Not part of the canonical text: the bytes depend only on the level rectangle.
    region: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    # A view (IIP CVT, a IIIF region that is not a tile) rather than a tile of some pyramid,
    # stored or virtual: views carry the source's XMP and EXIF and are watermarked in blocks,
    # tiles stay small and are watermarked whole.  In the canonical text, as it changes bytes.
    view: bool = False

    @property
    def canonical(self) -> str:
        q = self.quality.canonical
        q = f":{q}" if q else ""
        ops = self.ops.canonical
        view = "/V" if self.view else ""
        layers = f"/L{self.layers}" if self.layers else ""
        return (
            f"p{self.page}/l{self.level}/{self.x},{self.y},{self.w},{self.h}/"
            f"{self.out_width}x{self.out_height}/{ops}/{self.encoding}{q}{view}{layers}"
        )


# -- the planner ---------------------------------------------------------------------------------


def plan(request: ViewRequest, info: ImageInfo, settings: Settings) -> ImagePlan:
    area = request.area
    if isinstance(area, StoredTile):
        index, col, row = _stored_tile_address(area, info)
        level = info.levels[index]
        x, y, w, h = level.tile_rect(col, row)
        fx, fy = x * level.downsample_x, y * level.downsample_y
        region = (fx, fy, min(w * level.downsample_x, info.width - fx), min(h * level.downsample_y, info.height - fy))
        return _plan(request, info, settings, index, (x, y, w, h), (w, h), region, (col, row), view=False)
    scale = None
    if isinstance(area, GridTile):
        region, (out_w, out_h) = _grid_rect(area, info)
        scale = area.scale
    else:
        region = _region_rect(area, info.width, info.height)
        out_w, out_h = output_size(request.size, region[2], region[3], settings)
        _check_encodable(out_w, out_h, request.encoding)
    stored = _stored_tile(info, region, out_w, out_h, scale)
    if stored is not None:
        index, col, row = stored
        return _plan(
            request,
            info,
            settings,
            index,
            info.levels[index].tile_rect(col, row),
            (out_w, out_h),
            region,
            (col, row),
            view=False,
        )
    index, rect = _read_rect(info, region, out_w, out_h, scale, settings.max_decoded_pixels)
    # A protocol's tile (DeepZoom, Zoomify) is a tile even where no stored one matches it.
    return _plan(request, info, settings, index, rect, (out_w, out_h), region, None, view=scale is None)


def _plan(
    request: ViewRequest,
    info: ImageInfo,
    settings: Settings,
    level: int,
    rect: tuple[int, int, int, int],
    out: tuple[int, int],
    region: tuple[float, float, float, float],
    tile: tuple[int, int] | None,
    view: bool,
) -> ImagePlan:
    return ImagePlan(
        level,
        *rect,
        *out,
        request.encoding,
        request.quality,
        request.page,
        tile,
        _ops_for(request, info, settings),
        quality_layers(request.layers, settings.max_layers),
        region,
        view,
    )


def _ops_for(request: ViewRequest, info: ImageInfo, settings: Settings) -> Ops:
    """The ops as they apply to this output: 16 bits only where the format holds them (PNG, and
    TIFF unless it compresses with JPEG or WebP), the source has more than 8 bits to give, and
    no grey/bitonal reduction or histogram operation (made for 8 bits) follows; otherwise the
    answer is the 8-bit one, under the same key."""
    ops = request.ops
    if ops.bits == 8:
        return ops
    codec = request.quality.compression or tiff.BY_NUMBER.get(settings.tiff_compression, "")
    deep = request.encoding == "png" or (request.encoding == "tiff" and codec not in ("jpeg", "webp"))
    if not deep or info.bits_per_sample <= 8 or ops.colour or ops.tone:
        return replace(ops, bits=8)
    return ops


def quality_layers(asked: int, max_layers: int) -> int:
    """Layers to decode: LYR (0 = all) capped by MAX_LAYERS (-1 or 0 = no cap); 0 = all."""
    if max_layers > 0:
        return min(asked, max_layers) if asked > 0 else max_layers
    return max(asked, 0)


# -- areas ---------------------------------------------------------------------------------------


def _region_rect(region: Region, width: int, height: int) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` of a region in full-size pixels, clipped to the image, never empty."""
    kind = region.kind
    if kind == "full":
        return 0.0, 0.0, float(width), float(height)
    if kind == "square":
        side = min(width, height)
        return float((width - side) // 2), float((height - side) // 2), float(side), float(side)
    if kind == "fraction":
        x, y = region.x * width, region.y * height
        w, h = region.w * width, region.h * height
        x = min(max(x, 0.0), width - 1.0)
        y = min(max(y, 0.0), height - 1.0)
        return x, y, max(min(w, width - x), 1.0), max(min(h, height - y), 1.0)
    if kind not in ("pixels", "percent"):
        raise ValueError(f"unknown region kind {kind!r}")
    sx, sy = (width / 100, height / 100) if kind == "percent" else (1.0, 1.0)
    # Whole pixels, each edge rounded on its own (so that adjacent regions tile the image);
    # numbers beyond any image are capped first, so that nothing can overflow.
    x0, y0 = _whole(region.x * sx), _whole(region.y * sy)
    x1, y1 = _whole((region.x + region.w) * sx), _whole((region.y + region.h) * sy)
    x1, y1 = min(x1, width), min(y1, height)
    if x0 >= width or y0 >= height or x1 <= x0 or y1 <= y0:
        raise BadRequest("the region lies outside the image", f"{kind} {region.x},{region.y},{region.w},{region.h}")
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def _whole(value: float) -> int:
    return round(min(value, _HUGE))


def _grid_rect(tile: GridTile, info: ImageInfo) -> tuple[tuple[float, float, float, float], tuple[int, int]]:
    """The full-size region of a protocol tile and the tile's own size; 404 outside the level."""
    (fw, fh), (sx, sy), (tw, th), overlap = tile.frame, tile.scale, tile.tile, tile.overlap
    cols, rows = math.ceil(fw / tw), math.ceil(fh / th)
    if not (0 <= tile.col < cols and 0 <= tile.row < rows):
        raise NotFound("tile out of range", f"tile {tile.col},{tile.row} of {cols}x{rows} over {fw}x{fh}")
    x0 = tile.col * tw - (overlap if tile.col > 0 else 0)
    y0 = tile.row * th - (overlap if tile.row > 0 else 0)
    x1 = min((tile.col + 1) * tw + overlap, fw)
    y1 = min((tile.row + 1) * th + overlap, fh)
    fx, fy = x0 * sx, y0 * sy
    region = (fx, fy, min((x1 - x0) * sx, info.width - fx), min((y1 - y0) * sy, info.height - fy))
    return region, (x1 - x0, y1 - y0)


def _stored_tile_address(tile: StoredTile, info: ImageInfo) -> tuple[int, int, int]:
    count = len(info.levels)
    level = count - 1 - tile.resolution
    if not 0 <= level < count:
        raise NotFound("resolution out of range", f"resolution {tile.resolution} of {count}")
    lvl = info.levels[level]
    col, row = tile.index % lvl.tiles_x, tile.index // lvl.tiles_x
    if tile.index < 0 or row >= lvl.tiles_y:
        raise NotFound("tile out of range", f"tile {tile.index} of {lvl.tiles_x * lvl.tiles_y}")
    return level, col, row


# -- sizes ---------------------------------------------------------------------------------------


def output_size(size: Size, region_w: float, region_h: float, settings: Settings) -> tuple[int, int]:
    """The output size for a region of ``region_w`` x ``region_h`` full-size pixels (SPEC §6,
    IIIF 2.1/3.0 §4.2), within the server's limits or refused (``size.strict``)."""
    w, h = _target_size(size, region_w, region_h)
    out_w, out_h = max(1, round(w)), max(1, round(h))
    # Upscaling: judged on whole pixels, as a client counts them.
    full_w, full_h = max(1, round(region_w)), max(1, round(region_h))
    if out_w > full_w or out_h > full_h:
        allowed = settings.allow_upscaling if size.upscale is None else size.upscale
        if not allowed:
            if size.strict:
                if size.upscale is False:
                    raise BadRequest("a size larger than the region needs the ^ prefix", f"{out_w}x{out_h}")
                raise BadRequest("upscaling is disabled on this server", f"{out_w}x{out_h}")
            w, h = _shrunk(w, h, min(full_w / w, full_h / h))
            out_w, out_h = max(1, round(w)), max(1, round(h))
    limit = settings.max_cvt if settings.max_cvt > 0 else 0
    if limit and max(out_w, out_h) > limit:
        if size.strict and size.kind != "max":
            raise TooLarge("requested size exceeds the server's limit", f"{out_w}x{out_h} > {limit}")
        w, h = _shrunk(w, h, limit / max(w, h))
        out_w, out_h = max(1, min(limit, round(w))), max(1, min(limit, round(h)))
    if out_w * out_h > MAX_OUTPUT_PIXELS:
        raise TooLarge("requested size is too large", f"{out_w}x{out_h}")
    return out_w, out_h


def _target_size(size: Size, rw: float, rh: float) -> tuple[float, float]:
    """The size asked for, before limits; client numbers capped so that no arithmetic overflows."""
    kind = size.kind
    width, height = min(size.width, _HUGE), min(size.height, _HUGE)
    if kind in ("full", "max"):
        return rw, rh
    if kind == "width":
        return width, width * rh / rw
    if kind == "height":
        return height * rw / rh, height
    if kind == "percent":
        scale = min(size.percent, _HUGE) / 100
        return rw * scale, rh * scale
    if kind == "exact":
        return width, height
    if kind == "fit":
        scale = min(width / rw, height / rh)
        w, h = rw * scale, rh * scale
        # Never outside the box: rounding the long side up could exceed it by a pixel.
        if round(w) > width or round(h) > height:
            w, h = math.floor(w), math.floor(h)
        return w, h
    raise ValueError(f"unknown size kind {kind!r}")


def _shrunk(w: float, h: float, scale: float) -> tuple[float, float]:
    return w * scale, h * scale


def _check_encodable(width: int, height: int, encoding: str) -> None:
    limit = encoders.get(encoding).max_side
    if max(width, height) > limit:
        raise TooLarge(f"{encoding} images can be at most {limit} pixels wide or high", f"{width}x{height}")


# -- levels --------------------------------------------------------------------------------------


def _read_rect(
    info: ImageInfo,
    region: tuple[float, float, float, float],
    out_w: int,
    out_h: int,
    scale: tuple[float, float] | None,
    max_pixels: int,
) -> tuple[int, tuple[int, int, int, int]]:
    """The level to read and the rectangle of it that holds the region, at most ``max_pixels``
    (MAX_DECODED_PIXELS) large."""
    fx, fy, fw, fh = region
    index = choose_level(info, fw, fh, out_w, out_h)
    level = info.levels[index]
    rect = _level_rect(level, fx, fy, fw, fh)
    if abs(fw / level.downsample_x - out_w) < 1 and abs(fh / level.downsample_y - out_h) < 1:
        # The level has the output's own scale: read exactly the output's pixels, at the
        # nearest whole-pixel position, rather than one more column and row to resample.
        rect = _snapped_rect(level, fx, fy, out_w, out_h, _client_factors(level, info, scale))
    while rect[2] * rect[3] > max_pixels and index + 1 < len(info.levels):
        # Too many pixels to decode at the level that would suffice: upscale a little from
        # the next smaller one rather than refuse (it is only ever short by a few pixels
        # when the output itself is within MAX_CVT and the limit).
        index += 1
        rect = _level_rect(info.levels[index], fx, fy, fw, fh)
    if rect[2] * rect[3] > max_pixels:
        raise TooLarge(
            "request needs too many pixels from this image",
            f"{rect[2]}x{rect[3]} pixels at level {index} for a {out_w}x{out_h} output",
        )
    return index, rect


def choose_level(info: ImageInfo, region_w: float, region_h: float, out_w: int, out_h: int) -> int:
    """The smallest level whose pixels for the region are at least the output size.

    "At least" allows one pixel of slack: stored levels are rounded from W / factor one way
    (libtiff and vips round down) while clients compute sizes the other (DeepZoom and IIIF
    round up), and reading the next, four times larger level for that pixel would be waste.
    For outputs under 8 pixels the slack shrinks to an eighth of the size: one pixel of a
    1-pixel output is all of it, and would let a full-resolution 1x1 region come from the
    smallest level.
    """
    slack_w, slack_h = min(1.0, out_w / 8), min(1.0, out_h / 8)
    for index in range(len(info.levels) - 1, 0, -1):
        level = info.levels[index]
        if (
            region_w / level.downsample_x >= out_w - slack_w - _EPS
            and region_h / level.downsample_y >= out_h - slack_h - _EPS
        ):
            return index
    return 0


def _level_rect(level: Level, x: float, y: float, w: float, h: float) -> tuple[int, int, int, int]:
    x0 = min(max(math.floor(x / level.downsample_x + _EPS), 0), level.width - 1)
    y0 = min(max(math.floor(y / level.downsample_y + _EPS), 0), level.height - 1)
    x1 = min(max(math.ceil((x + w) / level.downsample_x - _EPS), x0 + 1), level.width)
    y1 = min(max(math.ceil((y + h) / level.downsample_y - _EPS), y0 + 1), level.height)
    return x0, y0, x1 - x0, y1 - y0


def _snapped_rect(
    level: Level, fx: float, fy: float, out_w: int, out_h: int, factors: tuple[float, float]
) -> tuple[int, int, int, int]:
    w, h = min(out_w, level.width), min(out_h, level.height)
    x = min(max(round(fx / factors[0]), 0), level.width - w)
    y = min(max(round(fy / factors[1]), 0), level.height - h)
    return x, y, w, h


def _client_factors(level: Level, info: ImageInfo, scale: tuple[float, float] | None) -> tuple[float, float]:
    """The scale factors a client uses for a level: a protocol level's own (``scale``: DeepZoom's
    powers of two, Zoomify's halvings), else the one info.json announces (the real downsample
    rounded to a whole number, the same on both axes), wherever it maps the full image onto the
    level within a pixel; the level's real factors otherwise.

    Positions computed with it land on the level's pixel grid where a client expects them: a
    level of 11500 pixels under a 46001-pixel image is "4", and with its real factor (4.00009)
    a tile's left edge would drift by up to a pixel towards the far side of the level.
    """
    if scale is None:
        whole = float(max(1, round(level.downsample_x)))
        scale = (whole, whole)
    if abs(info.width / scale[0] - level.width) < 1 and abs(info.height / scale[1] - level.height) < 1:
        return scale
    return level.downsample_x, level.downsample_y


def _stored_tile(
    info: ImageInfo,
    region: tuple[float, float, float, float],
    out_w: int,
    out_h: int,
    scale: tuple[float, float] | None,
) -> tuple[int, int, int] | None:
    """``(level, col, row)`` when a region at an output size is exactly one stored tile at its
    own size — as IIIF, DeepZoom and Zoomify viewers ask for tiles — else None.

    The region must be where the client computes the tile to be with the level's scale factor
    as it knows it (``_client_factors``): the tile's offset times the factor, the tile's size
    times the factor, clipped at the image's edge.
    """
    fx, fy, fw, fh = region
    for index, level in enumerate(info.levels):
        sx, sy = _client_factors(level, info, scale)
        span_x, span_y = level.tile_width * sx, level.tile_height * sy
        col, row = round(fx / span_x), round(fy / span_y)
        if not (0 <= col < level.tiles_x and 0 <= row < level.tiles_y):
            continue
        w, h = level.tile_rect(col, row)[2:]
        if (w, h) != (out_w, out_h) or not (_near(fx, col * span_x) and _near(fy, row * span_y)):
            continue
        if _near(fw, min(w * sx, info.width - fx)) and _near(fh, min(h * sy, info.height - fy)):
            return index, col, row
    return None


def _near(a: float, b: float) -> bool:
    return abs(a - b) < 1e-6 * max(1.0, abs(b))
