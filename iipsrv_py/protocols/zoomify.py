"""Zoomify request parser.  Pure: ``<id>/ImageProperties.xml`` or
``<id>/TileGroup<g>/<z>-<x>-<y>.<ext>`` (the tile group is not checked, as in iipsrv).

A path of neither shape names nothing Zoomify serves (404); a tile of an unknown format is a
bad request (400)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from ..errors import BadRequest, NotFound
from .deepzoom import FORMATS
from .tiles import LevelTileRequest

_TILE = re.compile(
    r"^(?P<id>.+)/TileGroup\d{1,9}/(?P<z>\d{1,3})-(?P<x>\d{1,9})-(?P<y>\d{1,9})\.(?P<ext>[A-Za-z0-9]{1,10})$"
)


@dataclass(frozen=True)
class PropertiesRequest:
    identifier: str


def parse(path: str) -> PropertiesRequest | LevelTileRequest:
    path = path.lstrip("/")
    if path.endswith("/ImageProperties.xml") and len(path) > len("/ImageProperties.xml"):
        return PropertiesRequest(unquote(path[: -len("/ImageProperties.xml")]))
    match = _TILE.match(path)
    if not match:
        raise NotFound(
            "no such Zoomify resource: expected <image>/ImageProperties.xml or <image>/TileGroup<g>/<z>-<x>-<y>.jpg"
        )
    encoding = FORMATS.get(match["ext"].lower())
    if encoding is None:
        raise BadRequest(f"unsupported Zoomify tile format: {match['ext'][:10]}")
    return LevelTileRequest(unquote(match["id"]), int(match["z"]), int(match["x"]), int(match["y"]), encoding)
