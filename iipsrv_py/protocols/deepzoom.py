"""DeepZoom request parser.  Pure: ``<id>.dzi`` or ``<id>_files/<level>/<x>_<y>.<ext>``.

A path of neither shape names nothing DeepZoom serves (404); a tile of an unknown format is a
bad request (400)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from ..errors import BadRequest, NotFound
from .tiles import LevelTileRequest

# Tile extensions and the encodings they select.
FORMATS = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "webp": "webp"}
_TILE = re.compile(r"^(?P<id>.+)_files/(?P<level>\d{1,3})/(?P<x>\d{1,9})_(?P<y>\d{1,9})\.(?P<ext>[A-Za-z0-9]{1,10})$")


@dataclass(frozen=True)
class DziRequest:
    identifier: str


def parse(path: str) -> DziRequest | LevelTileRequest:
    path = path.lstrip("/")
    if path.endswith(".dzi") and len(path) > 4:
        return DziRequest(unquote(path[:-4]))
    match = _TILE.match(path)
    if not match:
        raise NotFound("no such DeepZoom resource: expected <image>.dzi or <image>_files/<level>/<x>_<y>.<ext>")
    encoding = FORMATS.get(match["ext"].lower())
    if encoding is None:
        raise BadRequest(f"unsupported DeepZoom tile format: {match['ext'][:10]}")
    return LevelTileRequest(unquote(match["id"]), int(match["level"]), int(match["x"]), int(match["y"]), encoding)
