"""Image sequences: one image per viewing angle, as iipsrv serves them.

An identifier that names no file but has files ``<identifier><FILENAME_PATTERN><hhh>_<vvv>.<ext>``
beside it (3-digit horizontal and vertical angles, e.g. ``vase_pyr_030_090.tif``) is a
sequence.  It answers as its first member (smallest angles) with the angles listed in
``info.horizontal_views`` / ``vertical_views``; IIP ``SDS=h,v`` selects a member by its angles.
Members are opened through the catalog like any image, so each is cached and revalidated on
its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from ..errors import NotFound
from .base import ImageSource


class SequenceSource:
    def __init__(self, members: list[tuple[int, int, str]], opener: Callable[[str], ImageSource]) -> None:
        self._members = {(h, v): identifier for h, v, identifier in members}
        self._opener = opener
        self._first = opener(members[0][2])
        self.identity = self._first.identity
        self.name = self._first.name
        self.info = dataclasses.replace(
            self._first.info,
            horizontal_views=tuple(sorted({h for h, _, _ in members})),
            vertical_views=tuple(sorted({v for _, v, _ in members})),
        )

    def view(self, horizontal: int, vertical: int) -> ImageSource:
        """The member at these angles.  A request that gives only the horizontal angle (the
        vertical one parses as 0) gets the sequence's single vertical angle when it has one."""
        identifier = self._members.get((horizontal, vertical))
        if identifier is None and len(self.info.vertical_views) == 1:
            identifier = self._members.get((horizontal, self.info.vertical_views[0]))
        if identifier is None:
            raise NotFound("image not found", f"{self.name}: no view at angles {horizontal},{vertical}")
        return self._opener(identifier)

    @property
    def icc_profile(self) -> bytes | None:
        return self._first.icc_profile

    @property
    def xmp(self) -> bytes | None:
        return self._first.xmp

    @property
    def exif(self) -> bytes | None:
        return self._first.exif

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        return self._first.read_tile(level, col, row)

    def read_samples(self, level: int, col: int, row: int) -> np.ndarray:
        return self._first.read_samples(level, col, row)

    def raw_tile(self, level: int, col: int, row: int) -> bytes | None:
        return self._first.raw_tile(level, col, row)

    def page(self, index: int) -> ImageSource:
        return self._first.page(index)

    def associated(self, name: str) -> ImageSource:
        return self._first.associated(name)

    def with_layers(self, layers: int) -> ImageSource:
        return self._first.with_layers(layers)

    def close(self) -> None:
        """Nothing of its own: its members are images of the catalog, closed by it."""
