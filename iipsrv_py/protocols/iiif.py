"""IIIF Image API 2.1 and 3.0 request parser.  Pure: path text and version in, request out.

``{identifier}/info.json``, ``{identifier}/{region}/{size}/{rotation}/{quality}.{format}``, or
the bare ``{identifier}`` (answered with a redirect to its info.json).  The path arrives as
the client sent it (percent-encoded); the identifier is the part before the last four
segments (or before ``/info.json``) and is percent-decoded only after that split, so an
identifier may hold ``/`` (sent as ``%2F`` or even literally).

Regions and sizes come out as the planner's neutral ``Region`` and ``Size``.  Syntax errors
raise BadRequest (400); whether a region lies inside the image, and whether a size is within
the server's limits, is decided by the planner, which knows the image.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import quote, unquote

from ..errors import BadRequest, NotFound
from ..planning import Region, Size

# Output formats served, by IIIF extension.
FORMATS = {"jpg": "jpeg", "png": "png", "webp": "webp", "avif": "avif", "tif": "tiff"}
QUALITIES = ("default", "color", "gray", "bitonal")
EXTENSION_QUALITIES = ("negative", "stretch", "equalization", "log")

# Decimal digits and "." only (3.0 section 4.7).  ASCII, so that other scripts' digits, which
# float() and int() would read, are syntax errors; always matched whole (fullmatch), since "$"
# would also accept a trailing newline.
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_PIXELS = re.compile(rf"({_NUMBER}),({_NUMBER}),({_NUMBER}),({_NUMBER})")
_SIZE_WH = re.compile(r"([0-9]*),([0-9]*)")


def region_text(region: Region) -> str:
    """A region in IIIF syntax."""
    if region.kind in ("full", "square"):
        return region.kind
    values = ",".join(_decimal(v) for v in (region.x, region.y, region.w, region.h))
    return f"pct:{values}" if region.kind == "percent" else values


def size_text(size: Size, version: int) -> str:
    """A size in IIIF syntax; in 3.0 ``^`` where upscaling is left to the server."""
    prefix = "^" if version >= 3 and size.upscale is None else ""
    body = {
        "max": "max",
        "width": f"{size.width},",
        "height": f",{size.height}",
        "percent": f"pct:{_decimal(size.percent)}",
        "exact": f"{size.width},{size.height}",
        "fit": f"!{size.width},{size.height}",
    }[size.kind]
    return prefix + body


@dataclass(frozen=True)
class ImageRequest:
    identifier: str  # decoded
    raw_identifier: str  # as sent, for building URLs
    region: Region
    size: Size  # strict: past a limit IIIF refuses; 3.0 without "^" never upscales
    rotation: float
    mirror: bool
    quality: str
    format: str  # IIIF extension: jpg, png, ...
    version: int = 3

    @property
    def rotation_text(self) -> str:
        return f"{'!' if self.mirror else ''}{_decimal(self.rotation)}"

    @property
    def canonical(self) -> str:
        size = size_text(self.size, self.version)
        return f"{region_text(self.region)}/{size}/{self.rotation_text}/{self.quality}.{self.format}"


@dataclass(frozen=True)
class InfoRequest:
    identifier: str
    raw_identifier: str


@dataclass(frozen=True)
class BaseRequest:
    """The bare identifier: answered with 303 to its info.json."""

    identifier: str
    raw_identifier: str


IIIFRequest = ImageRequest | InfoRequest | BaseRequest


def _bad(what: str, text: str) -> BadRequest:
    shown = "".join(c if c.isprintable() else "?" for c in text)[:100]
    return BadRequest(f"invalid IIIF {what}: {shown}")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _integer(text: str) -> int:
    """int() refuses strings of thousands of digits (ValueError): a syntax error here too."""
    return int(text) if text else 0


def _decimal(value: float) -> str:
    """The shortest text that reads back as ``value``, in digits and "." only (no exponent),
    so that a canonical form parses again to the same request."""
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


def parse_region(text: str) -> Region:
    if text in ("full", "square"):
        return Region(text)
    kind, body = ("percent", text[4:]) if text.startswith("pct:") else ("pixels", text)
    match = _PIXELS.fullmatch(body)
    if not match:
        raise _bad("region", text)
    try:
        x, y, w, h = (_finite(v) for v in match.groups())
    except ValueError:  # digits beyond the float range
        raise _bad("region", text) from None
    if w <= 0 or h <= 0:
        raise _bad("region", text)
    return Region(kind, x, y, w, h)


def parse_size(text: str, version: int) -> Size:
    """A size as the planner takes it: IIIF refuses what exceeds the server's limits
    (``strict``), and in 3.0 a size may exceed the region only with the ``^`` prefix (then,
    as in 2.1, ALLOW_UPSCALING decides: ``upscale`` None)."""
    upscale = text.startswith("^")
    body = text[1:] if upscale else text
    if upscale and version < 3:
        raise _bad("size", text)  # "^" is new in 3.0
    allowed: bool | None = None if upscale or version < 3 else False
    if body == "max":
        return Size("max", upscale=allowed, strict=True)
    if body == "full":
        if version >= 3:
            raise _bad("size", text)  # 3.0 replaced full by max
        return Size("max", strict=True)
    if body.startswith("pct:"):
        try:
            percent = _finite(body[4:])
        except ValueError:
            raise _bad("size", text) from None
        if percent <= 0 or (version >= 3 and not upscale and percent > 100):
            raise _bad("size", text)
        return Size("percent", percent=percent, upscale=allowed, strict=True)
    fit = body.startswith("!")
    match = _SIZE_WH.fullmatch(body[1:] if fit else body)
    if not match:
        raise _bad("size", text)
    w_text, h_text = match.groups()
    try:
        width, height = _integer(w_text), _integer(h_text)
    except ValueError:
        raise _bad("size", text) from None
    if (w_text and width <= 0) or (h_text and height <= 0) or not (w_text or h_text):
        raise _bad("size", text)
    if fit:
        if not (w_text and h_text):
            raise _bad("size", text)
        return Size("fit", width, height, upscale=allowed, strict=True)
    if w_text and h_text:
        return Size("exact", width, height, upscale=allowed, strict=True)
    if w_text:
        return Size("width", width=width, upscale=allowed, strict=True)
    return Size("height", height=height, upscale=allowed, strict=True)


def parse_rotation(text: str) -> tuple[float, bool]:
    mirror = text.startswith("!")
    body = text[1:] if mirror else text
    if not re.fullmatch(_NUMBER, body):
        raise _bad("rotation", text)
    angle = float(body)
    if angle > 360:  # also inf, from more digits than a float holds
        raise _bad("rotation", text)
    return angle, mirror


def parse_quality_format(text: str, version: int, extensions: bool) -> tuple[str, str]:
    quality, dot, fmt = text.rpartition(".")
    if not dot:
        raise _bad("quality", text)
    allowed = QUALITIES + (("native",) if version < 3 else ()) + (EXTENSION_QUALITIES if extensions else ())
    if quality not in allowed:
        raise _bad("quality", quality)
    if fmt not in FORMATS:
        raise _bad("format", fmt)
    return ("default" if quality == "native" else quality), fmt


def _identifier(raw: str) -> tuple[str, str]:
    raw = raw.strip("/")
    if not raw:
        # Nothing under the IIIF prefix: no IIIF route has that shape.
        raise NotFound("no such IIIF resource: expected <identifier>/info.json or an image request")
    # Re-quote what a client left unescaped, so the raw form is always safe inside a URL
    # (lone surrogates, which only the debug mode's stdin can carry, included).
    safe_raw = quote(raw, safe="/%:@!$&'()*+,;=-._~", errors="surrogatepass")
    return unquote(raw), safe_raw


def parse(path: str, version: int, extensions: bool = False) -> IIIFRequest:
    """``path`` is everything after the IIIF prefix (or the IIIF= argument), not decoded."""
    path = path.lstrip("/")
    if path.endswith("/info.json") or path == "info.json":
        identifier, raw = _identifier(path[: -len("info.json")])
        return InfoRequest(identifier, raw)
    segments = path.split("/")
    if len(segments) >= 5 and "." in segments[-1]:
        identifier, raw = _identifier("/".join(segments[:-4]))
        region_text, size_text, rotation_text, last = (unquote(s) for s in segments[-4:])
        region = parse_region(region_text)
        size = parse_size(size_text, version)
        rotation, mirror = parse_rotation(rotation_text)
        quality, fmt = parse_quality_format(last, version, extensions)
        return ImageRequest(identifier, raw, region, size, rotation, mirror, quality, fmt, version)
    identifier, raw = _identifier(path)
    return BaseRequest(identifier, raw)
