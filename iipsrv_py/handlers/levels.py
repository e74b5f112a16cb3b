"""Tiles of a protocol's own pyramid (DeepZoom, Zoomify), whatever levels the file stores.

Both protocols define levels that need not exist in the file.  A tile of such a level is a
region of the full image at an output size; planning then reads the smallest stored level
that has enough pixels, so missing levels are made from the nearest larger stored one.  When
the protocol's tile happens to be a stored tile, it takes the tile path (and passthrough).
"""

from __future__ import annotations

from ..model import ImageInfo
from ..planning import Region, TileView, View, match_tile


def tile_view(
    info: ImageInfo,
    rect: tuple[int, int, int, int],
    scale: tuple[float, float],
    encoding: str,
) -> View | TileView:
    """The view for ``rect`` (x0, y0, x1, y1 in the protocol level's pixels) of a level that is
    ``scale`` times smaller than the full image."""
    x0, y0, x1, y1 = rect
    sx, sy = scale
    fx, fy = x0 * sx, y0 * sy
    fw, fh = min((x1 - x0) * sx, info.width - fx), min((y1 - y0) * sy, info.height - fy)
    out_w, out_h = x1 - x0, y1 - y0
    if all(float(v).is_integer() for v in (fx, fy, fw, fh)):
        tile = match_tile(info, int(fx), int(fy), int(fw), int(fh), out_w, out_h)
        if tile is not None:
            return TileView(tile[0], tile[1], tile[2], encoding)
    return View(Region("pixels", fx, fy, fw, fh), out_w, out_h, fit=False, upscale=True, encoding=encoding)
