"""Aperio SVS slides: a tiled TIFF pyramid plus what Aperio's ImageDescription and extra pages say.

An SVS file is a TIFF whose first ImageDescription starts with "Aperio".  Its tiled pages are the
pyramid (levels usually step by 4); the description carries ``key = value`` pairs after its
first ``|`` (MPP, AppMag, ...), exposed as metadata under OpenSlide's property names
(``aperio.MPP``) with MPP as the resolution.  Stripped pages are pictures stored beside the
pyramid, named as OpenSlide names them: the second page is the thumbnail, any other is named by
the first word of its description's second line ("label", "macro"), or, lacking that, by its
NewSubfileType (1 label, 9 macro).

JPEG 2000 tiles come in two kinds: 33005 holds RGB (any colour transform is inside the
codestream, and the decoder undoes it); 33003 holds YCbCr components without a colour transform,
which the decoder returns as they are and which are converted to RGB here, as OpenSlide does.
Neither is sent as stored: browsers do not show JPEG 2000.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import tifffile

from ..errors import ImageDecodeError, NotFound
from ..model import ImageInfo
from ..storage.base import Blob
from .base import ImageSource
from .memory import ArraySource
from .tiff import TiffSource

APERIO_PREFIX = "Aperio"
COMPRESSION_JP2K_YCBCR = 33003
PROPERTY_PREFIX = "aperio."
# A stripped page is decoded whole; anything larger than this is not a label or a thumbnail.
MAX_ASSOCIATED_PIXELS = 64 * 1024 * 1024
SUBFILE_NAMES = {1: "label", 9: "macro"}
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def is_aperio(tif: tifffile.TiffFile) -> bool:
    """Whether the first ImageDescription starts with "Aperio", as OpenSlide decides."""
    return tif.pages.first.description.startswith(APERIO_PREFIX)


def aperio_properties(description: str) -> dict[str, str]:
    """The ``key = value`` pairs after the first ``|`` under OpenSlide's names (``aperio.MPP``);
    a key given twice keeps its last value, as OpenSlide does."""
    found: dict[str, str] = {}
    for part in description.split("|")[1:]:
        key, separator, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if separator and key and value:
            found[PROPERTY_PREFIX + key] = value
    return found


def ycbcr_to_rgb(pixels: np.ndarray) -> np.ndarray:
    """Full-range (JFIF) YCbCr to RGB, 8-bit."""
    y = pixels[..., 0].astype(np.float32)
    cb = pixels[..., 1].astype(np.float32) - 128.0
    cr = pixels[..., 2].astype(np.float32) - 128.0
    rgb = np.stack((y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb), axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _associated_name(index: int, page: tifffile.TiffPage) -> str | None:
    if index == 1:
        return "thumbnail"
    lines = page.description.replace("\r", "").split("\n")
    words = lines[1].split() if len(lines) > 1 else []
    if words and _NAME.fullmatch(words[0]):
        return words[0]
    return SUBFILE_NAMES.get(int(page.subfiletype))


def _as_rgb8(pixels: np.ndarray, page: tifffile.TiffPage) -> np.ndarray:
    if pixels.dtype != np.uint8:
        raise ImageDecodeError("unsupported associated image", f"{page.dtype} samples")
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, np.newaxis], 3, axis=2)
    elif pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    elif pixels.shape[2] > 3:
        pixels = pixels[:, :, :3]  # extra samples (alpha) dropped: these are opaque pictures
    if int(page.photometric) == 0:  # MinIsWhite
        pixels = 255 - pixels
    return np.ascontiguousarray(pixels)


class SvsSource(TiffSource):
    format_name = "svs"

    def __init__(self, blob: Blob, tif: tifffile.TiffFile | None = None) -> None:
        self._associated_pages: dict[str, tifffile.TiffPage] = {}
        self._associated_sources: dict[str, ImageSource] = {}
        super().__init__(blob, tif)

    def _describe(self) -> ImageInfo:
        info = super()._describe()
        first = self._pages[0]
        properties = aperio_properties(first.description)
        metadata = dict(info.metadata)
        metadata.update(properties)
        dpi = info.dpi
        try:
            mpp = float(properties.get(PROPERTY_PREFIX + "MPP", ""))
        except ValueError:
            mpp = 0.0
        if mpp > 0:
            dpi = (1e6 / mpp, 1e6 / mpp)  # micrometres per pixel -> pixels per metre
        for index, page in enumerate(self._chain):
            if page.is_tiled:
                continue  # tiled pages are pyramid levels (or left out), never pictures
            name = _associated_name(index, page)
            if name and name not in self._associated_pages:
                self._associated_pages[name] = page
        return dataclasses.replace(
            info,
            dpi=dpi,
            metadata=tuple(sorted(metadata.items())),
            format="svs",
            associated=tuple(sorted(self._associated_pages)),
        )

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        tile = super().read_tile(level, col, row)
        if int(self._pages[level].compression) == COMPRESSION_JP2K_YCBCR:
            tile = ycbcr_to_rgb(tile)
        return tile

    def associated(self, name: str) -> ImageSource:
        source = self._associated_sources.get(name)
        if source is not None:
            return source
        page = self._associated_pages.get(name)
        if page is None:
            raise NotFound("image not found", f"{self.name}: no associated image {name!r}")
        if page.imagewidth * page.imagelength > MAX_ASSOCIATED_PIXELS:
            raise ImageDecodeError("associated image too large", f"{self.name}::{name}: {page.shape}")
        try:
            pixels = _as_rgb8(page.asarray(), page)
        except ImageDecodeError:
            raise
        except Exception as exc:
            raise ImageDecodeError("damaged image", f"{self.name}::{name}: {type(exc).__name__}: {exc}") from exc
        source = ArraySource.of_array(pixels, self.identity.part(name), f"{self.name}::{name}")
        self._associated_sources[name] = source
        return source
