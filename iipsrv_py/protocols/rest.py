"""The slide REST API's paths (WSI Streamer's routes, plus ours).  Pure: path and query text in,
one frozen route object out, or a BadRequest / NotFound carrying the API's error code.

Routes (``{id}`` may hold ``/``, sent as ``%2F`` or as plain path segments)::

    /health
    /slides?limit=&cursor=&prefix=&search=
    /slides/{id}
    /slides/{id}/thumbnail?max_size=
    /slides/{id}/associated/{name}
    /slides/{id}/dzi
    /slides/{id}/dzi_files/{level}/{col}_{row}.{ext}
    /tiles/{id}/{level}/{x}/{y}[.{ext}]?quality=
    /view/{id}

The prefixes ``/slides``, ``/tiles`` and ``/view`` (and the path ``/health``) are claimed: a path
under them that is none of these is a 404.  Sub-resources are recognised by their final segments
as sent, so an id segment holding ``%2F`` never looks like one (``/slides/a%2Fdzi`` is slide
``a/dzi``).  Every route has a ``slide_id`` (None for those about no slide) so that a check made
before any handler runs (signed URLs) knows which slide a request is for.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

from ..errors import BadRequest, NotFound

PREFIXES = ("slides", "tiles", "view")
HEALTH = "/health"
# The viewer's own files (its script and style, OpenSeadragon): public, never signed, so a slide
# whose id starts with "_assets/" has no viewer page (its other routes work).
ASSETS = "/view/_assets/"

# Tile extensions and the encodings they select (no extension: JPEG).
FORMATS = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "webp": "webp"}
DEFAULT_LIMIT, MIN_LIMIT, MAX_LIMIT = 100, 1, 1000
DEFAULT_QUALITY = 80
DEFAULT_THUMBNAIL, MIN_THUMBNAIL, MAX_THUMBNAIL = 512, 64, 2048
# Numbers in paths and queries: anything longer is out of every range anyway.
_NUMBER = re.compile(r"\d{1,9}")
_DZI_TILE = re.compile(r"(?P<col>\d{1,9})_(?P<row>\d{1,9})\.(?P<ext>[A-Za-z0-9]{1,10})")
_TILE_Y = re.compile(r"(?P<y>[^.]*)(?:\.(?P<ext>[^.]*))?")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Health:
    slide_id: None = None


@dataclass(frozen=True)
class SlideList:
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None  # the last id of the previous page (decoded)
    prefix: str = ""
    search: str = ""
    slide_id: None = None


@dataclass(frozen=True)
class SlideInfo:
    slide_id: str


@dataclass(frozen=True)
class Thumbnail:
    slide_id: str
    max_size: int = DEFAULT_THUMBNAIL  # clamped into MIN_THUMBNAIL..MAX_THUMBNAIL
    requested: int = DEFAULT_THUMBNAIL  # as asked for
    clamped: bool = False


@dataclass(frozen=True)
class Associated:
    slide_id: str
    name: str  # label, macro, thumbnail...


@dataclass(frozen=True)
class Dzi:
    slide_id: str


@dataclass(frozen=True)
class DziTile:
    """Tile (col, row) of DeepZoom level ``level`` (DeepZoom's numbering: 0 is 1x1)."""

    slide_id: str
    level: int
    col: int
    row: int
    encoding: str


@dataclass(frozen=True)
class Tile:
    """Tile (x, y) of pyramid level ``level`` (0 = full resolution), in that level's own grid."""

    slide_id: str
    level: int
    x: int
    y: int
    encoding: str = "jpeg"
    quality: int = DEFAULT_QUALITY


@dataclass(frozen=True)
class View:
    """The viewer page of a slide; ``exp`` the expiry of its signed URL ("" unsigned), which the
    viewer token it hands its page shares."""

    slide_id: str
    exp: str = ""


@dataclass(frozen=True)
class Index:
    """``/`` with no query: the slide list page (``exp`` as for View, for its signed links)."""

    exp: str = ""
    slide_id: None = None


@dataclass(frozen=True)
class Asset:
    """A file the viewer pages load: ``/view/_assets/<path>`` (``path`` as sent)."""

    path: str
    slide_id: None = None


RestRoute = Health | SlideList | SlideInfo | Thumbnail | Associated | Dzi | DziTile | Tile | View | Index | Asset
# The routes a viewer token (``vt``, signed URLs) opens, for its own slide only: what the viewer
# page loads.  The page itself and the slide list need a full signature.
VIEWER_TOKEN_ROUTES = (SlideInfo, Thumbnail, Associated, Dzi, DziTile, Tile)


def claims(path: str) -> bool:
    """Whether a request path (as sent) belongs to the REST API."""
    if path == HEALTH:
        return True
    first = path[1:].split("/", 1)[0] if path.startswith("/") else ""
    return first in PREFIXES


def parse(path: str, query: str = "") -> RestRoute:
    """The route of a claimed ``path`` (percent-encoded, as sent) with its query string."""
    if path == HEALTH:
        return Health()
    segments = path[1:].split("/")
    head, rest = segments[0], segments[1:]
    if rest and rest[-1] == "" and len(rest) > 1:
        rest = rest[:-1]  # one trailing slash is the same resource
    params = _params(query)
    if head == "slides":
        if not rest or rest == [""]:
            return _slide_list(params)
        return _slide(rest, params)
    if head == "tiles":
        return _tile(rest, params)
    if head == "view":
        if path.startswith(ASSETS):
            return Asset(path[len(ASSETS) :])
        return View(_slide_id(rest), params.get("exp", ""))
    raise NotFound("no such resource", f"path {path[:200]!r}")


def index(query: str) -> Index:
    """``/`` with no request in ``query`` (only, perhaps, its signature): the slide list page."""
    return Index(_params(query).get("exp", ""))


def _params(query: str) -> dict[str, str]:
    """The query's parameters, the first of each name (others are left to other checks, such as
    a signature's)."""
    found: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        found.setdefault(name, value)
    return found


def _slide_id(segments: list[str]) -> str:
    """The id the segments spell, each segment percent-decoded (``%2F`` is a ``/``)."""
    if not segments or any(not s for s in segments):
        raise NotFound("no such resource", "empty slide id or path segment")
    return "/".join(unquote(s, errors="surrogateescape") for s in segments)


def _integer(params: dict[str, str], name: str, default: int, code: str) -> int:
    text = params.get(name)
    if text is None or text == "":
        return default
    text = text.strip()
    negative = text.startswith("-")
    digits = text[1:] if negative else text
    if not digits.isdigit() or not digits.isascii():
        raise BadRequest(f"{name} must be an integer", f"{name}={text[:40]!r}", code)
    value = int(digits[:12]) if len(digits) <= 12 else 10**12
    return -value if negative else value


def _slide_list(params: dict[str, str]) -> SlideList:
    limit = max(MIN_LIMIT, min(MAX_LIMIT, _integer(params, "limit", DEFAULT_LIMIT, "invalid_limit")))
    cursor = params.get("cursor") or None
    return SlideList(
        limit,
        decode_cursor(cursor) if cursor is not None else None,
        params.get("prefix", ""),
        params.get("search", ""),
    )


def encode_cursor(last_id: str) -> str:
    """The opaque continuation token after ``last_id``: its UTF-8 in URL-safe base64."""
    return base64.urlsafe_b64encode(last_id.encode("utf-8", "surrogateescape")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("invalid cursor", f"cursor {cursor[:60]!r}", "invalid_cursor") from exc
    if not text or encode_cursor(text) != cursor.rstrip("="):
        raise BadRequest("invalid cursor", f"cursor {cursor[:60]!r}", "invalid_cursor")
    return text


def _slide(segments: list[str], params: dict[str, str]) -> RestRoute:
    last = segments[-1]
    if len(segments) >= 3 and segments[-2] == "associated":
        if not _NAME.fullmatch(last):
            raise NotFound("no such associated image", f"name {last[:64]!r}")
        return Associated(_slide_id(segments[:-2]), last)
    if len(segments) >= 2 and last == "thumbnail":
        requested = _integer(params, "max_size", DEFAULT_THUMBNAIL, "invalid_max_size")
        size = max(MIN_THUMBNAIL, min(MAX_THUMBNAIL, requested))
        return Thumbnail(_slide_id(segments[:-1]), size, requested, size != requested)
    if len(segments) >= 2 and last == "dzi":
        return Dzi(_slide_id(segments[:-1]))
    if len(segments) >= 4 and segments[-3] == "dzi_files":
        level, name = segments[-2], segments[-1]
        match = _DZI_TILE.fullmatch(name)
        if not _NUMBER.fullmatch(level) or not match:
            raise NotFound("no such DeepZoom tile: expected dzi_files/<level>/<col>_<row>.<ext>")
        encoding = _encoding(match["ext"])
        return DziTile(_slide_id(segments[:-3]), int(level), int(match["col"]), int(match["row"]), encoding)
    return SlideInfo(_slide_id(segments))


def _encoding(ext: str) -> str:
    """The output encoding a tile's extension names; BadRequest ``invalid_format`` otherwise."""
    encoding = FORMATS.get(ext.lower())
    if encoding is None:
        raise BadRequest(f"unsupported tile format: {ext[:10]!r}", api_code="invalid_format")
    return encoding


def _tile(segments: list[str], params: dict[str, str]) -> Tile:
    if len(segments) < 4:
        raise NotFound("no such resource: expected /tiles/{slide_id}/{level}/{x}/{y}.jpg")
    level, x, last = segments[-3], segments[-2], segments[-1]
    match = _TILE_Y.fullmatch(last)
    y = match["y"] if match else last
    ext = match["ext"] if match else None
    slide_id = _slide_id(segments[:-3])
    if not _NUMBER.fullmatch(level):
        raise BadRequest("level must be a non-negative integer", f"level {level[:20]!r}", "invalid_level")
    if not (_NUMBER.fullmatch(x) and _NUMBER.fullmatch(y)):
        raise BadRequest("tile coordinates must be non-negative integers", f"{x[:20]!r},{y[:20]!r}", "invalid_tile")
    encoding = "jpeg" if ext is None else _encoding(ext)
    quality = _integer(params, "quality", DEFAULT_QUALITY, "invalid_quality")
    if not 1 <= quality <= 100:
        raise BadRequest("quality must be an integer between 1 and 100", f"quality={quality}", "invalid_quality")
    return Tile(slide_id, int(level), int(x), int(y), encoding, quality)
