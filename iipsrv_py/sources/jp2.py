"""JPEG 2000 images (JP2 files and raw J2K codestreams), decoded with OpenJPEG through glymur.

Levels are the codestream's own resolutions: with D wavelet decomposition levels (COD/COC
segments of the main header) resolution ``r`` (0..D) is ``ceil(W / 2^r)`` pixels wide, and
OpenJPEG decodes it directly (``reduce``).  Below the smallest of them, virtual levels halve
down to a tile by resizing the smallest resolution, as a pyramid writer would.  Every level is
served as a grid of virtual tiles (the codestream's own tile size when it is tiled with tiles of
128-1024 pixels, else 256); reading one decodes only that area at that resolution, which
OpenJPEG limits to the code-blocks (and codestream tiles) the area touches.

Quality layers: ``with_layers(n)`` gives the image decoding at most ``n`` layers (IIP ``LYR``,
capped by MAX_LAYERS, chosen by planning and applied by the pipeline).  That image has an
identity of its own (``#layers<n>``), so every cache keyed on the identity keeps its tiles
apart from the full-quality ones; its decoder state is shared with the image it came from.

glymur opens files by name: local files are read through glymur; objects of other storage (S3)
through ``jp2_opj``, which drives the same OpenJPEG library with a stream that reads the blob,
and parses the same boxes and main header with glymur's parsers.  Components must share one
sampling grid; 1-16 bit unsigned samples are served as 8 bits (``v * 255 / (2^bits - 1)``)
while ``bits_per_sample`` reports what is stored.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any

import numpy as np

from ..cache.store import NO_CACHE, WorkerCache
from ..errors import ImageDecodeError, ServerError, UnsupportedImage
from ..model import ImageInfo, Level, SourceIdentity
from ..storage.base import Blob
from . import jp2_opj, pixels
from .base import MAX_DECODE_UNIT_BYTES, SinglePage, tile_of
from .memory import whole_level

log = logging.getLogger(__name__)

TILE = 256
# A tiled codestream's own tile size is used for the virtual tiles when it is within these.
CODESTREAM_TILE_RANGE = (128, 1024)
# Virtual levels below the smallest resolution are made from a whole decode of that resolution;
# beyond this many pixels there are none (the file then simply has fewer levels).
MAX_VIRTUAL_BASE_PIXELS = 1 << 22

# OpenJPEG sets up every codestream tile of the image for each decode, about 4 KiB per tile and
# component (measured: 150 MB and half a second for 11,750 tiles of 3 components), so tiles
# times components are allowed as many as keep that within base.MAX_DECODE_UNIT_BYTES: 65536,
# which is also about the standard's own limit of 65535 tiles (Isot has 16 bits).
OPENJPEG_BYTES_PER_TILE_COMPONENT = 4096
# Decoding any area of a codestream tile makes OpenJPEG set up the tile's precincts and code-
# blocks, about a byte for every 16 pixels of the whole tile (measured: 1.7 GB for one
# 131072 x 131072 tile, whatever the area decoded).  Tiles are allowed as many pixels as keep
# that within the decode unit's bytes (base.MAX_DECODE_UNIT_BYTES): 2^32, 65536 x 65536.
OPENJPEG_TILE_PIXELS_PER_BYTE = 16

# JP2 colr box enumerated colour spaces (ISO/IEC 15444-1 Annex I.5.3.3).
SRGB, GREYSCALE = 16, 17


def _glymur() -> Any:
    try:
        import glymur
    except (ImportError, OSError) as exc:  # glymur itself, or its libopenjp2, is missing
        raise UnsupportedImage("JPEG 2000 support is not installed", f"glymur: {exc}") from exc
    return glymur


def _main_header(segments: list[Any], name: str) -> tuple[Any, int, int]:
    """(SIZ segment, decomposition levels, quality layers) of a codestream's main header."""
    siz = next((s for s in segments if s.marker_id == "SIZ"), None)
    cod = next((s for s in segments if s.marker_id == "COD"), None)
    if siz is None or cod is None:
        raise UnsupportedImage("not a supported image", f"{name}: codestream without SIZ or COD")
    # A component may have fewer decomposition levels (COC); only what all have can be reduced.
    decompositions = min([cod.num_res] + [s.num_res for s in segments if s.marker_id == "COC"])
    return siz, decompositions, int(cod.layers)


