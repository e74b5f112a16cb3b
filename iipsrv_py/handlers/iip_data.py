"""Answers of the IIP data commands: PFL (JSON line profile), SPECTRA (XML spectrum of one pixel)
and TIL (several JPEG tiles in one FlashPix-style response).

Pixels come from the pipeline's tile reader, so they are the decoded tiles the worker cache
already holds and the 8-bit values every other answer shows (deeper samples scaled as the
server scales them, CIELAB as sRGB).  Each answer is keyed like an image through
``RequestContext.respond``: 304s, the worker cache and memcached work for them too.

Choices where iipsrv is silent or inconsistent (also in the README):

* Values are those of the first channel (grey, or red of RGB).  iipsrv interleaves every channel
  into a PFL profile and reads SPECTRA's pixel as if the tile had one channel.
* PFL samples the line at the nearest pixel of each step along its longer axis, the end point
  excluded: a horizontal or vertical line gives exactly iipsrv's ``x2 - x1`` (``y2 - y1``) values,
  a diagonal is followed rather than read as a horizontal line from (x1, y1), and a line may run
  right to left or bottom to top.  Only the view SDS selects is profiled (iipsrv lists every
  horizontal view, in JSON with bare numbers for keys).
* SPECTRA's bands are the pages of a stack, the horizontal views of an image sequence at the
  current vertical angle, or the image itself (one point).  A band's wavelength is its page
  name when the file names it, else its page index (the angle, for a sequence).
"""

from __future__ import annotations

import json
from typing import Protocol
from xml.sax.saxutils import escape

import numpy as np

from .. import planning
from ..errors import NotFound, TooLarge, image_not_set
from ..model import Ops, Quality
from ..planning import StoredTile, ViewRequest
from ..protocols.iip_data import DataCommand, Pfl, Spectra, Til
from ..responses import Response
from ..sources.base import ImageSource
from .context import RequestContext

JSON = "application/json"
XML = "application/xml"
NETFPX = "application/vnd.netfpx"
# Tiles one TIL response may hold: 1024 JPEG tiles are tens of megabytes, more than any
# viewer asks for at once; a larger rectangle is refused (413) rather than rendered.
MAX_TILES = 1024
# FlashPix tile header: compression type 2 (JPEG), then the JPEG subtype (interleaved,
# chroma 1:1, no internal colour conversion, tables in the stream), as iipsrv sends them.
JPEG_COMPRESSION = b"\x02\x00\x00\x00"
JPEG_SUBTYPE = b"\x00\x11\x00\x00"


class Session(Protocol):
    """What these commands read of the IIP handler's state."""

    image: ImageSource | None
    quality: Quality
    layers: int
    angles: tuple[int, int] | None
    ops: Ops  # processing commands: TIL's tiles are JTL's, processed alike

    def target(self, command: DataCommand) -> ImageSource: ...


def answer(command: DataCommand, session: Session, ctx: RequestContext) -> Response:
    if isinstance(command, Pfl):
        return _profile(command, session, ctx)
    if isinstance(command, Spectra):
        return _spectra(command, session, ctx)
    if isinstance(command, Til):
        return _tiles(command, session, ctx)
    raise TypeError(f"not a data command: {command!r}")


def _layered(source: ImageSource, session: Session, ctx: RequestContext) -> tuple[ImageSource, int]:
    """The source decoding the quality layers LYR and MAX_LAYERS allow, as the pipeline reads it."""
    layers = planning.quality_layers(session.layers, ctx.settings.max_layers)
    return (source.with_layers(layers) if layers else source), layers


def _level_index(source: ImageSource, resolution: int) -> int:
    """The stored level (0 = full size) of IIP resolution ``resolution`` (0 = smallest)."""
    count = len(source.info.levels)
    level = count - 1 - resolution
    if not 0 <= level < count:
        raise NotFound("resolution out of range", f"resolution {resolution} of {count}")
    return level


# -- PFL -----------------------------------------------------------------------------------------


def _profile(command: Pfl, session: Session, ctx: RequestContext) -> Response:
    source, layers = _layered(session.target(command), session, ctx)
    # Checked before the cache is asked: a line outside the image is a 404, never a 304.
    level = _level_index(source, command.resolution)
    lvl = source.info.levels[level]
    xs, ys = line_points(command.start, command.end, lvl.width, lvl.height)

    def build() -> Response:
        values = _values(ctx, source, level, xs, ys)
        body = json.dumps({"profile": values}, separators=(",", ": ")).encode("ascii")
        return Response(200, body, JSON)

    return ctx.respond(source, f"pfl/{command.text}/L{layers}", build)


