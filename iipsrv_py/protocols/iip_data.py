"""Parsers of the IIP data commands: PFL (a line profile), SPECTRA (one pixel across the bands
of a stack) and TIL (several tiles in one response).  Pure, like the rest of the IIP parser.

They answer with numbers or several tiles rather than one image, so they live apart from the
rendering commands; ``iip.py`` registers ``PARSERS`` with its own table.  Only the syntax is
checked here: whether a resolution, a tile or a pixel exists depends on the image, and is the
handler's to decide (404, as for JTL).  Any argument that does not have the documented shape is
IIP error ``2 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from ..errors import IIPError, malformed
from .iip import Command, _integer


class DataCommand(Command):
    """A command answered with data about the pixels (numbers, several tiles)."""


@dataclass(frozen=True)
class Pfl(DataCommand):
    """``PFL=res:x1,y1-x2,y2``: the values along the line from (x1, y1) towards (x2, y2) at IIP
    resolution ``res`` (0 = smallest).  The end point is excluded, as iipsrv reads ``x2 - x1``
    pixels of a horizontal line."""

    NAME: ClassVar[str] = "PFL"
    resolution: int
    start: tuple[int, int]
    end: tuple[int, int]

    @property
    def text(self) -> str:
        (x1, y1), (x2, y2) = self.start, self.end
        return f"{self.resolution}:{x1},{y1}-{x2},{y2}"


@dataclass(frozen=True)
class Spectra(DataCommand):
    """``SPECTRA=res,tile,x,y``: pixel (x, y) of tile ``tile`` at resolution ``res`` in every
    band of a multispectral image."""

    NAME: ClassVar[str] = "SPECTRA"
    resolution: int
    tile: int
    x: int
    y: int

    @property
    def text(self) -> str:
        return f"{self.resolution},{self.tile},{self.x},{self.y}"


@dataclass(frozen=True)
class Til(DataCommand):
    """``TIL=res,start[-end]``: the tiles of the rectangle whose corners are tiles ``start`` and
    ``end`` (row-major indices; ``end`` defaults to ``start``)."""

    NAME: ClassVar[str] = "TIL"
    resolution: int
    start: int
    end: int

    @property
    def text(self) -> str:
        if self.end == self.start:
            return f"{self.resolution},{self.start}"
        return f"{self.resolution},{self.start}-{self.end}"


def _bad(name: str, raw: str) -> IIPError:
    return malformed(f"{name}={raw}")


def _numbers(name: str, raw: str, text: str, count: int) -> tuple[int, ...]:
    """Exactly ``count`` comma-separated integers, or the command's malformed error."""
    parts = text.split(",")
    if len(parts) != count:
        raise _bad(name, raw)
    return tuple(_integer(name, raw, part) for part in parts)


def _pfl(name: str, raw: str) -> Command:
    # iipsrv also takes "res:x,y" as a single point; the SPEC's form always names both ends,
    # and a single point is "res:x,y-x,y".
    resolution, colon, line = raw.partition(":")
    start, dash, end = line.partition("-")
    if not colon or not dash or not resolution.strip():
        raise _bad(name, raw)
    x1, y1 = _numbers(name, raw, start, 2)
    x2, y2 = _numbers(name, raw, end, 2)
    return Pfl(_integer(name, raw, resolution), (x1, y1), (x2, y2))


def _spectra(name: str, raw: str) -> Command:
    resolution, tile, x, y = _numbers(name, raw, raw, 4)
    return Spectra(resolution, tile, x, y)


def _til(name: str, raw: str) -> Command:
    resolution, comma, tiles = raw.partition(",")
    if not comma:
        raise _bad(name, raw)
    start_text, dash, end_text = tiles.partition("-")
    (start,) = _numbers(name, raw, start_text, 1)
    (end,) = _numbers(name, raw, end_text, 1) if dash else (start,)
    # iipsrv silently answers the start tile alone when the range runs backwards; a range
    # that names nothing is a malformed request here.
    if end < start:
        raise _bad(name, raw)
    (res,) = _numbers(name, raw, resolution, 1)
    return Til(res, start, end)


PARSERS: dict[str, Callable[[str, str], Command]] = {"PFL": _pfl, "SPECTRA": _spectra, "TIL": _til}
