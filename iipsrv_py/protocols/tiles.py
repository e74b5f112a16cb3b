"""The request both DeepZoom and Zoomify tile URLs parse to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LevelTileRequest:
    """Tile ``(x, y)`` of the protocol's own level ``level`` (0 = its smallest)."""

    identifier: str
    level: int
    x: int
    y: int
    encoding: str