def line_points(start: tuple[int, int], end: tuple[int, int], width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (xs, ys) along the line from ``start`` towards ``end`` (excluded) in a
    level of ``width`` x ``height``: one per step along the longer axis, the start alone when
    both ends are the same point.  NotFound when the start is not a pixel of the level or the
    end lies beyond its edges (the edge itself is allowed: it is not read)."""
    (x1, y1), (x2, y2) = start, end
    if not (0 <= x1 < width and 0 <= y1 < height and 0 <= x2 <= width and 0 <= y2 <= height):
        raise NotFound("profile outside the image", f"{x1},{y1}-{x2},{y2} in {width}x{height}")
    steps = max(abs(x2 - x1), abs(y2 - y1))
    if steps == 0:
        return np.array([x1]), np.array([y1])
    # Integer products divided once: a step that falls exactly half-way rounds the same way
    # (to even) on every machine.
    step = np.arange(steps, dtype=np.int64)
    xs = x1 + np.rint(step * (x2 - x1) / steps).astype(np.int64)
    ys = y1 + np.rint(step * (y2 - y1) / steps).astype(np.int64)
    # On the shorter axis the last steps may round onto the excluded edge: keep them inside.
    return np.clip(xs, 0, width - 1), np.clip(ys, 0, height - 1)


def _values(ctx: RequestContext, source: ImageSource, level: int, xs: np.ndarray, ys: np.ndarray) -> list[int]:
    """First-channel values of the pixels (xs, ys) of a level."""
    lvl = source.info.levels[level]
    cols, rows = xs // lvl.tile_width, ys // lvl.tile_height
    values = np.zeros(len(xs), dtype=np.int64)
    # Each tile the line crosses is read once (and usually comes from the worker cache).
    for col, row in sorted(set(zip(cols.tolist(), rows.tolist(), strict=True))):
        tile = ctx.pipeline.tile(source, level, col, row)
        here = (cols == col) & (rows == row)
        values[here] = tile[ys[here] - row * lvl.tile_height, xs[here] - col * lvl.tile_width, 0]
    return [int(v) for v in values]


# -- SPECTRA -------------------------------------------------------------------------------------


def bands(image: ImageSource, angles: tuple[int, int] | None) -> list[tuple[str, ImageSource]]:
    """The bands of a multispectral image with their wavelengths (see the module's notes)."""
    info = image.info
    if len(info.pages) > 1:
        # Unnamed pages are called "page N" by the sources: their wavelength is the index.
        return [
            (str(index) if name in ("", f"page {index}") else name, image.page(index))
            for index, name in enumerate(info.pages)
        ]
    if len(info.horizontal_views) > 1:
        vertical = angles[1] if angles is not None else info.vertical_views[0]
        return [(str(h), image.view(h, vertical)) for h in info.horizontal_views]
    return [("0", image)]


def _spectra(command: Spectra, session: Session, ctx: RequestContext) -> Response:
    if session.image is None:
        raise image_not_set(command.name)
    layers = planning.quality_layers(session.layers, ctx.settings.max_layers)
    spectrum = []
    for name, band in bands(session.image, session.angles):
        source = band.with_layers(layers) if layers else band
        spectrum.append((name, source, pixel_address(source, command, ctx)))
    # Every band's identity is in the key: the members of a sequence are files of their own.
    identities = ",".join(band.identity.token for _, band, _ in spectrum)

    def build() -> Response:
        lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<spectra>"]
        for name, band, (level, col, row) in spectrum:
            value = int(ctx.pipeline.tile(band, level, col, row)[command.y, command.x, 0])
            lines.append(
                f"\t<point>\n\t\t<wavelength>{escape(name)}</wavelength>\n"
                f"\t\t<reflectance>{value / 255:f}</reflectance>\n\t</point>"
            )
        lines.append("</spectra>")
        return Response(200, "\n".join(lines).encode("utf-8"), XML)

    return ctx.respond(session.image, f"spectra/{command.text}/L{layers}/{identities}", build)


def pixel_address(source: ImageSource, command: Spectra, ctx: RequestContext) -> tuple[int, int, int]:
    """(level, col, row) of the tile holding the pixel; NotFound for a resolution or tile the
    image does not have, or a pixel outside the tile (an edge tile counts only its real,
    cropped pixels)."""
    plan = planning.plan(ViewRequest(StoredTile(command.resolution, command.tile)), source.info, ctx.settings)
    assert plan.tile is not None  # a stored tile is always planned as one
    if not (0 <= command.x < plan.w and 0 <= command.y < plan.h):
        raise NotFound("pixel outside the tile", f"{command.x},{command.y} in {plan.w}x{plan.h}")
    return plan.level, *plan.tile


# -- TIL -----------------------------------------------------------------------------------------


def tile_numbers(source: ImageSource, command: Til) -> list[int]:
    """Row-major indices of the rectangle spanned by the start and end tiles, column by column
    (the order iipsrv sends them).  NotFound for a tile outside the level, TooLarge past
    MAX_TILES."""
    level = _level_index(source, command.resolution)
    lvl = source.info.levels[level]
    count = lvl.tiles_x * lvl.tiles_y
    if not (0 <= command.start < count and 0 <= command.end < count):
        raise NotFound("tile out of range", f"tiles {command.start}-{command.end} of {count}")
    (start_row, start_col), (end_row, end_col) = divmod(command.start, lvl.tiles_x), divmod(command.end, lvl.tiles_x)
    # The end tile may lie left of the start one: the rectangle is the same.
    cols = range(min(start_col, end_col), max(start_col, end_col) + 1)
    rows = range(start_row, end_row + 1)
    if len(cols) * len(rows) > MAX_TILES:
        raise TooLarge("too many tiles in one request", f"{len(cols)}x{len(rows)} tiles > {MAX_TILES}")
    return [col + row * lvl.tiles_x for col in cols for row in rows]


def _tiles(command: Til, session: Session, ctx: RequestContext) -> Response:
    source = session.target(command)
    numbers = tile_numbers(source, command)
    layers = planning.quality_layers(session.layers, ctx.settings.max_layers)

    def build() -> Response:
        parts = []
        for number in numbers:
            # The very plan JTL makes for this tile: the same bytes, passthrough included.
            view = ViewRequest(
                StoredTile(command.resolution, number), quality=session.quality, ops=session.ops, layers=session.layers
            )
            jpeg = ctx.pipeline.render(source, planning.plan(view, source.info, ctx.settings))
            head = b"Tile,%d,%d,0/%d:" % (command.resolution, number, len(jpeg) + 8)
            parts += [head, JPEG_COMPRESSION, JPEG_SUBTYPE, jpeg, b"\r\n"]
        return Response(200, b"".join(parts), NETFPX)

    canonical = f"til/{command.text}/{session.quality.canonical}/L{layers}/{session.ops.canonical}"
    return ctx.respond(source, canonical, build)
