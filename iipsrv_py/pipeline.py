"""Executing an ImagePlan: a stored tile sent as it is, or decode -> process -> encode.

The order is SPEC section 4's: the region is read (CIELAB already converted by its source);
when any of MINMAX, SHD, CTW, GAM, INV, CMP, CNV or a contrast factor applies (or 16-bit
output), its samples go through the float stage -- normalised per channel by the image's
minimum and maximum, processed, quantised once -- otherwise they are read as 8-bit; then
resized, reduced to grey or bitonal, stretched or equalised, mirrored, rotated, encoded.  The
float stage runs on the region at the level the planner chose, so its memory is bounded by
the output, not the image.

Decoded source tiles are kept in the worker cache (``cache/store.py``), so neighbouring regions
and re-encodings do not decode again; their keys start with the source identity token, so a
changed file can never be answered from there.  Encoded outputs are kept as whole responses,
under the one cache key, by the handler context.

The watermark and the output's metadata (ICC, XMP, EXIF, resolution) are added last, to the
processed pixels and by the encoder; a stored tile sent as it is carries neither, so with a
watermark configured no stored tile is sent as it is.
"""

from __future__ import annotations

import numpy as np

from . import deadline, encoders, metrics
from .cache.store import WorkerCache
from .encoders.metadata import OutputMetadata, output_metadata
from .model import ImageInfo, Ops
from .planning import ImagePlan
from .settings import Settings
from .sources.base import ImageSource
from .transforms import processing
from .transforms.colour import to_bitonal, to_grey
from .transforms.resample import resize
from .transforms.rotate import mirror, rotate
from .transforms.tone import TONES
from .transforms.watermark import Watermark