class _Codestream:
    """One opened local file and the lock that makes glymur's stateful reads (layer, then slice)
    safe for threads; shared by an image and its layer-limited views."""

    def __init__(self, path: str, name: str) -> None:
        glymur = _glymur()
        self.lock = threading.Lock()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # glymur warns about (harmless) odd boxes
                self.jp2 = glymur.Jp2k(path)
                segments = self.jp2.codestream.segment
        except Exception as exc:
            raise UnsupportedImage("not a supported image", f"{name}: {type(exc).__name__}: {exc}") from exc
        self.siz, self.decompositions, self.layers = _main_header(segments, name)
        self.boxes = list(self.jp2.box or [])

    def read(self, rlevel: int, area: tuple[int, int, int, int], layers: int) -> np.ndarray:
        """Decode ``area`` (rows y0, x0, y1, x1 on the full-resolution reference grid) at
        resolution reduction ``rlevel`` using the first ``layers`` quality layers (0 = all,
        and never the codestream's own count: see ``Jp2Source._decode``)."""
        y0, x0, y1, x1 = area
        step = 1 << rlevel
        with self.lock:
            self.jp2.layer = layers
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return self.jp2[y0:y1:step, x0:x1:step]


class _BlobCodestream:
    """An image of any storage, decoded by OpenJPEG through a stream over the blob's reads
    (``jp2_opj``); the same attributes and ``read`` as ``_Codestream``.  Each read has its own
    OpenJPEG stream and codec, so reads need no lock."""

    def __init__(self, blob: Blob, name: str) -> None:
        _glymur()  # glymur, and the libopenjp2 it loads, are needed here too
        self._blob = blob
        self._size = blob.identity.size
        try:
            header = jp2_opj.read_header(blob.stream(), self._size)
        except ServerError:
            raise
        except Exception as exc:
            raise UnsupportedImage("not a supported image", f"{name}: {type(exc).__name__}: {exc}") from exc
        self._format = header.codec_format
        self.siz, self.decompositions, self.layers = _main_header(header.segments, name)
        self.boxes = header.boxes

    def read(self, rlevel: int, area: tuple[int, int, int, int], layers: int) -> Any:
        y0, x0, y1, x1 = area
        return jp2_opj.decode(
            self._blob.read_at,
            self._size,
            self._format,
            rlevel,
            (x0, y0, x1, y1),
            layers,
        )


def _box(boxes: list[Any], box_id: str) -> Any:
    for box in boxes:
        if box.box_id == box_id:
            return box
        found = _box(getattr(box, "box", None) or [], box_id)
        if found is not None:
            return found
    return None


