"""An image held in memory as whole arrays, served as a pyramid of virtual tiles.

For what is small enough to decode at once and has no tiles of its own: a slide's label,
macro and thumbnail pictures, and the levels a JPEG decoder produces by DCT scaling.  Each
level is either given as an array or made on first use by resizing the smallest given level
that is larger (halving, as a pyramid writer would) and kept; tiles are views into it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..cache.store import NO_CACHE, WorkerCache
from ..model import ImageInfo, Level, SourceIdentity
from ..transforms.resample import resize
from .base import SinglePage, level_of, tile_of

TILE = 256


def halving_sizes(width: int, height: int, smallest: int = TILE) -> list[tuple[int, int]]:
    """(width, height) of each level from full size down, halving (rounding up) until the
    image fits in ``smallest`` pixels."""
    sizes = [(width, height)]
    while max(sizes[-1]) > smallest:
        w, h = sizes[-1]
        sizes.append((max(1, -(-w // 2)), max(1, -(-h // 2))))
    return sizes


def whole_level(
    cache: WorkerCache,
    token: str,
    index: int,
    levels: Sequence[Level],
    load: Callable[[int], np.ndarray | None],
) -> np.ndarray:
    """All pixels of level ``index`` (H x W x C): ``load(index)``, or, when that gives None,
    the level above resized to this one's size; kept in the worker's cache under
    ``("level", token, index)`` when it fits (else made again when next needed)."""
    key = ("level", token, index)
    pixels = cache.get(key)
    if not isinstance(pixels, np.ndarray):
        pixels = load(index)
        if pixels is None:
            level = levels[index]
            pixels = resize(whole_level(cache, token, index - 1, levels, load), level.width, level.height)
        elif pixels.ndim == 2:
            pixels = pixels[:, :, np.newaxis]
        cache.put(key, pixels, pixels.nbytes)
    return pixels


class ArraySource(SinglePage):
    """A pyramid whose levels are arrays in memory (uint8, H x W x C).

    ``levels`` gives the size of every level, full size first; ``load(i)`` returns the pixels
    of level ``i`` or None when that level is to be made by resizing a larger one.  Levels are
    kept in the worker's ``cache``, within its budget.
    """

    format_name = "memory"

    def __init__(
        self,
        identity: SourceIdentity,
        name: str,
        sizes: Sequence[tuple[int, int]],
        load: Callable[[int], np.ndarray | None],
        channels: int,
        info_fields: dict[str, object] | None = None,
        tile: int = TILE,
        cache: WorkerCache | None = None,
    ) -> None:
        self.identity = identity
        self.name = name
        self._load = load
        self._cache = cache if cache is not None else NO_CACHE
        width, height = sizes[0]
        levels = tuple(Level(w, h, tile, tile, width / w, height / h) for w, h in sizes)
        colorspace = "grey" if channels in (1, 2) else "srgb"
        fields: dict[str, object] = {"colorspace": colorspace, "format": "memory", **(info_fields or {})}
        self.info = ImageInfo(width=width, height=height, levels=levels, channels=channels, **fields)  # type: ignore[arg-type]

    @classmethod
    def of_array(
        cls,
        pixels: np.ndarray,
        identity: SourceIdentity,
        name: str,
        info_fields: dict[str, object] | None = None,
        cache: WorkerCache | None = None,
    ) -> ArraySource:
        """One decoded picture with virtual levels halving down to a tile."""
        if pixels.ndim == 2:
            pixels = pixels[:, :, np.newaxis]
        height, width, channels = pixels.shape
        sizes = halving_sizes(width, height)
        return cls(identity, name, sizes, lambda i: pixels if i == 0 else None, channels, info_fields, cache=cache)

    def level_pixels(self, level: int) -> np.ndarray:
        level_of(self.info, level)
        return whole_level(self._cache, self.identity.token, level, self.info.levels, self._load)

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        x, y, w, h = tile_of(self.info, level, col, row).tile_rect(col, row)
        return self.level_pixels(level)[y : y + h, x : x + w]

    def read_samples(self, level: int, col: int, row: int) -> np.ndarray:
        return self.read_tile(level, col, row)  # decoded pictures are 8-bit

    def raw_tile(self, level: int, col: int, row: int) -> bytes | None:
        return None