class Pipeline:
    def __init__(self, settings: Settings, cache: WorkerCache) -> None:
        self.settings = settings
        self.cache = cache
        # Read once per worker; a file that cannot be read logs once and watermarks nothing.
        self.watermark = Watermark(settings.watermark, settings.watermark_probability, settings.watermark_opacity)

    @property
    def variant(self) -> str:
        """What besides the plan and the settings names this pipeline's output: the watermark's
        pixels, so that replacing its file (same name) never serves renderings made with the
        old one.  Part of every image response's cache key."""
        return f"wm:{self.watermark.token}" if self.watermark.active else ""

    def render(self, source: ImageSource, plan: ImagePlan) -> bytes:
        if plan.layers:
            # Quality layers (LYR, MAX_LAYERS): a view of the image with an identity of its
            # own, so its decoded tiles are cached apart from the full-quality ones.
            source = source.with_layers(plan.layers)
        body = self._passthrough(source, plan)
        if body is not None:
            return body
        encoder = encoders.get(plan.encoding)
        if plan.ops.float_stage:
            pixels = float_stage(self.region(source, plan, native=True), source.info, plan.ops)
        else:
            pixels = self.region(source, plan)
        deadline.check()
        pixels = resize(pixels, plan.out_width, plan.out_height, self.settings.interpolation)
        pixels = self._process(pixels, plan, encoder.alpha)
        deadline.check()
        if self.watermark.active:
            pixels = self.watermark.apply(pixels, self._seed(source, plan), self._block(source, plan))
        return encoder.encode(pixels, plan.quality, self.settings, self.metadata(source, plan))

    def metadata(self, source: ImageSource, plan: ImagePlan) -> OutputMetadata:
        """What the output of ``plan`` carries besides its pixels."""
        return output_metadata(
            source.info,
            source.icc_profile,
            source.xmp if plan.view else None,
            source.exif if plan.view else None,
            ops=plan.ops,
            view=plan.view,
            out_size=(plan.out_width, plan.out_height),
            region=plan.region,
            settings=self.settings,
        )

    @staticmethod
    def _seed(source: ImageSource, plan: ImagePlan) -> bytes:
        # Everything that names these bytes, and nothing else (not the time, not the worker):
        # the same request watermarks the same blocks at the same places wherever it is made.
        return f"{source.identity.token}\0{plan.canonical}".encode("utf-8", "surrogatepass")

    @staticmethod
    def _block(source: ImageSource, plan: ImagePlan) -> int:
        """A tile is one block; a view is cut into blocks of twice the source's tile size."""
        if not plan.view:
            return 0
        level = source.info.levels[plan.level]
        return 2 * max(level.tile_width, level.tile_height)

    @staticmethod
    def _process(pixels: np.ndarray, plan: ImagePlan, alpha: bool) -> np.ndarray:
        """The stage after the resize: grey or bitonal, stretch or equalisation, flip, rotation."""
        ops = plan.ops
        if ops.colour == "gray":
            pixels = to_grey(pixels)
        elif ops.colour == "bitonal":
            pixels = to_bitonal(pixels)
        if ops.tone:
            pixels = TONES[ops.tone](pixels)
        if ops.mirror:
            pixels = mirror(pixels)
        return rotate(pixels, ops.rotation, transparent=alpha)

    def _passthrough(self, source: ImageSource, plan: ImagePlan) -> bytes | None:
        """The stored tile itself, when nothing about the request would change its bytes."""
        if (
            plan.tile is None
            or not plan.ops.none
            or not self.settings.codec_passthrough
            or self.watermark.active  # the stored tile has no watermark
            or plan.quality.explicit
            or plan.encoding != source.info.stored_encoding
        ):
            return None
        level = source.info.levels[plan.level]
        if (plan.w, plan.h) != (level.tile_width, level.tile_height):
            return None  # an edge tile: the stored one is padded and must be cropped
        return source.raw_tile(plan.level, *plan.tile)

    def tile(self, source: ImageSource, level: int, col: int, row: int, native: bool = False) -> np.ndarray:
        """A decoded tile, from the cache when it is there: 8-bit pixels, or with ``native`` the
        samples of ``source.read_samples`` (cached apart)."""
        key = ("raw" if native else "px", source.identity.token, level, col, row)
        pixels = self.cache.get(key)
        if isinstance(pixels, np.ndarray):
            metrics.lookup("pixels", True)
            return pixels
        metrics.lookup("pixels", False)
        deadline.check()  # before each decode: a request past REQUEST_TIMEOUT stops here
        fresh = source.read_samples(level, col, row) if native else source.read_tile(level, col, row)
        if fresh.base is not None and fresh.base.nbytes > fresh.nbytes:
            # A cropped edge tile: keep only the pixels, not the padded buffer behind them.
            fresh = fresh.copy()
        self.cache.put(key, fresh, fresh.nbytes)
        return fresh

    def region(self, source: ImageSource, plan: ImagePlan, native: bool = False) -> np.ndarray:
        """The plan's rectangle of its level, assembled from (cached) source tiles (``native``:
        of their samples for the float stage)."""
        level = source.info.levels[plan.level]
        tw, th = level.tile_width, level.tile_height
        x0, y0, x1, y1 = plan.x, plan.y, plan.x + plan.w, plan.y + plan.h
        cols = range(x0 // tw, (x1 - 1) // tw + 1)
        rows = range(y0 // th, (y1 - 1) // th + 1)
        if len(cols) == 1 and len(rows) == 1:
            tile = self.tile(source, plan.level, cols[0], rows[0], native)
            ox, oy = cols[0] * tw, rows[0] * th
            return tile[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        out: np.ndarray | None = None
        for row in rows:
            for col in cols:
                tile = self.tile(source, plan.level, col, row, native)
                if out is None:
                    out = np.empty((plan.h, plan.w, tile.shape[2]), tile.dtype)
                tx, ty = col * tw, row * th
                # Overlap of this tile with the region, in level coordinates.
                ax, ay = max(x0, tx), max(y0, ty)
                bx, by = min(x1, tx + tile.shape[1]), min(y1, ty + tile.shape[0])
                out[ay - y0 : by - y0, ax - x0 : bx - x0] = tile[ay - ty : by - ty, ax - tx : bx - tx]
        assert out is not None
        return out


# -- the float stage -----------------------------------------------------------------------------


def sample_ranges(
    info: ImageInfo, bands: int, minmax: tuple[tuple[int, float, float], ...]
) -> tuple[list[float], list[float]]:
    """Per band, the range the float stage maps to 0..1: the image's own (its stored range, or
    SMin/SMaxSampleValue), 0-255 for images whose samples are shown converted (CIELAB), then
    MINMAX's overrides in the order given."""
    if info.colorspace == "cielab" or len(info.min_values) != bands or len(info.max_values) != bands:
        lows, highs = [0.0] * bands, [255.0] * bands
    else:
        lows, highs = list(info.min_values), list(info.max_values)
    for channel, low, high in minmax:
        for band in range(bands) if channel < 0 else [channel] if channel < bands else []:
            lows[band], highs[band] = low, high
    return lows, highs


def float_stage(samples: np.ndarray, info: ImageInfo, ops: Ops) -> np.ndarray:
    """SPEC section 4's float pipeline: normalise -> SHD -> CTW -> GAM -> INV -> CMP -> CNV ->
    contrast -> quantise to ``ops.bits``.  An alpha band (the last of 2 or 4) is normalised
    and quantised alone and joins the colour bands again at the end."""
    bands = samples.shape[2]
    colour_bands = bands - 1 if bands in (2, 4) else bands
    lows, highs = sample_ranges(info, bands, ops.minmax)
    colour = samples[:, :, :colour_bands]
    if samples.dtype in (np.uint8, np.uint16) and not (ops.shade is not None or ops.twist or ops.kernel):
        out = _through_table(colour, lows[:colour_bands], highs[:colour_bands], ops)
    else:
        out = _chain(colour, lows[:colour_bands], highs[:colour_bands], ops)
    if colour_bands == bands or out.shape[2] not in (1, 3):
        return out
    alpha = processing.quantise(
        processing.normalise(samples[:, :, colour_bands:], lows[colour_bands:], highs[colour_bands:]), ops.bits
    )
    return np.concatenate([out, alpha], axis=2)


def _chain(samples: np.ndarray, lows: list[float], highs: list[float], ops: Ops) -> np.ndarray:
    values = processing.normalise(samples, lows, highs)
    if ops.shade is not None:
        values = processing.shade(values, *ops.shade)
    if ops.twist:
        values = processing.twist(values, ops.twist)
    if ops.log:
        values = processing.logarithm(values)
    elif ops.gamma != 1.0:
        values = processing.gamma(values, ops.gamma)
    if ops.invert:
        values = processing.invert(values)
    if ops.cmap:
        values = processing.colour_map(values, ops.cmap)
    if ops.kernel:
        values = processing.convolve(values, ops.kernel)
    if ops.contrast != 1.0:
        values = processing.contrast(values, ops.contrast)
    return processing.quantise(values, ops.bits)


def _through_table(samples: np.ndarray, lows: list[float], highs: list[float], ops: Ops) -> np.ndarray:
    """``_chain`` of 8- or 16-bit samples when every step is pointwise (no SHD, CTW or CNV):
    each band's result depends on its own value alone, so the chain runs once over every
    possible value (256 or 65,536 of them) and the samples are looked up -- the same numbers,
    a fraction of the arithmetic for any region larger than the table."""
    bands = samples.shape[2]
    ramp = np.arange(int(np.iinfo(samples.dtype).max) + 1, dtype=samples.dtype)
    table = _chain(np.repeat(ramp[:, None, None], bands, axis=2), lows, highs, ops)[:, 0, :]
    if ops.cmap:  # the first band, mapped to RGB
        return table[samples[:, :, 0]]
    out = np.empty(samples.shape, table.dtype)
    for band in range(bands):
        out[:, :, band] = table[samples[:, :, band], band]
    return out