class Jp2Source(SinglePage):
    format_name = "jp2"
    identity: SourceIdentity
    info: ImageInfo
    _stream: _Codestream | _BlobCodestream
    _dwt_levels: int  # levels decoded by OpenJPEG; the ones after them are resized
    _offset: tuple[int, int]  # image origin on the reference grid
    _conversion: pixels.Conversion  # stored samples (1-16 bits per component) to 8 bits
    _icc: bytes | None

    def __init__(
        self, blob: Blob, cache: WorkerCache | None = None, _parent: Jp2Source | None = None, _layers: int = 0
    ) -> None:
        self.name = blob.name
        self._blob = blob
        # The worker cache keeps the whole decoded virtual levels below the smallest resolution.
        self._cache = cache if cache is not None else NO_CACHE
        self.layers = _layers  # quality layers decoded; 0 = all
        if _parent is not None:
            # A view of an opened image decoding fewer layers: same codestream and geometry.
            self.identity = _parent.identity.part(f"layers{_layers}")
            self._stream = _parent._stream
            self.info = _parent.info
            self._dwt_levels = _parent._dwt_levels
            self._offset = _parent._offset
            self._conversion = _parent._conversion
            self._icc = _parent._icc
            self._root = _parent
            return
        self._root = self
        self._views: dict[int, Jp2Source] = {}
        self.identity = blob.identity
        path = getattr(blob, "path", None)
        self._stream = _Codestream(path, self.name) if path else _BlobCodestream(blob, self.name)
        self.info = self._describe()

    # -- description ------------------------------------------------------------------------

    def _describe(self) -> ImageInfo:
        siz = self._stream.siz
        channels = len(siz.bitdepth)
        if any(siz.signed):
            raise UnsupportedImage("signed JPEG 2000 samples are not supported", f"{self.name}: signed components")
        if any(r != 1 for r in siz.xrsiz) or any(r != 1 for r in siz.yrsiz):
            raise UnsupportedImage(
                "subsampled JPEG 2000 components are not supported", f"{self.name}: {siz.xrsiz} x {siz.yrsiz}"
            )
        if channels not in (1, 2, 3, 4) or not all(1 <= b <= 16 for b in siz.bitdepth):
            raise UnsupportedImage(
                "unsupported JPEG 2000 layout", f"{self.name}: {channels} components of {siz.bitdepth} bits"
            )
        colr = _box(self._stream.boxes, "colr")
        self._icc = None
        if colr is not None:
            if colr.method == 1 and colr.colorspace not in (SRGB, GREYSCALE):
                raise UnsupportedImage(
                    "unsupported JPEG 2000 colour space", f"{self.name}: enumerated colour space {colr.colorspace}"
                )
            raw = getattr(colr, "icc_profile", None)
            self._icc = bytes(raw) if isinstance(raw, (bytes, bytearray)) and raw else None
        bits = tuple(int(b) for b in siz.bitdepth)
        # Each component over its own full range (v * 255 / (2^bits - 1), rounded); 8-bit
        # samples as they are.
        if all(b == 8 for b in bits):
            self._conversion = pixels.for_samples(np.dtype(np.uint8), channels)
        else:
            tops = tuple(float((1 << b) - 1) for b in bits)
            self._conversion = pixels.for_samples(np.dtype(np.uint16), channels, (0.0,) * channels, tops)
        # Image area on the reference grid: [xosiz, xsiz) x [yosiz, ysiz).
        self._offset = (int(siz.xosiz), int(siz.yosiz))
        x0, y0, x1, y1 = self._offset[0], self._offset[1], int(siz.xsiz), int(siz.ysiz)
        width, height = x1 - x0, y1 - y0
        self._check_codestream_tiles(width, height)
        tile = TILE
        tiled = int(siz.xtsiz) < x1 - int(siz.xtosiz) or int(siz.ytsiz) < y1 - int(siz.ytosiz)
        lo, hi = CODESTREAM_TILE_RANGE
        if tiled and siz.xtsiz == siz.ytsiz and lo <= siz.xtsiz <= hi and siz.xtosiz == x0 and siz.ytosiz == y0:
            tile = int(siz.xtsiz)  # virtual tiles coincide with codestream tiles at full size
        sizes = []
        for r in range(self._stream.decompositions + 1):
            w = -(-x1 >> r) - (-(-x0 >> r))  # ceil(x1 / 2^r) - ceil(x0 / 2^r)
            h = -(-y1 >> r) - (-(-y0 >> r))
            if w < 1 or h < 1:
                break
            sizes.append((w, h))
            if max(w, h) <= tile:
                break  # smaller resolutions would only be thumbnails of one tile
        self._dwt_levels = len(sizes)
        w, h = sizes[-1]
        if w * h <= MAX_VIRTUAL_BASE_PIXELS:
            while max(w, h) > tile:
                w, h = -(-w // 2), -(-h // 2)
                sizes.append((w, h))
        levels = tuple(Level(w, h, tile, tile, width / w, height / h) for w, h in sizes)
        return ImageInfo(
            width=width,
            height=height,
            levels=levels,
            channels=channels,
            bits_per_sample=max(bits),
            colorspace="grey" if channels in (1, 2) else "srgb",
            # The stored range (what OBJ=Min-Max-sample-values reports, and what the float
            # stage of processing normalises by).
            min_values=self._conversion.minimum,
            max_values=self._conversion.maximum,
            format="jp2",
        )

    def _check_codestream_tiles(self, width: int, height: int) -> None:
        """Refuse (415) a main header that no decode could survive, before OpenJPEG sees it:
        no pixels, more tiles than the standard allows, or codestream tiles so large that
        OpenJPEG's bookkeeping for one of them exhausts a worker's memory."""
        siz = self._stream.siz
        if width <= 0 or height <= 0 or siz.xtsiz <= 0 or siz.ytsiz <= 0:
            detail = f"{self.name}: {width}x{height}, tiles {siz.xtsiz}x{siz.ytsiz}"
            raise UnsupportedImage("image has no pixels", detail)
        x1, y1 = int(siz.xsiz), int(siz.ysiz)
        across = -(-(x1 - int(siz.xtosiz)) // int(siz.xtsiz))
        down = -(-(y1 - int(siz.ytosiz)) // int(siz.ytsiz))
        components = len(siz.bitdepth)
        if across * down * components * OPENJPEG_BYTES_PER_TILE_COMPONENT > MAX_DECODE_UNIT_BYTES:
            raise UnsupportedImage(
                "image too large to decode", f"{self.name}: {across}x{down} codestream tiles of {components} components"
            )
        tile_pixels = min(int(siz.xtsiz), width) * min(int(siz.ytsiz), height)
        if tile_pixels > MAX_DECODE_UNIT_BYTES * OPENJPEG_TILE_PIXELS_PER_BYTE:
            raise UnsupportedImage(
                "image too large to decode",
                f"{self.name}: codestream tiles of {siz.xtsiz}x{siz.ytsiz} in a {width}x{height} image",
            )

    @property
    def icc_profile(self) -> bytes | None:
        return self._icc

    def close(self) -> None:
        if self._root is self:  # layer views share the image's file
            self._blob.close()

    def with_layers(self, layers: int) -> Jp2Source:
        """This image decoding at most ``layers`` quality layers (0, or at least as many as
        the file has: all of them, which is the image itself)."""
        root = self._root
        if layers <= 0 or layers >= self._stream.layers:
            return root
        view = root._views.get(layers)
        if view is None:
            view = root._views.setdefault(layers, Jp2Source(self._blob, self._cache, root, layers))
        return view

    # -- pixels -----------------------------------------------------------------------------

    def _decode(self, r: int, x: int, y: int, w: int, h: int, native: bool = False) -> np.ndarray:
        """Pixels ``(x, y, w, h)`` of resolution ``r`` as 8-bit H x W x C (with ``native``:
        as decoded when they are scaled to 8 bits, see ``read_samples``)."""
        ox, oy = self._offset
        step = 1 << r
        lx, ly = -(-ox >> r), -(-oy >> r)  # the level's origin on its own grid
        full = self.info
        area = (
            max((ly + y) * step, oy),
            max((lx + x) * step, ox),
            min((ly + y + h) * step, oy + full.height),
            min((lx + x + w) * step, ox + full.width),
        )
        try:
            # OpenJPEG decodes at most ``cp_layer`` layers, 0 meaning all; glymur's setter only
            # accepts values below the number of layers, which all the others are anyway.
            layers = self.layers if 0 < self.layers < self._stream.layers else 0
            decoded = self._stream.read(r, area, layers)
        except ServerError:
            raise  # storage errors (502/504) stay what they are
        except Exception as exc:
            raise ImageDecodeError("damaged image", f"{self.name}: resolution {r} area {area}: {exc}") from exc
        if isinstance(decoded, list):
            raise ImageDecodeError("damaged image", f"{self.name}: components decoded to different sizes")
        if decoded.ndim == 2:
            decoded = decoded[:, :, np.newaxis]
        if decoded.shape[:2] != (h, w):
            raise ImageDecodeError(
                "damaged image", f"{self.name}: decoded {decoded.shape[1]}x{decoded.shape[0]}, expected {w}x{h}"
            )
        native_form = pixels.native(decoded, self._conversion) if native else None
        return pixels.to_uint8(decoded, self._conversion) if native_form is None else native_form

    def _smallest_resolution(self, index: int) -> np.ndarray | None:
        """The smallest DWT resolution decoded whole; None for the levels below it (resized)."""
        if index != self._dwt_levels - 1:
            return None
        level = self.info.levels[index]
        return self._decode(index, 0, 0, level.width, level.height)

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        x, y, w, h = tile_of(self.info, level, col, row).tile_rect(col, row)
        if level < self._dwt_levels:
            return self._decode(level, x, y, w, h)
        whole = whole_level(self._cache, self.identity.token, level, self.info.levels, self._smallest_resolution)
        return whole[y : y + h, x : x + w]

    def read_samples(self, level: int, col: int, row: int) -> np.ndarray:
        x, y, w, h = tile_of(self.info, level, col, row).tile_rect(col, row)
        if level < self._dwt_levels:
            return self._decode(level, x, y, w, h, native=True)
        tile = self.read_tile(level, col, row)
        if self._conversion.kind != pixels.SCALE:
            return tile
        # Virtual levels below the codestream's smallest resolution are resized 8-bit pixels:
        # mapped back onto the stored range, so every level normalises alike.
        tops = np.asarray(self._conversion.maximum, dtype=np.float32)
        return tile.astype(np.float32) * (tops / 255.0)

    def raw_tile(self, level: int, col: int, row: int) -> bytes | None:
        return None
