"""Plain value types shared by sources, planning, handlers and the pipeline."""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field

# Pixels per inch -> pixels per metre.  An inch is exactly 0.0254 m, so this is 39.3700787...
# (300 dpi -> 11811.023622 px/m); the rounded 39.37 put every converted resolution off by 2 ppm.
METRES_PER_INCH_FACTOR = 1 / 0.0254


@dataclass(frozen=True)
class Level:
    """One stored (or virtual) resolution of an image; index 0 of a pyramid is full size."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    # Real factors full-size / this level, per axis; pyramids need not halve.
    downsample_x: float = 1.0
    downsample_y: float = 1.0

    @property
    def tiles_x(self) -> int:
        return math.ceil(self.width / self.tile_width)

    @property
    def tiles_y(self) -> int:
        return math.ceil(self.height / self.tile_height)

    def tile_rect(self, col: int, row: int) -> tuple[int, int, int, int]:
        """Pixel rectangle ``(x, y, w, h)`` of a tile, cropped at the image edge."""
        x = col * self.tile_width
        y = row * self.tile_height
        return x, y, min(self.tile_width, self.width - x), min(self.tile_height, self.height - y)


@dataclass(frozen=True)
class SourceIdentity:
    """What makes two openings of an image the same: it keys every cache and every ETag."""

    key: str  # normalised location (path or object URL)
    mtime: float  # seconds since the epoch
    size: int
    version: str = ""  # inode, object ETag or similar; changes when the bytes change

    def part(self, name: str) -> SourceIdentity:
        """The identity of one part of the object (a stack page, a slide's label image): it
        changes with the object and keys caches apart from the object's other parts."""
        return SourceIdentity(f"{self.key}#{name}", self.mtime, self.size, self.version)

    @functools.cached_property
    def token(self) -> str:
        # Cached: every tile lookup of a request keys on it.
        text = f"{self.key}\0{self.mtime!r}\0{self.size}\0{self.version}"
        return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=12).hexdigest()


@dataclass(frozen=True)
class ImageInfo:
    """Everything the planner and the metadata responses need to know about an image."""

    width: int
    height: int
    levels: tuple[Level, ...]  # full size first, strictly decreasing
    channels: int = 3
    bits_per_sample: int = 8
    colorspace: str = "srgb"  # "srgb" | "grey" | "cielab"
    min_values: tuple[float, ...] = ()
    max_values: tuple[float, ...] = ()
    # Pixels per metre (x, y), or None when the file does not say.
    dpi: tuple[float, float] | None = None
    # Textual metadata under iipsrv's keys (creator, rights, ...), empty values dropped.
    metadata: tuple[tuple[str, str], ...] = ()
    format: str = "tiff"
    # Encoding of the stored tiles when they can be sent as they are ("jpeg"), else "".
    stored_encoding: str = ""
    horizontal_views: tuple[int, ...] = (0,)
    vertical_views: tuple[int, ...] = (90,)
    pages: tuple[str, ...] = field(default_factory=tuple)  # names of stack pages, if a stack
    # Names of the images stored beside the pyramid (a slide's "label", "macro", "thumbnail"),
    # reachable as ``<identifier>::<name>``.
    associated: tuple[str, ...] = field(default_factory=tuple)

    def meta(self, key: str) -> str:
        for name, value in self.metadata:
            if name == key:
                return value
        return ""


@dataclass(frozen=True)
class Quality:
    """The quality asked for by QLT (or a protocol's quality parameter).

    ``level`` None means each encoder's configured default (JPEG_QUALITY, ...);
    ``compression`` is the TIFF output codec of ``QLT=comp:q``.  Either being set rules out
    sending a stored tile unchanged.
    """

    level: int | None = None
    compression: str | None = None

    @property
    def explicit(self) -> bool:
        return self.level is not None or self.compression is not None

    @property
    def canonical(self) -> str:
        if not self.explicit:
            return ""
        level = "" if self.level is None else str(self.level)
        return f"{self.compression}:{level}" if self.compression else level


@dataclass(frozen=True)
class Ops:
    """The processing a view asks for, in the order the pipeline applies it (SPEC section 4).

    Float stage, on the region's samples before the resize, normalised to 0..1 by the image's
    per-channel minimum and maximum (``minmax`` overrides them: (channel, min, max), channel -1
    for all): ``shade`` (SHD angles), ``twist`` (CTW rows), ``gamma`` or ``log`` (GAM),
    ``invert`` (INV), ``cmap`` (CMP), ``kernel`` (CNV, row-major), ``contrast`` (CNT); then
    quantised to ``bits`` (8, or 16 for PNG/TIFF output of a deeper source).  After the
    resize, on 8-bit (or 16-bit) pixels: ``colour`` ("" as stored, "gray", "bitonal"),
    ``tone`` ("" or "stretch"/"equalization": CNT=st/eq and IIIF's extension qualities), then
    ``mirror`` (horizontal flip) and ``rotation`` (clockwise degrees, any angle).
    """

    rotation: float = 0.0
    mirror: bool = False
    colour: str = ""
    tone: str = ""
    minmax: tuple[tuple[int, float, float], ...] = ()
    shade: tuple[float, float] | None = None
    twist: tuple[tuple[float, ...], ...] = ()
    gamma: float = 1.0
    log: bool = False
    invert: bool = False
    cmap: str = ""
    kernel: tuple[float, ...] = ()
    contrast: float = 1.0
    bits: int = 8

    @property
    def float_stage(self) -> bool:
        """Whether the samples go through the float stage (else they are read as 8-bit)."""
        return bool(
            self.minmax
            or self.shade is not None
            or self.twist
            or self.gamma != 1.0
            or self.log
            or self.invert
            or self.cmap
            or self.kernel
            or self.contrast != 1.0
            or self.bits != 8
        )

    @property
    def changes_colours(self) -> bool:
        """Whether the output's colours are no longer in the source's colour space, so its ICC
        profile would describe them wrongly (a grey output under an RGB profile is not even a
        valid file) and is dropped: colour maps, twists, shading, grey and bitonal.  Tone
        operations (gamma, contrast, inversion...) keep the colour space and the profile."""
        return bool(self.colour or self.cmap or self.twist or self.shade is not None)

    @property
    def none(self) -> bool:
        return not (self.rotation % 360 or self.mirror or self.colour or self.tone or self.float_stage)

    @property
    def canonical(self) -> str:
        if self.none:
            return ""
        text = f"{'!' if self.mirror else ''}{self.rotation % 360:g}/{self.colour}/{self.tone}"
        if not self.float_stage:
            return text
        minmax = ";".join(f"{c}:{lo!r},{hi!r}" for c, lo, hi in self.minmax)
        shade = "" if self.shade is None else f"{self.shade[0]!r},{self.shade[1]!r}"
        twist = ";".join(",".join(map(repr, row)) for row in self.twist)
        kernel = ",".join(map(repr, self.kernel))
        return (
            f"{text}/m{minmax}/s{shade}/t{twist}/g{self.gamma!r}{'L' if self.log else ''}"
            f"/i{int(self.invert)}/c{self.cmap}/k{kernel}/x{self.contrast!r}/b{self.bits}"
        )
