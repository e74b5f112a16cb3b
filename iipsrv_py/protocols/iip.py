"""The IIP request parser: query text in, a frozen IIPRequest out.  Pure: no I/O, no settings.

``FIF=a.tif&WID=500&CVT=jpeg`` -> IIPRequest(commands=(Command('FIF', 'a.tif'), ...)).

Rules (SPEC section 2): split on ``&``, skip empty tokens, split each at the first ``=``;
pairs with an empty name or value are ignored.  Names are case-insensitive.  Only FIF, IIIF,
CTW and CNV arguments are URL-decoded.  An unknown command is IIP error ``2 2``; an argument
that cannot be read is ``2 1`` (malformed), never a crash.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote_plus

from ..errors import IIPError, malformed, unsupported_command
from ..model import Quality

# CVT names -> encodings.  Unknown names fall back to JPEG, as iipsrv does.
CVT_FORMATS = {
    "jpeg": "jpeg",
    "jpg": "jpeg",
    "png": "png",
    "webp": "webp",
    "avif": "avif",
    "tiff": "tiff",
    "tif": "tiff",
}
# Commands that carry a whole request of another protocol.
PROTOCOL_COMMANDS = ("IIIF", "DEEPZOOM", "ZOOMIFY")
# Tile commands -> encodings.
TILE_COMMANDS = {"JTL": "jpeg", "PTL": "png", "WTL": "webp", "ATL": "avif", "TTL": "tiff"}
TIFF_CODECS = ("lzw", "deflate", "jpeg", "webp", "zstd", "none")


@dataclass(frozen=True)
class Command:
    name: str  # upper case
    value: Any  # typed argument: see the parser of each command below
    text: str  # canonical argument text

    @property
    def canonical(self) -> str:
        return f"{self.name}={self.text}"


@dataclass(frozen=True)
class IIPRequest:
    commands: tuple[Command, ...]

    @property
    def canonical(self) -> str:
        return "&".join(command.canonical for command in self.commands)


def _bad(name: str, raw: str) -> IIPError:
    return malformed(f"{name}={raw}")


def _number(name: str, raw: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad(name, raw) from None
    if not math.isfinite(value):
        raise _bad(name, raw)
    return value


def _integer(name: str, raw: str, text: str) -> int:
    # iipsrv reads these with atoi(); accept "500" and "500.0", refuse words.
    value = _number(name, raw, text.strip())
    if abs(value) > 2**31:
        raise _bad(name, raw)
    return int(value)


def _integers(name: str, raw: str, count: int) -> tuple[int, ...] | None:
    parts = raw.split(",")
    if len(parts) != count:
        return None
    return tuple(_integer(name, raw, part) for part in parts)


def _size(name: str, raw: str) -> tuple[int, str]:
    value = _integer(name, raw, raw)
    if value < 0:
        raise _bad(name, raw)
    return value, str(value)


def _region(name: str, raw: str) -> tuple[tuple[float, float, float, float] | None, str]:
    parts = raw.split(",")
    values = [_number(name, raw, part) for part in parts]
    if len(values) != 4 or values[2] <= 0 or values[3] <= 0:
        return None, raw  # iipsrv ignores such a region
    x, y, w, h = (min(max(v, 0.0), 1.0) for v in values)
    return (x, y, w, h), ",".join(repr(v) for v in (x, y, w, h))


def _quality(name: str, raw: str) -> tuple[Quality, str]:
    comp, sep, level_text = raw.partition(":")
    if not sep:
        if raw.strip().lower() in TIFF_CODECS:
            comp, level_text = raw, ""
        else:
            comp, level_text = "", raw
    comp = comp.strip().lower()
    if comp and comp not in TIFF_CODECS:
        raise _bad(name, raw)
    level = _integer(name, raw, level_text) if level_text.strip() else None
    if comp == "" and level is None:
        raise _bad(name, raw)
    arg = Quality(level, comp or None)
    text = f"{comp}:{'' if level is None else level}" if comp else str(level)
    return arg, text


def _cvt(name: str, raw: str) -> tuple[str, str]:
    encoding = CVT_FORMATS.get(raw.strip().lower(), "jpeg")
    return encoding, encoding


def _tile(name: str, raw: str) -> tuple[tuple[int, int], str]:
    values = _integers(name, raw, 2)
    if values is None:
        raise _bad(name, raw)
    return (values[0], values[1]), f"{values[0]},{values[1]}"


def _jtls(name: str, raw: str) -> tuple[tuple[int, ...] | None, str]:
    values = _integers(name, raw, 4)
    return values, raw if values is None else ",".join(map(str, values))


def _sds(name: str, raw: str) -> tuple[tuple[int, int], str]:
    parts = raw.split(",")
    if len(parts) > 2:
        raise _bad(name, raw)
    x = _integer(name, raw, parts[0])
    y = _integer(name, raw, parts[1]) if len(parts) == 2 else 0
    return (x, y), f"{x},{y}"


def _path(name: str, raw: str) -> tuple[str, str]:
    # Lone surrogates (undecodable bytes read with surrogateescape, e.g. on the --debug stdin)
    # become U+FFFD, as undecodable %xx escapes already do, so the path can be re-encoded.
    value = unquote_plus(raw).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    # The canonical text is URL-encoded again, so that it parses back to the same path even
    # when the path holds "&", "=", "+" or "%".
    return value, quote(value, safe="/")


def _protocol_path(name: str, raw: str) -> tuple[str, str]:
    # IIIF, DeepZoom and Zoomify paths go to their own parsers still percent-encoded: an
    # IIIF identifier may hold an encoded "/" that must not split it.  "+" is a space in a
    # query string, so it is made %20 here, where that is known.
    value = raw.replace("+", "%20")
    return value, value


def _object(name: str, raw: str) -> tuple[str, str]:
    # The text keeps surrounding blanks: "OBJ= " names an (unsupported) empty object, and an
    # empty canonical value would be dropped when parsed again.
    return raw.strip().lower(), raw.lower()


_PARSERS: dict[str, Callable[[str, str], tuple[object, str]]] = {
    "FIF": _path,
    "OBJ": _object,
    "WID": _size,
    "HEI": _size,
    "RGN": _region,
    "QLT": _quality,
    "CVT": _cvt,
    "JTLS": _jtls,
    "SDS": _sds,
    "LYR": _size,  # JPEG 2000 quality layers to decode, >= 0 (0: all)
    "IIIF": _protocol_path,
    "DEEPZOOM": _protocol_path,
    "ZOOMIFY": _protocol_path,
    **dict.fromkeys(TILE_COMMANDS, _tile),
}


def parse(query: str) -> IIPRequest:
    commands: list[Command] = []
    for token in query.split("&"):
        if not token:
            continue
        name, _, raw = token.partition("=")
        if not name or not raw:
            continue
        # ASCII case folding, as iipsrv's toupper: "\ufb01f".upper() is "FIF" and must not alias it.
        upper = name.upper() if name.isascii() else name
        parser = _PARSERS.get(upper)
        if parser is None:
            raise unsupported_command(name)
        value, text = parser(upper, raw)
        commands.append(Command(upper, value, text))
    return IIPRequest(tuple(commands))
