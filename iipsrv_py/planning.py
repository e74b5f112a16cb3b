"""From a protocol-neutral view of an image to one ImagePlan.

Protocol parsers say *what* a client asked for (a region of the full image and an output
size, or one tile of a level); ``plan`` decides *how*: which stored level to read, which
pixels of it, what size to produce.  The plan's canonical text keys every cache and ETag,
so two requests that would produce the same bytes share them, whatever protocol they came by.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .errors import NotFound, TooLarge
from .model import ImageInfo, Level, Ops, Quality
from .settings import Settings

# Never decode more than this many pixels for one response: a region that large can only
# come from a pyramid with missing levels and would exhaust a worker's memory.
MAX_REGION_PIXELS = 1 << 28
_EPS = 1e-9


@dataclass(frozen=True)
class Region:
    """A region of the full-size image: ``full``, fractions (IIP RGN) or pixels (IIIF)."""

    kind: str = "full"  # "full" | "fraction" | "pixels"
    x: float = 0.0
    y: float = 0.0
    w: float = 1.0
    h: float = 1.0

    def in_pixels(self, width: int, height: int) -> tuple[float, float, float, float]:
        """``(x, y, w, h)`` in full-size pixels, clipped to the image, never empty."""
        if self.kind == "full":
            return 0.0, 0.0, float(width), float(height)
        if self.kind == "fraction":
            x, y, w, h = self.x * width, self.y * height, self.w * width, self.h * height
        else:
            x, y, w, h = self.x, self.y, self.w, self.h
        x = min(max(x, 0.0), width - 1.0)
        y = min(max(y, 0.0), height - 1.0)
        w = max(min(w, width - x), 1.0)
        h = max(min(h, height - y), 1.0)
        return x, y, w, h


@dataclass(frozen=True)
class View:
    """A request for pixels of a region at some output size."""

    region: Region = field(default_factory=Region)
    width: int | None = None
    height: int | None = None
    fit: bool = True  # both sizes given: fit inside the box (True) or exactly that size
    upscale: bool | None = None  # None: ALLOW_UPSCALING decides
    encoding: str = "jpeg"
    quality: Quality = field(default_factory=Quality)
    page: int = 0
    ops: Ops = field(default_factory=Ops)
    layers: int = 0  # JPEG 2000 quality layers asked for (IIP LYR); 0 = all


@dataclass(frozen=True)
class TileView:
    """A request for one stored tile of one level (``level`` 0 = full size)."""

    level: int
    col: int
    row: int
    encoding: str = "jpeg"
    quality: Quality = field(default_factory=Quality)
    page: int = 0
    ops: Ops = field(default_factory=Ops)
    layers: int = 0


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
    # (col, row) when the region is exactly one stored tile of the level at its own size.
    tile: tuple[int, int] | None = None
    ops: Ops = field(default_factory=Ops)
    # Quality layers to decode (the least of LYR and MAX_LAYERS), 0 = all.  Only JPEG 2000
    # sources have layers: the pipeline reads from the source's ``with_layers(n)`` view,
    # whose identity keys its decoded tiles apart; it is in the canonical text (so in the
    # ETag and the output cache key) only when set, leaving every other plan's text as it was.
    layers: int = 0

    @property
    def canonical(self) -> str:
        q = self.quality.canonical
        q = f":{q}" if q else ""
        ops = self.ops.canonical
        layers = f"/L{self.layers}" if self.layers else ""
        return (
            f"p{self.page}/l{self.level}/{self.x},{self.y},{self.w},{self.h}/"
            f"{self.out_width}x{self.out_height}/{ops}/{self.encoding}{q}{layers}"
        )


def output_size(view: View, region_w: float, region_h: float, settings: Settings) -> tuple[int, int]:
    """Requested output size for a region of ``region_w`` x ``region_h`` full-size pixels."""
    ratio = region_w / region_h
    width, height = view.width, view.height
    if width and height:
        if not view.fit:
            w, h = float(width), float(height)
        elif width / height > ratio:
            w, h = height * ratio, float(height)
        else:
            w, h = float(width), width / ratio
    elif width:
        w, h = float(width), width / ratio
    elif height:
        w, h = height * ratio, float(height)
    else:
        w, h = region_w, region_h
    upscale = settings.allow_upscaling if view.upscale is None else view.upscale
    if not upscale and (w > region_w + _EPS or h > region_h + _EPS):
        scale = min(region_w / w, region_h / h)
        w, h = w * scale, h * scale
    if settings.max_cvt > 0 and max(w, h) > settings.max_cvt:
        scale = settings.max_cvt / max(w, h)
        w, h = w * scale, h * scale
    return max(1, round(w)), max(1, round(h))


def _level_rect(level: Level, x: float, y: float, w: float, h: float) -> tuple[int, int, int, int]:
    x0 = min(max(math.floor(x / level.downsample_x + _EPS), 0), level.width - 1)
    y0 = min(max(math.floor(y / level.downsample_y + _EPS), 0), level.height - 1)
    x1 = min(max(math.ceil((x + w) / level.downsample_x - _EPS), x0 + 1), level.width)
    y1 = min(max(math.ceil((y + h) / level.downsample_y - _EPS), y0 + 1), level.height)
    return x0, y0, x1 - x0, y1 - y0


def _snapped_rect(level: Level, fx: float, fy: float, out_w: int, out_h: int) -> tuple[int, int, int, int]:
    w, h = min(out_w, level.width), min(out_h, level.height)
    x = min(max(round(fx / level.downsample_x), 0), level.width - w)
    y = min(max(round(fy / level.downsample_y), 0), level.height - h)
    return x, y, w, h


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


def _exact_tile(level: Level, x: int, y: int, w: int, h: int) -> tuple[int, int] | None:
    if x % level.tile_width or y % level.tile_height:
        return None
    col, row = x // level.tile_width, y // level.tile_height
    if level.tile_rect(col, row)[2:] != (w, h):
        return None
    return col, row


def quality_layers(asked: int, max_layers: int) -> int:
    """Layers to decode: LYR (0 = all) capped by MAX_LAYERS (-1 or 0 = no cap); 0 = all."""
    if max_layers > 0:
        return min(asked, max_layers) if asked > 0 else max_layers
    return max(asked, 0)


def plan(view: View | TileView, info: ImageInfo, settings: Settings) -> ImagePlan:
    layers = quality_layers(view.layers, settings.max_layers)
    if isinstance(view, TileView):
        return replace(plan_tile(view, info), layers=layers)
    fx, fy, fw, fh = view.region.in_pixels(info.width, info.height)
    out_w, out_h = output_size(view, fw, fh, settings)
    index = choose_level(info, fw, fh, out_w, out_h)
    level = info.levels[index]
    x, y, w, h = _level_rect(level, fx, fy, fw, fh)
    if abs(fw / level.downsample_x - out_w) < 1 and abs(fh / level.downsample_y - out_h) < 1:
        # The level has the output's own scale: read exactly the output's pixels, at the
        # nearest whole-pixel position, rather than one more column and row to resample.
        x, y, w, h = _snapped_rect(level, fx, fy, out_w, out_h)
    while w * h > MAX_REGION_PIXELS and index + 1 < len(info.levels):
        # Too many pixels to decode at the level that would suffice: upscale a little from
        # the next smaller one rather than refuse (it is only ever short by a few pixels
        # when the output itself is within MAX_CVT).
        index += 1
        level = info.levels[index]
        x, y, w, h = _level_rect(level, fx, fy, fw, fh)
    if w * h > MAX_REGION_PIXELS:
        raise TooLarge(
            "request needs too many pixels from this image",
            f"{w}x{h} pixels at level {index} for a {out_w}x{out_h} output",
        )
    tile = _exact_tile(level, x, y, w, h) if (w, h) == (out_w, out_h) else None
    return ImagePlan(index, x, y, w, h, out_w, out_h, view.encoding, view.quality, view.page, tile, view.ops, layers)


def plan_tile(view: TileView, info: ImageInfo) -> ImagePlan:
    if not 0 <= view.level < len(info.levels):
        raise NotFound("resolution out of range", f"level {view.level} of {len(info.levels)}")
    level = info.levels[view.level]
    if not (0 <= view.col < level.tiles_x and 0 <= view.row < level.tiles_y):
        raise NotFound("tile out of range", f"tile {view.col},{view.row} of {level.tiles_x}x{level.tiles_y}")
    x, y, w, h = level.tile_rect(view.col, view.row)
    return ImagePlan(
        view.level, x, y, w, h, w, h, view.encoding, view.quality, view.page, (view.col, view.row), view.ops
    )


def match_tile(info: ImageInfo, x: int, y: int, w: int, h: int, out_w: int, out_h: int) -> tuple[int, int, int] | None:
    """``(level, col, row)`` when a full-size region at an output size is exactly one stored
    tile at its own size, as IIIF and DeepZoom viewers ask for them; else None.

    A level's scale factor is its real downsample rounded to an integer, as info.json
    announces it, so a level of 11500 pixels under a 46001-pixel image still serves the
    requests a viewer computes with a factor of 4.
    """
    for index, level in enumerate(info.levels):
        sx, sy = round(level.downsample_x), round(level.downsample_y)
        if sx < 1 or sy < 1:
            continue
        span_x, span_y = level.tile_width * sx, level.tile_height * sy
        if x % span_x or y % span_y:
            continue
        col, row = x // span_x, y // span_y
        if col >= level.tiles_x or row >= level.tiles_y:
            continue
        if (w, h) != (min(span_x, info.width - x), min(span_y, info.height - y)):
            continue
        if level.tile_rect(col, row)[2:] == (out_w, out_h):
            return index, col, row
    return None
