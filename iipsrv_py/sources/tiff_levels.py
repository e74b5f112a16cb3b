"""Which IFDs of a TIFF file are the levels of its pyramid and which are pages of a stack.

Pure functions over IFD summaries (``tiff_structure.IfdSummary``): nothing here reads a file.

Levels come from the SubIFDs of a page when it has them (OME-TIFF, ``vips --subifd``),
otherwise from the IFD chain after it.  Candidate IFDs are kept when they are stored like the
first (tiled or stripped, same pixel layout), are smaller than the previous level and have its
aspect ratio (which leaves out thumbnails, labels and macro photographs); they are sorted by
size.  IFDs of the chain as large as the first one and stored like it are the pages of a stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tiff_structure import IfdSummary


def layout_key(ifd: IfdSummary) -> tuple[object, ...]:
    return (ifd.samples, ifd.bits, ifd.sample_format, ifd.planar, ifd.is_tiled)


def is_pyramid_level(ifd: IfdSummary, base: IfdSummary, previous: IfdSummary) -> bool:
    # A stripped page of a tiled image (an SVS thumbnail, label or macro) is never a level.
    if ifd.depth != 1 or layout_key(ifd) != layout_key(base):
        return False
    if ifd.width >= previous.width or ifd.length >= previous.length:
        return False  # a stack page or a duplicate, not a reduced resolution
    # Same aspect ratio as the full image, allowing each side a rounding error of a pixel.
    return abs(ifd.width * base.length - ifd.length * base.width) <= base.width + base.length


def is_stack_page(ifd: IfdSummary, first: IfdSummary) -> bool:
    """An IFD of the chain as large as the first and stored like it, not marked as a reduced
    resolution: one more image of a stack."""
    return (
        (ifd.width, ifd.length) == (first.width, first.length)
        and ifd.depth == 1
        and layout_key(ifd) == layout_key(first)
        and ifd.photometric == first.photometric
        and not ifd.subfile_type & 1
    )


def stack_starts(chain: Sequence[IfdSummary]) -> tuple[int, ...]:
    """Positions in the IFD chain of the pages of a stack (just (0,) for a single image)."""
    return (0, *(i for i in range(1, len(chain)) if is_stack_page(chain[i], chain[0])))


def pyramid(base: IfdSummary, candidates: Sequence[IfdSummary]) -> tuple[IfdSummary, ...]:
    """``base`` and the candidates that are its reduced levels, largest first."""
    levels = [base]
    for ifd in sorted(candidates, key=lambda c: -c.width * c.length):
        if is_pyramid_level(ifd, base, levels[-1]):
            levels.append(ifd)
    return tuple(levels)


def text(value: Any) -> str:
    """A tag's text as a clean string (bytes as UTF-8, else Latin-1; NULs dropped)."""
    if isinstance(value, bytes):
        for encoding in ("utf-8", "latin-1"):
            try:
                value = value.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
    return str(value).replace("\0", "").strip()


def page_name(number: int, page_name_tag: Any, document_name_tag: Any) -> str:
    """A stack page's name: its PageName, else its DocumentName, else ``page N``."""
    for value in (page_name_tag, document_name_tag):
        if value:
            name = text(value)
            if name:
                return name
    return f"page {number}"
