"""TIFF and BigTIFF images (and, with the Aperio part of ``svs.py``, SVS slides).

A TIFF source is put together from parts, each owning one thing:

* ``tiff_structure.TiffStructure``: the file as far as opening it needs (the first IFD parsed
  in full, a summary of every other IFD), shared by the sources of a stack's pages;
* ``tiff_levels``: which IFDs are the levels of a page and which are stack pages;
* ``tiff_describe.describe``: a pure function from the structure to ``ImageInfo`` and the
  per-level decoding facts;
* ``tiff_tiles.TileReader``: the tiles of the levels, decoded with those facts (each level's
  IFD parsed in full when a tile of it is first needed);
* a flavour (``TiffFlavour``): what a kind of TIFF adds to every image of the file -- nothing
  for a plain TIFF; for Aperio SVS its description properties, MPP, associated images and the
  conversion of 33003 levels, for the stack's pages as for its first image.

Pages of the IFD chain as large as the first page and stored like it are the pages of a stack
(``info.pages``), each a source of its own through ``page(n)``, built like the first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

import numpy as np
import tifffile

from ..cache.store import WorkerCache
from ..errors import ImageDecodeError, NotFound, ServerError, UnsupportedImage
from ..storage.base import Blob
from .base import ImageSource, tile_of, xmp_of
from .tiff_describe import Description, describe
from .tiff_structure import TiffStructure
from .tiff_tiles import TileReader


class TiffFlavour(Protocol):
    """What one kind of TIFF file adds to the images of a file (every stack page's too)."""

    format_name: str

    def refine(self, description: Description, base: tifffile.TiffPage) -> Description:
        """The description of an image whose full-size page is ``base``, completed."""
        ...

    def associated(self, name: str) -> ImageSource:
        """An image stored beside the pyramid, or NotFound."""
        ...


class PlainTiff:
    format_name = "tiff"

    def __init__(self, name: str) -> None:
        self.name = name

    def refine(self, description: Description, base: tifffile.TiffPage) -> Description:
        return description

    def associated(self, name: str) -> ImageSource:
        raise NotFound("image not found", f"{self.name}: no associated image {name!r}")


@contextlib.contextmanager
def refused_unless_readable(name: str) -> Iterator[None]:
    """Anything but our own errors while opening a file means it is not an image we read (415)."""
    try:
        yield
    except ServerError:
        raise
    except Exception as exc:
        raise UnsupportedImage("not a supported image", f"{name}: {type(exc).__name__}: {exc}") from exc


def open_structure(blob: Blob, cache: WorkerCache | None = None) -> TiffStructure:
    """The file's structure (first IFD in full, the chain summarised), or UnsupportedImage."""
    with refused_unless_readable(blob.name):
        return TiffStructure(blob, cache)


class TiffSource:
    """One image of a TIFF file: stack page ``page`` (0, the file's first image, unless the
    file is a stack)."""

    def __init__(self, structure: TiffStructure, page: int = 0, flavour: TiffFlavour | None = None) -> None:
        self._structure = structure
        self._flavour: TiffFlavour = flavour if flavour is not None else PlainTiff(structure.name)
        self.format_name = self._flavour.format_name
        self.name = structure.name
        self.identity = structure.identity if page == 0 else structure.identity.part(f"page{page}")
        # A page of a stack is an image of its own, not a stack: only the first image lists
        # the pages and opens them.
        self._stack_size = len(structure.stack) if page == 0 else 1
        levels = structure.levels(page)
        base = structure.full_page(levels[0])
        description = describe(base, levels, structure.page_names() if page == 0 else (), self.name)
        description = self._flavour.refine(description, base)
        self.info = description.info
        self._reader = TileReader(structure, description.decoding, base, self.identity.token)
        self._page_sources: dict[int, TiffSource] = {}

    @property
    def icc_profile(self) -> bytes | None:
        profile = self._reader.base.iccprofile
        return bytes(profile) if profile else None

    @property
    def xmp(self) -> bytes | None:
        return xmp_of(self.info)

    @property
    def exif(self) -> bytes | None:
        return None  # an EXIF IFD is not kept; views get the descriptive tags as EXIF instead

    def close(self) -> None:
        self._structure.blob.close()

    # -- tiles ------------------------------------------------------------------------------

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        return self._reader.read_tile(level, tile_of(self.info, level, col, row), col, row)

    def read_samples(self, level: int, col: int, row: int) -> np.ndarray:
        return self._reader.read_tile(level, tile_of(self.info, level, col, row), col, row, native=True)

    def raw_tile(self, level: int, col: int, row: int) -> bytes | None:
        lvl = tile_of(self.info, level, col, row)
        if not self.info.stored_encoding:
            return None
        return self._reader.raw_jpeg(level, row * lvl.tiles_x + col)

    # -- stack pages, associated images, layers ----------------------------------------------

    def page(self, index: int) -> ImageSource:
        if index == 0:
            return self
        if not 0 < index < self._stack_size:
            raise NotFound("image not found", f"{self.name}: no page {index}")
        source = self._page_sources.get(index)
        if source is None:
            try:
                source = TiffSource(self._structure, index, self._flavour)
            except ServerError:
                raise
            except Exception as exc:
                raise ImageDecodeError("damaged image", f"{self.name}: page {index}: {exc}") from exc
            self._page_sources[index] = source
        return source

    def associated(self, name: str) -> ImageSource:
        return self._flavour.associated(name)

    def view(self, horizontal: int, vertical: int) -> ImageSource:
        return self.page(horizontal) if horizontal and self._stack_size > 1 else self

    def with_layers(self, layers: int) -> ImageSource:
        return self
