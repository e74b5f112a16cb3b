"""The IIP request parser: query text in, a frozen IIPRequest of typed commands out.  Pure.

``FIF=a.tif&WID=500&CVT=jpeg`` -> IIPRequest((Fif('a.tif'), Wid(500), Cvt('jpeg'))).

Rules (SPEC section 2): split on ``&``, skip empty tokens, split each at the first ``=``;
pairs with an empty name or value are ignored.  Names are case-insensitive.  Only FIF, IIIF,
CTW and CNV arguments are URL-decoded.  An unknown command is IIP error ``2 2``; an argument
that cannot be read is ``2 1`` (malformed), never a crash.

Each command is a small frozen dataclass holding its typed argument; ``canonical`` is the text
of the command that parses back to the same command.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import quote, unquote_plus

from ..errors import IIPError, malformed, unsupported_command
from ..model import Quality
from ..transforms.processing import COLOUR_MAPS, NAMED_KERNELS

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
# Commands that carry a whole request of another protocol, and the protocol's name.
PROTOCOL_COMMANDS = {"IIIF": "IIIF", "DEEPZOOM": "DeepZoom", "ZOOMIFY": "Zoomify"}
# Tile commands -> encodings.
TILE_COMMANDS = {"JTL": "jpeg", "PTL": "png", "WTL": "webp", "ATL": "avif", "TTL": "tiff"}
TIFF_CODECS = ("lzw", "deflate", "jpeg", "webp", "zstd", "none")


class Command:
    """One command of an IIP request."""

    NAME: ClassVar[str] = ""

    @property
    def name(self) -> str:
        return self.NAME

    @property
    def text(self) -> str:
        """The argument as it parses back to the same command."""
        raise NotImplementedError

    @property
    def canonical(self) -> str:
        return f"{self.name}={self.text}"


@dataclass(frozen=True)
class Fif(Command):
    NAME: ClassVar[str] = "FIF"
    path: str  # URL-decoded

    @property
    def text(self) -> str:
        # URL-encoded again, so that it parses back to the same path even when the path
        # holds "&", "=", "+" or "%".
        return quote(self.path, safe="/")


@dataclass(frozen=True)
class Obj(Command):
    NAME: ClassVar[str] = "OBJ"
    object: str  # lower case, blanks stripped
    raw: str  # lower case as sent: "OBJ= " names an (unsupported) empty object

    @property
    def text(self) -> str:
        return self.raw


@dataclass(frozen=True)
class _Count(Command):
    """A command whose argument is one non-negative integer."""

    value: int

    @property
    def text(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class Wid(_Count):
    NAME: ClassVar[str] = "WID"


@dataclass(frozen=True)
class Hei(_Count):
    NAME: ClassVar[str] = "HEI"


@dataclass(frozen=True)
class Lyr(_Count):
    """JPEG 2000 quality layers to decode (0: all)."""

    NAME: ClassVar[str] = "LYR"


@dataclass(frozen=True)
class Rgn(Command):
    NAME: ClassVar[str] = "RGN"
    # (x, y, w, h) fractions of the full image clamped to [0, 1]; None when iipsrv would
    # ignore the region (not four values, or w or h not positive), and then ``raw`` is the
    # argument as given (its canonical text); "" otherwise, so that "0,0,1,1" and
    # "0.0,0.0,1.0,1.0" are one request.
    region: tuple[float, float, float, float] | None
    raw: str = ""

    @property
    def text(self) -> str:
        return self.raw if self.region is None else ",".join(repr(v) for v in self.region)


@dataclass(frozen=True)
class Qlt(Command):
    NAME: ClassVar[str] = "QLT"
    quality: Quality

    @property
    def text(self) -> str:
        q = self.quality
        level = "" if q.level is None else str(q.level)
        return f"{q.compression}:{level}" if q.compression else level


@dataclass(frozen=True)
class Cvt(Command):
    NAME: ClassVar[str] = "CVT"
    encoding: str

    @property
    def text(self) -> str:
        return self.encoding


@dataclass(frozen=True)
class Tile(Command):
    """JTL, PTL, WTL, ATL, TTL ``res,tile`` (and a complete JTLS): one stored tile."""

    command: str  # JTL, PTL, ... or JTLS
    resolution: int
    index: int
    angles: tuple[int, int] | None = None  # JTLS's x and y, which select nothing here

    @property
    def name(self) -> str:
        return self.command

    @property
    def encoding(self) -> str:
        return TILE_COMMANDS.get(self.command, "jpeg")

    @property
    def text(self) -> str:
        if self.angles is not None:
            return f"{self.angles[0]},{self.resolution},{self.index},{self.angles[1]}"
        return f"{self.resolution},{self.index}"


@dataclass(frozen=True)
class Ignored(Command):
    """A command iipsrv reads and then ignores (JTLS without its four values)."""

    command: str
    raw: str

    @property
    def name(self) -> str:
        return self.command

    @property
    def text(self) -> str:
        return self.raw


@dataclass(frozen=True)
class Sds(Command):
    """Stack page (x) or image-sequence angles (x, y)."""

    NAME: ClassVar[str] = "SDS"
    horizontal: int
    vertical: int = 0

    @property
    def text(self) -> str:
        return f"{self.horizontal},{self.vertical}"


@dataclass(frozen=True)
class ProtocolCommand(Command):
    """IIIF=, DeepZoom=, Zoomify=: a whole request of another protocol."""

    command: str  # IIIF, DEEPZOOM, ZOOMIFY
    path: str  # still percent-encoded: the protocol's parser decodes it

    @property
    def name(self) -> str:
        return self.command

    @property
    def protocol(self) -> str:
        return PROTOCOL_COMMANDS[self.command]

    @property
    def text(self) -> str:
        return self.path


# -- processing commands (SPEC section 4): each sets one part of the view's Ops ---------------


@dataclass(frozen=True)
class Cnt(Command):
    """Contrast: a factor, or "stretch" / "equalization"."""

    NAME: ClassVar[str] = "CNT"
    factor: float = 1.0
    mode: str = ""

    @property
    def text(self) -> str:
        return self.mode or repr(self.factor)


@dataclass(frozen=True)
class Gam(Command):
    """Gamma: an exponent, or the logarithm."""

    NAME: ClassVar[str] = "GAM"
    gamma: float = 1.0
    log: bool = False

    @property
    def text(self) -> str:
        return "log" if self.log else repr(self.gamma)


@dataclass(frozen=True)
class MinMax(Command):
    """The range a channel (0-based; -1 every channel) is normalised from."""

    NAME: ClassVar[str] = "MINMAX"
    channel: int
    minimum: float
    maximum: float

    @property
    def text(self) -> str:
        channel = "-" if self.channel < 0 else str(self.channel + 1)
        return f"{channel}:{self.minimum!r},{self.maximum!r}"


@dataclass(frozen=True)
class Inv(Command):
    NAME: ClassVar[str] = "INV"

    @property
    def text(self) -> str:
        return "1"


@dataclass(frozen=True)
class Cmp(Command):
    NAME: ClassVar[str] = "CMP"
    cmap: str

    @property
    def text(self) -> str:
        return self.cmap


@dataclass(frozen=True)
class Ctw(Command):
    """Colour twist: each row one output band, a weighted sum of the input bands."""

    NAME: ClassVar[str] = "CTW"
    matrix: tuple[tuple[float, ...], ...]

    @property
    def text(self) -> str:
        return quote("[" + ";".join(",".join(map(repr, row)) for row in self.matrix) + "]", safe="")


@dataclass(frozen=True)
class Col(Command):
    NAME: ClassVar[str] = "COL"
    colour: str  # "gray" or "bitonal"

    @property
    def text(self) -> str:
        return "binary" if self.colour == "bitonal" else "gray"


@dataclass(frozen=True)
class Shd(Command):
    NAME: ClassVar[str] = "SHD"
    horizontal: float
    vertical: float

    @property
    def text(self) -> str:
        return f"{self.horizontal!r},{self.vertical!r}"


@dataclass(frozen=True)
class Cnv(Command):
    """Convolution with a named or a given square kernel (row-major)."""

    NAME: ClassVar[str] = "CNV"
    kernel: tuple[float, ...]
    named: str = ""

    @property
    def text(self) -> str:
        return self.named or quote("[" + ",".join(map(repr, self.kernel)) + "]", safe="")


@dataclass(frozen=True)
class Rot(Command):
    NAME: ClassVar[str] = "ROT"
    degrees: float
    mirror: bool = False

    @property
    def text(self) -> str:
        return f"{'!' if self.mirror else ''}{self.degrees!r}"


@dataclass(frozen=True)
class Bit(Command):
    """Bits per sample of PNG and TIFF output (8, or 16 for sources of more than 8 bits)."""

    NAME: ClassVar[str] = "BIT"
    bits: int

    @property
    def text(self) -> str:
        return str(self.bits)


@dataclass(frozen=True)
class IIPRequest:
    commands: tuple[Command, ...]

    @property
    def canonical(self) -> str:
        return "&".join(command.canonical for command in self.commands)

    @property
    def protocol_command(self) -> ProtocolCommand | None:
        """The first command that hands the whole request to another protocol, if any."""
        return next((c for c in self.commands if isinstance(c, ProtocolCommand)), None)


# -- argument parsers -------------------------------------------------------------------------


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


def _count(name: str, raw: str) -> int:
    value = _integer(name, raw, raw)
    if value < 0:
        raise _bad(name, raw)
    return value


def _fif(name: str, raw: str) -> Command:
    # Lone surrogates (undecodable bytes read with surrogateescape, e.g. on the --debug stdin)
    # become U+FFFD, as undecodable %xx escapes already do, so the path can be re-encoded.
    return Fif(unquote_plus(raw).encode("utf-8", "surrogatepass").decode("utf-8", "replace"))


def _obj(name: str, raw: str) -> Command:
    return Obj(raw.strip().lower(), raw.lower())


def _rgn(name: str, raw: str) -> Command:
    values = [_number(name, raw, part) for part in raw.split(",")]
    if len(values) != 4 or values[2] <= 0 or values[3] <= 0:
        return Rgn(None, raw)  # iipsrv ignores such a region
    x, y, w, h = (min(max(v, 0.0), 1.0) for v in values)
    return Rgn((x, y, w, h))


def _qlt(name: str, raw: str) -> Command:
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
    return Qlt(Quality(level, comp or None))


def _cvt(name: str, raw: str) -> Command:
    return Cvt(CVT_FORMATS.get(raw.strip().lower(), "jpeg"))


def _tile(name: str, raw: str) -> Command:
    values = _integers(name, raw, 2)
    if values is None:
        raise _bad(name, raw)
    return Tile(name, values[0], values[1])


def _jtls(name: str, raw: str) -> Command:
    values = _integers(name, raw, 4)
    if values is None:
        return Ignored(name, raw)
    x, res, tile, y = values
    return Tile(name, res, tile, (x, y))


def _sds(name: str, raw: str) -> Command:
    parts = raw.split(",")
    if len(parts) > 2:
        raise _bad(name, raw)
    x = _integer(name, raw, parts[0])
    y = _integer(name, raw, parts[1]) if len(parts) == 2 else 0
    return Sds(x, y)


# CTW's largest matrix and CNV's kernel sizes.  Colour maps and named kernels are the
# transforms' own; the parser only needs their names.
KERNEL_NAMES = tuple(NAMED_KERNELS)
TWIST_ROWS = (1, 3)
MAX_TWIST_COLUMNS = 16
KERNEL_SIZES = (1, 9, 25)  # 1x1, 3x3, 5x5
LIMIT = 1e6  # larger factors, exponents or weights only saturate: refused as malformed


def _bounded(name: str, raw: str, text: str) -> float:
    value = _number(name, raw, text.strip())
    if abs(value) > LIMIT:
        raise _bad(name, raw)
    return value


def _numbers(name: str, raw: str, text: str) -> tuple[float, ...]:
    return tuple(_bounded(name, raw, part) for part in text.split(","))


def _bracketed(name: str, raw: str) -> str:
    """The inside of ``[...]`` (CTW, CNV), URL-decoded; anything else is malformed."""
    text = unquote_plus(raw).strip()
    if not (text.startswith("[") and text.endswith("]")) or "[" in text[1:] or "]" in text[:-1]:
        raise _bad(name, raw)
    return text[1:-1]


def _cnt(name: str, raw: str) -> Command:
    word = raw.strip().lower()
    if word in ("st", "stretch"):
        return Cnt(mode="stretch")
    if word in ("eq", "equalization", "equalisation"):
        return Cnt(mode="equalization")
    factor = _bounded(name, raw, raw)
    if factor < 0:
        raise _bad(name, raw)
    return Cnt(factor=factor)


def _gam(name: str, raw: str) -> Command:
    if raw.strip().lower() in ("log", "logarithm"):
        return Gam(log=True)
    gamma = _bounded(name, raw, raw)
    if gamma <= 0:
        raise _bad(name, raw)  # v ** 0 is 1 everywhere and negative powers of 0 are infinite
    return Gam(gamma=gamma)


def _minmax(name: str, raw: str) -> Command:
    channel_text, sep, values = raw.partition(":")
    if not sep:
        raise _bad(name, raw)
    if channel_text.strip() == "-":
        channel = -1
    else:
        channel = _integer(name, raw, channel_text) - 1  # iipsrv counts channels from 1
        if not 0 <= channel < 64:
            raise _bad(name, raw)
    bounds = _numbers(name, raw, values)
    if len(bounds) != 2:
        raise _bad(name, raw)
    return MinMax(channel, bounds[0], bounds[1])


def _cmp(name: str, raw: str) -> Command:
    cmap = raw.strip().lower()
    if cmap not in COLOUR_MAPS:
        raise _bad(name, raw)
    return Cmp(cmap)


def _ctw(name: str, raw: str) -> Command:
    rows = _bracketed(name, raw).split(";")
    if len(rows) not in TWIST_ROWS:
        raise _bad(name, raw)  # the output is grey or RGB
    matrix = tuple(_numbers(name, raw, row) for row in rows)
    if any(len(row) > MAX_TWIST_COLUMNS for row in matrix):
        raise _bad(name, raw)
    return Ctw(matrix)


def _col(name: str, raw: str) -> Command:
    word = raw.strip().lower()
    if word in ("grey", "gray"):
        return Col("gray")
    if word == "binary":
        return Col("bitonal")
    raise _bad(name, raw)


def _shd(name: str, raw: str) -> Command:
    angles = _numbers(name, raw, raw)
    if len(angles) != 2:
        raise _bad(name, raw)
    return Shd(*angles)


def _cnv(name: str, raw: str) -> Command:
    word = raw.strip().lower()
    if word in KERNEL_NAMES:
        return Cnv((), word)
    kernel = _numbers(name, raw, _bracketed(name, raw))
    if len(kernel) not in KERNEL_SIZES:
        raise _bad(name, raw)
    return Cnv(kernel)


def _rot(name: str, raw: str) -> Command:
    text = raw.strip()
    mirror = text.startswith("!")
    degrees = _bounded(name, raw, text[1:] if mirror else text)
    return Rot(degrees % 360, mirror)


def _bit(name: str, raw: str) -> Command:
    bits = _integer(name, raw, raw)
    if bits not in (8, 16):
        raise _bad(name, raw)
    return Bit(bits)


def _protocol(name: str, raw: str) -> Command:
    # IIIF, DeepZoom and Zoomify paths go to their own parsers still percent-encoded: an
    # IIIF identifier may hold an encoded "/" that must not split it.  "+" is a space in a
    # query string, so it is made %20 here, where that is known.
    return ProtocolCommand(name, raw.replace("+", "%20"))


_PARSERS: dict[str, Callable[[str, str], Command]] = {
    "FIF": _fif,
    "OBJ": _obj,
    "WID": lambda name, raw: Wid(_count(name, raw)),
    "HEI": lambda name, raw: Hei(_count(name, raw)),
    "RGN": _rgn,
    "QLT": _qlt,
    "CVT": _cvt,
    "JTLS": _jtls,
    "SDS": _sds,
    "LYR": lambda name, raw: Lyr(_count(name, raw)),
    "CNT": _cnt,
    "GAM": _gam,
    "MINMAX": _minmax,
    "INV": lambda name, raw: Inv(),
    "CMP": _cmp,
    "CTW": _ctw,
    "COL": _col,
    "SHD": _shd,
    "CNV": _cnv,
    "ROT": _rot,
    "BIT": _bit,
    **dict.fromkeys(PROTOCOL_COMMANDS, _protocol),
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
        commands.append(parser(upper, raw))
    return IIPRequest(tuple(commands))


# The data commands (PFL, SPECTRA, TIL) are defined on Command above, hence imported last.
from . import iip_data  # noqa: E402

_PARSERS.update(iip_data.PARSERS)
