"""Aperio SVS slides: what Aperio's ImageDescription and extra pages add to a tiled TIFF.

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

All of this is the ``Aperio`` flavour of a TIFF source (``tiff.TiffFlavour``): composed into
the source of the slide and into the source of every page of a stack of such images alike.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import tifffile

from ..errors import ImageDecodeError, NotFound, ServerError, TooLarge
from .base import ImageSource, check_decode_unit
from .memory import ArraySource, halving_sizes
from .stream_headers import STREAM_HEADER_BYTES
from .tiff_describe import Description
from .tiff_structure import IMAGE_DESCRIPTION, IfdSummary, TiffStructure
from .tiff_tiles import check_segment_stream

APERIO_PREFIX = "Aperio"
COMPRESSION_JP2K_YCBCR = 33003
PROPERTY_PREFIX = "aperio."
SUBFILE_NAMES = {1: "label", 9: "macro"}
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def is_aperio(first: tifffile.TiffPage) -> bool:
    """Whether the first ImageDescription starts with "Aperio", as OpenSlide decides."""
    return first.description.startswith(APERIO_PREFIX)


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


def associated_name(position: int, subfile_type: int, description: str) -> str | None:
    """OpenSlide's name for the stripped page at ``position`` in the IFD chain."""
    if position == 1:
        return "thumbnail"
    lines = description.replace("\r", "").split("\n")
    words = lines[1].split() if len(lines) > 1 else []
    if words and _NAME.fullmatch(words[0]):
        return words[0]
    return SUBFILE_NAMES.get(subfile_type)


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


def _check_streams(structure: TiffStructure, page: tifffile.TiffPage, name: str) -> None:
    """Each stored strip (tile) of a picture decoded whole, refused before tifffile decodes it
    when its own compressed stream declares more pixels than the strip holds."""
    for index, (offset, count) in enumerate(zip(page.dataoffsets, page.databytecounts, strict=False)):
        if count:
            head = structure.blob.read_at(int(offset), min(int(count), STREAM_HEADER_BYTES))
            check_segment_stream(name, f"strip {index}", head, page)


class Aperio:
    """The Aperio part of an SVS file's sources: one per opened file, shared by its pages."""

    format_name = "svs"

    def __init__(self, structure: TiffStructure) -> None:
        """Find the associated pictures (reading the descriptions of the stripped IFDs only)."""
        self._structure = structure
        self._pictures: dict[str, IfdSummary] = {}
        self._sources: dict[str, ImageSource] = {}
        for position, ifd in enumerate(structure.chain):
            if ifd.is_tiled:
                continue  # tiled pages are pyramid levels (or left out), never pictures
            description = structure.tag(ifd, IMAGE_DESCRIPTION) if position != 1 else ""
            name = associated_name(position, ifd.subfile_type, description if isinstance(description, str) else "")
            if name and name not in self._pictures:
                self._pictures[name] = ifd

    def refine(self, description: Description, base: tifffile.TiffPage) -> Description:
        """Aperio properties and MPP of ``base``'s description, the associated pictures, and
        YCbCr to RGB for the levels stored as 33003."""
        info = description.info
        properties = aperio_properties(base.description)
        metadata = dict(info.metadata)
        metadata.update(properties)
        dpi = info.dpi
        try:
            mpp = float(properties.get(PROPERTY_PREFIX + "MPP", ""))
        except ValueError:
            mpp = 0.0
        if mpp > 0:
            dpi = (1e6 / mpp, 1e6 / mpp)  # micrometres per pixel -> pixels per metre
        info = dataclasses.replace(
            info,
            dpi=dpi,
            metadata=tuple(sorted(metadata.items())),
            format="svs",
            associated=tuple(sorted(self._pictures)),
        )
        decoding = description.decoding
        finish = tuple(ycbcr_to_rgb if ifd.compression == COMPRESSION_JP2K_YCBCR else None for ifd in decoding.levels)
        return Description(info, dataclasses.replace(decoding, finish=finish))

    def associated(self, name: str) -> ImageSource:
        source = self._sources.get(name)
        if source is not None:
            return source
        structure = self._structure
        ifd = self._pictures.get(name)
        if ifd is None:
            raise NotFound("image not found", f"{structure.name}: no associated image {name!r}")
        # A picture is decoded whole: one larger than a decode unit is no label or thumbnail,
        # and a request for it is refused (the slide itself is served).
        bits = max(ifd.bits) if isinstance(ifd.bits, tuple) else ifd.bits
        check_decode_unit(
            f"{structure.name}::{name}", "picture", ifd.width, ifd.length, ifd.samples * -(-bits // 8), TooLarge
        )

        def decode(level: int) -> np.ndarray | None:
            """The picture (level 0; its smaller levels are made from it), decoded when first
            needed and then kept in the worker cache like any decoded level."""
            if level:
                return None
            try:
                page = structure.full_page(ifd)
                _check_streams(structure, page, f"{structure.name}::{name}")
                return _as_rgb8(page.asarray(), page)
            except ServerError:  # ours, storage errors included
                raise
            except Exception as exc:
                detail = f"{structure.name}::{name}: {type(exc).__name__}: {exc}"
                raise ImageDecodeError("damaged image", detail) from exc

        sizes = halving_sizes(ifd.width, ifd.length)
        identity = structure.identity.part(name)
        source = ArraySource(identity, f"{structure.name}::{name}", sizes, decode, 3, cache=structure.cache)
        self._sources[name] = source
        return source
