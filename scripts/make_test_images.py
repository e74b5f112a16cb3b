#!/usr/bin/env python3
"""Generate the test and demo images, each named by its properties.

    python scripts/make_test_images.py OUTPUT_DIR [NAME ...]
    python scripts/make_test_images.py --demo OUTPUT_DIR

Every image is drawn from the same deterministic scene (gradients, discs, stripes and fine
checks, so that resampling and colour errors show) and written with tifffile or libvips, which
is how such files are made in the field.  Nothing here is derived from the server's code.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator

import imagecodecs
import numpy as np
import pyvips
import tifffile

BUILDERS: dict[str, Callable[[str], None]] = {}


def builder(name: str) -> Callable[[Callable[[str], None]], Callable[[str], None]]:
    def register(func: Callable[[str], None]) -> Callable[[str], None]:
        BUILDERS[name] = func
        return func

    return register


def scene(width: int, height: int, seed: int = 7) -> np.ndarray:
    """An RGB test picture with smooth and sharp structure at every scale."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 255 * x / max(width - 1, 1)
    g = 255 * y / max(height - 1, 1)
    b = 128 + 100 * np.sin(x / 37.0) * np.cos(y / 23.0)
    rng = np.random.default_rng(seed)
    for _ in range(12):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(0.03, 0.15) * min(width, height)
        colour = rng.uniform(0, 255, 3)
        inside = (x - cx) ** 2 + (y - cy) ** 2 < radius**2
        r[inside], g[inside], b[inside] = colour
    stripes = ((x // 8) % 2 == 0) & (y < height * 0.1)
    b[stripes] = 20
    checks = (((x // 2) + (y // 2)) % 2 == 0) & (x > width * 0.9) & (y > height * 0.9)
    r[checks] = g[checks] = b[checks] = 250
    return np.clip(np.dstack([r, g, b]), 0, 255).astype(np.uint8)


def grey(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 299 + g * 587 + b * 114) // 1000).astype(np.uint8)


def reduce(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """A reduced level, made with libvips as pyramid writers do."""
    bands = 1 if image.ndim == 2 else image.shape[2]
    vips = pyvips.Image.new_from_memory(
        np.ascontiguousarray(image).data, image.shape[1], image.shape[0], bands, "uchar"
    )
    out = vips.resize(width / image.shape[1], vscale=height / image.shape[0])
    shape = (out.height, out.width) if bands == 1 else (out.height, out.width, bands)
    return np.ndarray(buffer=out.write_to_memory(), dtype=np.uint8, shape=shape)


METADATA = {
    "artist": "Test Creator",
    "copyright": "CC-BY 4.0 Test Rights",
    "description": 'A generated test image with "quotes" and <brackets>',
    "software": "make_test_images.py",
    "datetime": "2024:01:02 03:04:05",
}


def write_levels(
    path: str,
    levels: list[np.ndarray],
    tile: tuple[int, int] = (256, 256),
    compression: str | None = "jpeg",
    subifds: bool = False,
    bigtiff: bool = False,
    quality: int = 90,
    metadata: bool = True,
) -> None:
    """A pyramid written with tifffile: levels in the IFD chain (reduced-resolution pages) or
    as SubIFDs of the first page."""
    args: dict[str, object] = {"tile": tile, "compression": compression}
    if compression == "jpeg":
        args["compressionargs"] = {"level": quality}
    first = levels[0]
    photometric = "minisblack" if first.ndim == 2 else "rgb"
    extra: dict[str, object] = {}
    if metadata:
        extra = {
            "description": METADATA["description"],
            "software": METADATA["software"],
            "datetime": METADATA["datetime"],
            "resolution": (300, 300),
            "resolutionunit": "INCH",
            "extratags": [
                (315, "s", 0, METADATA["artist"], True),
                (33432, "s", 0, METADATA["copyright"], True),
                (269, "s", 0, "Generated test document", True),
            ],
        }
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        tif.write(
            first,
            photometric=photometric,
            subifds=len(levels) - 1 if subifds else None,
            metadata=None,
            **extra,  # type: ignore[arg-type]
            **args,  # type: ignore[arg-type]
        )
        for level in levels[1:]:
            tif.write(level, photometric=photometric, subfiletype=1, metadata=None, **args)  # type: ignore[arg-type]


def truncate_half(full: str, path: str) -> None:
    """``path`` gets the first half of ``full``'s bytes; ``full`` is removed."""
    with open(full, "rb") as src, open(path, "wb") as dst:
        data = src.read()
        dst.write(data[: len(data) // 2])
    os.unlink(full)


def halving(image: np.ndarray, count: int) -> list[np.ndarray]:
    levels = [image]
    for _ in range(count - 1):
        prev = levels[-1]
        levels.append(reduce(prev, max(1, prev.shape[1] // 2), max(1, prev.shape[0] // 2)))
    return levels


@builder("tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif")
def _vips_jpeg(path: str) -> None:
    """The reference pyramid: libvips/libtiff writes shared JPEGTables and an IFD chain."""
    image = pyvips.Image.new_from_array(scene(3000, 2000), interpretation="srgb")
    image = image.copy()
    image.set_type(pyvips.GValue.gstr_type, "image-description", METADATA["description"])
    image.tiffsave(
        path,
        tile=True,
        tile_width=256,
        tile_height=256,
        pyramid=True,
        compression="jpeg",
        Q=85,
        xres=300 / 25.4,
        yres=300 / 25.4,
        resunit="inch",
    )


@builder("tif-rgb-3000x2000-5lvl-256tile-jpeg-subifd.tif")
def _subifd_jpeg(path: str) -> None:
    write_levels(path, halving(scene(3000, 2000), 5), subifds=True)


@builder("tif-rgb-3000x2000-5lvl-256tile-deflate.tif")
def _deflate(path: str) -> None:
    write_levels(path, halving(scene(3000, 2000), 5), compression="zlib")


@builder("tif-rgb-1500x1000-3lvl-512x256tile-jpeg.tif")
def _non_square(path: str) -> None:
    write_levels(path, halving(scene(1500, 1000), 3), tile=(256, 512))


@builder("tif-rgb-3000x2000-4lvl-div3-256tile-lzw.tif")
def _odd_levels(path: str) -> None:
    """Levels that are not halves: 3000x2000, 1000x667, 333x222, 111x74."""
    full = scene(3000, 2000)
    sizes = [(1000, 667), (333, 222), (111, 74)]
    write_levels(path, [full] + [reduce(full, w, h) for w, h in sizes], compression="lzw")


@builder("tif-rgb-4099x3071-4lvl-step4-256tile-jpeg.tif")
def _step4_levels(path: str) -> None:
    """A slide-like pyramid: levels step by 4 and odd sizes are rounded down, as scanners write
    them (Aperio: 46001 -> 11500): 4099x3071, 1024x767, 256x191, 64x47."""
    full = scene(4099, 3071)
    sizes, (w, h) = [], (4099, 3071)
    for _ in range(3):
        w, h = w // 4, h // 4
        sizes.append((w, h))
    write_levels(path, [full] + [reduce(full, w, h) for w, h in sizes])


@builder("tif-grey-2000x1500-4lvl-256tile-none.tif")
def _grey(path: str) -> None:
    write_levels(path, halving(grey(scene(2000, 1500)), 4), compression=None)


@builder("tif-rgb-1200x800-3lvl-128tile-jpeg-bigtiff.tif")
def _bigtiff(path: str) -> None:
    write_levels(path, halving(scene(1200, 800), 3), tile=(128, 128), bigtiff=True, metadata=False)


@builder("tif-rgb-600x400-2lvl-256tile-none-sminmax-10x5dpcm.tif")
def _sample_range(path: str) -> None:
    """SMin/SMaxSampleValue per channel, a resolution in pixels per centimetre that differs
    between x and y, and metadata that needs escaping (quotes, backslash, <, >, &)."""
    levels = halving(scene(600, 400), 2)
    tags = [
        (340, "B", 3, (10, 20, 30), True),  # SMinSampleValue
        (341, "B", 3, (200, 210, 220), True),  # SMaxSampleValue
        (269, "s", 0, 'Title with "quotes", a back\\slash & <tags>', True),  # DocumentName
        (271, "s", 0, "Test Make", True),
        (272, "s", 0, "Test Model", True),
    ]
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            levels[0],
            photometric="rgb",
            tile=(256, 256),
            compression=None,
            resolution=(10, 5),
            resolutionunit="CENTIMETER",
            software=False,
            metadata=None,
            extratags=tags,
        )
        tif.write(levels[1], photometric="rgb", tile=(256, 256), subfiletype=1, metadata=None, software=False)


def _aperio_style_jpeg(tile: np.ndarray) -> bytes:
    """An RGB JPEG stream as Aperio writes them: no colour transform, no Adobe APP14 marker
    and component ids 1, 2, 3, so nothing in the stream says it is not YCbCr."""
    stream = bytes(imagecodecs.jpeg8_encode(tile, level=90, colorspace="RGB", outcolorspace="RGB"))
    out, pos = bytearray(stream[:2]), 2
    while stream[pos + 1] != 0xDA:  # marker segments up to the start of scan
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
        segment = bytearray(stream[pos : pos + 2 + length])
        if stream[pos + 1] == 0xC0:  # SOF0: 3 components of (id, sampling, table) after 8 bytes
            segment[10], segment[13], segment[16] = 1, 2, 3
        if stream[pos + 1] != 0xEE:
            out += segment
        pos += 2 + length
    scan = bytearray(stream[pos:])
    scan[5], scan[7], scan[9] = 1, 2, 3  # SOS: (id, tables) pairs after 5 bytes
    return bytes(out + scan)


@builder("tif-rgb-1024x768-2lvl-256tile-jpeg-rgb-no-app14.tif")
def _rgb_jpeg(path: str) -> None:
    """Photometric RGB with JPEG tiles whose streams are RGB without any marker saying so
    (Aperio SVS style): a decoder reading the stream alone would take them for YCbCr."""

    def tiles(image: np.ndarray, size: int = 256) -> Iterator[bytes]:
        for y in range(0, image.shape[0], size):
            for x in range(0, image.shape[1], size):
                tile = np.zeros((size, size, 3), np.uint8)
                part = image[y : y + size, x : x + size]
                tile[: part.shape[0], : part.shape[1]] = part
                yield _aperio_style_jpeg(tile)

    levels = halving(scene(1024, 768), 2)
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate(levels):
            tif.write(
                tiles(level),
                shape=level.shape,
                dtype=np.uint8,
                photometric="rgb",
                tile=(256, 256),
                compression="jpeg",
                subfiletype=1 if index else 0,
                metadata=None,
            )
    # tifffile records JPEG data as YCbCr; the streams are RGB, as the tag must then say.
    with tifffile.TiffFile(path, mode="r+b") as tif:
        for page in tif.pages:
            page.tags["PhotometricInterpretation"].overwrite(2)


# -- TIFF flavours --
# Small images (one of each sample format, colour layout, codec and storage) written with
# tifffile's or libvips' own options, so that the server is checked against the files the
# libraries make.


def _flavour(path: str, data: np.ndarray, **options: object) -> None:
    """One image written by tifffile, with 256-px tiles unless ``rowsperstrip`` says strips."""
    if "rowsperstrip" not in options:
        options.setdefault("tile", (256, 256))
    options.setdefault("metadata", None)
    tifffile.imwrite(path, data, **options)  # type: ignore[arg-type]


def deep_grey(width: int, height: int, dtype: type) -> np.ndarray:
    """The grey scene spread over most of an integer type's range, with structure in the low
    bits too (a slowly varying offset) so that scaling errors show."""
    base = grey(scene(width, height)).astype(np.float64) / 255.0
    fine = (np.arange(width)[np.newaxis, :] % 7) / 7.0
    info = np.iinfo(dtype)
    span = float(info.max) - float(info.min)
    values = info.min + (0.05 + 0.9 * base + 0.01 * fine) * span
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


def deep_rgb16(width: int, height: int) -> np.ndarray:
    rgb = scene(width, height).astype(np.uint16) * 257
    return rgb + (np.arange(width, dtype=np.uint16)[np.newaxis, :, np.newaxis] % 200)


def with_alpha(colour: np.ndarray, top: int = 255) -> np.ndarray:
    """A smooth alpha ramp (transparent left, opaque right) beside the colour samples."""
    height, width = colour.shape[:2]
    ramp = np.rint(np.linspace(0, top, width))[np.newaxis, :].repeat(height, axis=0).astype(colour.dtype)
    colour = colour[:, :, np.newaxis] if colour.ndim == 2 else colour
    return np.concatenate([colour, ramp[:, :, np.newaxis]], axis=2)


@builder("tif-bilevel-600x400-1lvl-256tile-packbits-miniswhite.tif")
def _bilevel(path: str) -> None:
    _flavour(path, grey(scene(600, 400)) > 128, photometric="miniswhite", compression="packbits")


@builder("tif-palette-600x400-1lvl-256tile-lzw.tif")
def _palette(path: str) -> None:
    rng = np.random.default_rng(5)
    colormap = rng.integers(0, 65536, (3, 256), dtype=np.uint16)
    _flavour(path, grey(scene(600, 400)), photometric="palette", colormap=colormap, compression="lzw")


@builder("tif-grey-600x400-1lvl-256tile-deflate-miniswhite.tif")
def _miniswhite(path: str) -> None:
    _flavour(path, grey(scene(600, 400)), photometric="miniswhite", compression="zlib")


@builder("tif-grey16-600x400-2lvl-256tile-deflate.tif")
def _grey16(path: str) -> None:
    full = deep_grey(600, 400, np.uint16)
    with tifffile.TiffWriter(path) as tif:
        tif.write(full, photometric="minisblack", tile=(256, 256), compression="zlib", metadata=None)
        half = full.reshape(200, 2, 300, 2).mean(axis=(1, 3)).round().astype(np.uint16)
        tif.write(half, photometric="minisblack", tile=(256, 256), compression="zlib", subfiletype=1, metadata=None)


@builder("tif-rgb16-600x400-1lvl-256tile-zstd-sminmax.tif")
def _rgb16_range(path: str) -> None:
    tags = [(340, "H", 3, (1000, 2000, 3000), True), (341, "H", 3, (60000, 50000, 40000), True)]
    _flavour(path, deep_rgb16(600, 400), photometric="rgb", compression="zstd", extratags=tags)


@builder("tif-grey-int16-600x400-1lvl-256tile-none.tif")
def _int16(path: str) -> None:
    _flavour(path, deep_grey(600, 400, np.int16), photometric="minisblack")


@builder("tif-grey-uint32-600x400-1lvl-256tile-deflate.tif")
def _uint32(path: str) -> None:
    _flavour(path, deep_grey(600, 400, np.uint32), photometric="minisblack", compression="zlib")


@builder("tif-grey-int32-600x400-1lvl-256tile-lzw.tif")
def _int32(path: str) -> None:
    _flavour(path, deep_grey(600, 400, np.int32), photometric="minisblack", compression="lzw")


@builder("tif-grey-float32-600x400-1lvl-256tile-deflate-predictor.tif")
def _float32(path: str) -> None:
    """Values from -0.2 to 1.2, so that both ends are clipped to the [0, 1] range."""
    values = grey(scene(600, 400)).astype(np.float32) / 255 * 1.4 - 0.2
    _flavour(path, values, photometric="minisblack", compression="zlib", predictor=True)


@builder("tif-rgba-600x400-1lvl-256tile-deflate-unassalpha.tif")
def _rgba(path: str) -> None:
    _flavour(path, with_alpha(scene(600, 400)), photometric="rgb", extrasamples=("unassalpha",), compression="zlib")


@builder("tif-greya-600x400-1lvl-256tile-lzw-assocalpha.tif")
def _grey_alpha(path: str) -> None:
    colour = grey(scene(600, 400))
    alpha = with_alpha(colour)
    # Associated alpha: colour premultiplied, as such files store it.
    alpha[:, :, 0] = (colour.astype(np.uint32) * alpha[:, :, 1] // 255).astype(np.uint8)
    _flavour(path, alpha, photometric="minisblack", extrasamples=("assocalpha",), compression="lzw")


@builder("tif-rgb-600x400-1lvl-256tile-deflate-planar.tif")
def _planar(path: str) -> None:
    _flavour(path, np.moveaxis(scene(600, 400), 2, 0), photometric="rgb", planarconfig="separate", compression="zlib")


@builder("tif-rgba16-600x400-1lvl-256tile-zstd-planar.tif")
def _planar_rgba16(path: str) -> None:
    rgba = with_alpha(deep_rgb16(600, 400), top=65535)
    _flavour(
        path,
        np.moveaxis(rgba, 2, 0),
        photometric="rgb",
        planarconfig="separate",
        extrasamples=("unassalpha",),
        compression="zstd",
    )


@builder("tif-cielab-600x400-1lvl-256tile-none.tif")
def _cielab(path: str) -> None:
    """8-bit CIELAB: L* 0-100 over 0-255, a* and b* signed bytes (-100 .. 100 here)."""
    rgb = scene(600, 400).astype(np.int16)
    lightness = grey(scene(600, 400))
    a = np.clip(rgb[:, :, 0] - rgb[:, :, 1], -100, 100).astype(np.int8).view(np.uint8)
    b = np.clip((rgb[:, :, 1] - rgb[:, :, 2]) // 2, -100, 100).astype(np.int8).view(np.uint8)
    _flavour(path, np.dstack([lightness, a, b]), photometric="cielab")


CODECS = {"jpeg2000": "jpeg2000", "webp": "webp", "png": "png", "zstd": "zstd", "lzw": "lzw", "packbits": "packbits"}
for _name, _codec in [*CODECS.items(), ("none", None)]:

    def _codec_builder(path: str, codec: str | None = _codec) -> None:
        _flavour(path, scene(600, 400), photometric="rgb", compression=codec)

    builder(f"tif-rgb-600x400-1lvl-256tile-{_name}.tif")(_codec_builder)


@builder("tif-rgb-600x400-strip16-deflate.tif")
def _strips(path: str) -> None:
    _flavour(path, scene(600, 400), photometric="rgb", rowsperstrip=16, compression="zlib")


@builder("tif-rgb-600x400-strip400-none.tif")
def _one_strip(path: str) -> None:
    """The whole image in one uncompressed strip, as many simple writers store it."""
    _flavour(path, scene(600, 400), photometric="rgb", rowsperstrip=400)


@builder("tif-rgb-600x400-strip32-deflate-planar.tif")
def _planar_strips(path: str) -> None:
    data = np.moveaxis(scene(600, 400), 2, 0)
    _flavour(path, data, photometric="rgb", planarconfig="separate", rowsperstrip=32, compression="zlib")


@builder("tif-rgb-600x400-strip64-none-planar.tif")
def _planar_raw_strips(path: str) -> None:
    _flavour(path, np.moveaxis(scene(600, 400), 2, 0), photometric="rgb", planarconfig="separate", rowsperstrip=64)


@builder("tif-grey16-600x400-strip100-none-bigendian.tif")
def _big_endian_strips(path: str) -> None:
    _flavour(path, deep_grey(600, 400, np.uint16), photometric="minisblack", rowsperstrip=100, byteorder=">")


@builder("tif-rgb-1200x800-3lvl-strip64-lzw.tif")
def _stripped_pyramid(path: str) -> None:
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate(halving(scene(1200, 800), 3)):
            tif.write(
                level,
                photometric="rgb",
                rowsperstrip=64,
                compression="lzw",
                subfiletype=1 if index else 0,
                metadata=None,
            )


@builder("tif-rgb-1200x800-2lvl-256tile-jpeg-stripped-extras.tif")
def _stripped_extras(path: str) -> None:
    """Slide-like: a stripped thumbnail after the full image and a stripped label at the end,
    neither of which is a level or a stack page."""
    levels = halving(scene(1200, 800), 2)
    with tifffile.TiffWriter(path) as tif:
        tif.write(levels[0], photometric="rgb", tile=(256, 256), compression="jpeg", metadata=None)
        thumbnail = reduce(levels[0], 300, 200)
        tif.write(thumbnail, photometric="rgb", rowsperstrip=64, compression="jpeg", metadata=None)
        tif.write(levels[1], photometric="rgb", tile=(256, 256), compression="jpeg", subfiletype=1, metadata=None)
        label = scene(200, 100, seed=3)
        tif.write(label, photometric="rgb", rowsperstrip=100, compression="lzw", subfiletype=1, metadata=None)


@builder("ome-rgb-1200x800-3lvl-256tile-subifd-deflate.ome.tif")
def _ome(path: str) -> None:
    levels = halving(scene(1200, 800), 3)
    options: dict[str, object] = {"photometric": "rgb", "tile": (256, 256), "compression": "zlib"}
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(levels[0], subifds=len(levels) - 1, metadata={"axes": "YXS", "Name": "scene"}, **options)  # type: ignore[arg-type]
        for level in levels[1:]:
            tif.write(level, subfiletype=1, **options)  # type: ignore[arg-type]


@builder("tif-rgb-1200x800-4lvl-256tile-deflate-vips-subifd.tif")
def _vips_subifd(path: str) -> None:
    image = pyvips.Image.new_from_array(scene(1200, 800), interpretation="srgb")
    image.tiffsave(path, tile=True, tile_width=256, tile_height=256, pyramid=True, subifd=True, compression="deflate")


STACK_NAMES = ("Infrared", "Visible", "Ultraviolet")


@builder("tif-stack-3page-600x400-2lvl-256tile-deflate-subifd-pagenames.tif")
def _stack(path: str) -> None:
    """Three same-size pages (a multispectral stack), each with a reduced level in a SubIFD
    and a PageName."""
    options: dict[str, object] = {"photometric": "rgb", "tile": (256, 256), "compression": "zlib", "metadata": None}
    with tifffile.TiffWriter(path) as tif:
        for seed, name in enumerate(STACK_NAMES, start=20):
            levels = halving(scene(600, 400, seed=seed), 2)
            tif.write(levels[0], subifds=1, extratags=[(285, "s", 0, name, True)], **options)  # type: ignore[arg-type]
            tif.write(levels[1], subfiletype=1, **options)  # type: ignore[arg-type]


@builder("tif-stack-2page-600x400-2lvl-256tile-lzw-chain.tif")
def _stack_chain(path: str) -> None:
    """Two unnamed same-size grey pages, each followed in the IFD chain by its own reduced
    level."""
    options: dict[str, object] = {
        "photometric": "minisblack",
        "tile": (256, 256),
        "compression": "lzw",
        "metadata": None,
    }
    with tifffile.TiffWriter(path) as tif:
        for seed in (30, 31):
            levels = halving(grey(scene(600, 400, seed=seed)), 2)
            tif.write(levels[0], **options)  # type: ignore[arg-type]
            tif.write(levels[1], subfiletype=1, **options)  # type: ignore[arg-type]


@builder("broken-strip-600x400-strip16-deflate.tif")
def _bad_strip(path: str) -> None:
    """A stripped image in which exactly one strip (rows 48-63) holds garbage."""
    _flavour(path, scene(600, 400), photometric="rgb", rowsperstrip=16, compression="zlib")
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = int(page.dataoffsets[3]), int(page.databytecounts[3])
    with open(path, "r+b") as out:
        out.seek(offset)
        out.write(b"\x00\x13" * (count // 2))


@builder("broken-truncated.tif")
def _truncated(path: str) -> None:
    """A valid header and IFDs but tile data cut off half way."""
    source = path + ".full"
    write_levels(source, halving(scene(1024, 1024), 3), compression="zlib", metadata=False)
    with tifffile.TiffFile(source) as tif:
        page = tif.pages[0]
        cut = int(page.dataoffsets[len(page.dataoffsets) // 2])
    with open(source, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read(cut))
    os.unlink(source)


@builder("broken-header.tif")
def _bad_header(path: str) -> None:
    """TIFF magic followed by garbage: nothing can be opened."""
    rng = np.random.default_rng(3)
    with open(path, "wb") as out:
        out.write(b"II*\0" + b"\xff\xff\xff\x7f" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())


@builder("broken-tile-1024x1024-256tile-jpeg.tif")
def _bad_tile(path: str) -> None:
    """A readable pyramid in which exactly one tile (level 0, tile 5) holds garbage."""
    write_levels(path, halving(scene(1024, 1024), 3), metadata=False)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = int(page.dataoffsets[5]), int(page.databytecounts[5])
    with open(path, "r+b") as out:
        out.seek(offset)
        out.write(b"\xff\xd8" + b"\x00\x13" * ((count - 2) // 2))


@builder("not-an-image.tif")
def _not_image(path: str) -> None:
    with open(path, "w") as out:
        out.write("This is a text file with an image's name.\n")


# -- JPEG 2000 and JPEG --
# JPEG 2000 files are written by OpenJPEG (glymur), JPEG files by libjpeg (Pillow).


def _jp2(path: str, data: np.ndarray, **options: object) -> None:
    import glymur  # only these builders need it

    glymur.Jp2k(path, data=data, **options)


@builder("jp2-rgb-3000x2000-5res-3layer.jp2")
def _jp2_layers(path: str) -> None:
    """Five resolutions (four decompositions), three quality layers, the last lossless."""
    _jp2(path, scene(3000, 2000), numres=5, cratios=[200, 40, 1])


@builder("j2k-rgb-2000x1500-2res-384tile.j2k")
def _j2k_tiled(path: str) -> None:
    """A raw codestream of 384-px tiles whose smallest resolution (1000 px) is far above a
    tile, so that a server needs levels of its own below it."""
    _jp2(path, scene(2000, 1500, seed=5), numres=2, tilesize=(384, 384))


@builder("jp2-grey16-1000x700-4res.jp2")
def _jp2_grey16(path: str) -> None:
    y, x = np.mgrid[0:700, 0:1000]
    _jp2(path, ((x * 65 + y * 17) % 65536).astype(np.uint16), numres=4)


@builder("jp2-rgba-800x600-4res.jp2")
def _jp2_rgba(path: str) -> None:
    rgb = scene(800, 600, seed=9)
    alpha = np.tile(np.linspace(0, 255, 800).astype(np.uint8), (600, 1))
    _jp2(path, np.dstack([rgb, alpha]), numres=4)


@builder("broken-truncated.jp2")
def _jp2_truncated(path: str) -> None:
    """A JP2 whose codestream stops half way."""
    _jp2(path + ".full", scene(1024, 1024), numres=4)
    truncate_half(path + ".full", path)


@builder("not-an-image.jp2")
def _not_jp2(path: str) -> None:
    with open(path, "w") as out:
        out.write("A text file named like a JPEG 2000 image.\n")


def _jpeg(path: str, data: np.ndarray, **options: object) -> None:
    from PIL import Image

    Image.fromarray(data).save(path, "JPEG", quality=90, **options)


@builder("jpeg-rgb-3000x2000-q90-exif.jpg")
def _jpeg_rgb(path: str) -> None:
    from PIL import Image

    exif = Image.Exif()
    exif[0x013B] = METADATA["artist"]
    exif[0x8298] = METADATA["copyright"]
    _jpeg(path, scene(3000, 2000), exif=exif, comment=b"A generated JPEG", dpi=(300, 300))


@builder("jpeg-grey-1200x800-q90.jpg")
def _jpeg_grey(path: str) -> None:
    _jpeg(path, grey(scene(1200, 800, seed=3)))


@builder("jpeg-rgb-1001x777-q90.jpg")
def _jpeg_odd(path: str) -> None:
    _jpeg(path, scene(1001, 777, seed=4))


@builder("broken-truncated.jpg")
def _jpeg_truncated(path: str) -> None:
    _jpeg(path + ".full", scene(1024, 768))
    truncate_half(path + ".full", path)


@builder("tif-named-as-jpeg-rgb-600x400.jpg")
def _tiff_named_jpg(path: str) -> None:
    """A tiled TIFF with a .jpg name: formats are told by content."""
    write_levels(path, [scene(600, 400)], compression="zlib", metadata=False)


# -- Aperio SVS --
# Files laid out as Aperio's scanners write them: the full level tiled (page 0), a stripped
# thumbnail (page 1), the reduced levels stepping by 4, then the label (NewSubfileType 1) and
# the macro photograph (NewSubfileType 9); every description starts with "Aperio" and the first
# carries the `key = value` properties.  OpenSlide reads them as Aperio slides.

SVS_MPP = 0.2468
SVS_APPMAG = 40


def _svs_description(width: int, height: int, tile: int, codec: str) -> str:
    return (
        f"Aperio Image Library vTEST \r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) {codec}"
        f"|AppMag = {SVS_APPMAG}|StripeWidth = 1000|ScanScope ID = SS1234|Filename = generated"
        f"|Date = 01/02/24|Time = 03:04:05|User = test|MPP = {SVS_MPP}|Left = 25.0|Top = 23.5"
    )


def _padded_tiles(image: np.ndarray, size: int, encode: Callable[[np.ndarray], bytes]) -> Iterator[bytes]:
    """Every tile whole, edge tiles padded with white, as scanners store them."""
    for y in range(0, image.shape[0], size):
        for x in range(0, image.shape[1], size):
            tile = np.full((size, size, 3), 255, np.uint8)
            part = image[y : y + size, x : x + size]
            tile[: part.shape[0], : part.shape[1]] = part
            yield encode(tile)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """Full-range (JFIF) RGB to YCbCr."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return np.clip(np.rint(np.dstack([y, cb, cr])), 0, 255).astype(np.uint8)


def _jp2k_rgb(tile: np.ndarray) -> bytes:
    """33005: an RGB codestream; the encoder's colour transform is undone by any decoder."""
    return bytes(imagecodecs.jpeg2k_encode(tile, level=48, codecformat="J2K", reversible=False, mct=True))


def _jp2k_ycbcr(tile: np.ndarray) -> bytes:
    """33003: YCbCr components in a codestream without a colour transform."""
    return bytes(
        imagecodecs.jpeg2k_encode(rgb_to_ycbcr(tile), level=48, codecformat="J2K", reversible=False, mct=False)
    )


def write_svs(path: str, width: int, height: int, levels: int, compression: int, tile: int = 256) -> None:
    full = scene(width, height, seed=5)
    sizes = [(width, height)]
    for _ in range(levels - 1):
        sizes.append((sizes[-1][0] // 4, sizes[-1][1] // 4))
    encode, codec = {
        7: (_aperio_style_jpeg, "JPEG/RGB Q=90"),
        33003: (_jp2k_ycbcr, "J2K/YUV16 Q=48"),
        33005: (_jp2k_rgb, "J2K/KDU Q=48"),
    }[compression]
    description = _svs_description(width, height, tile, codec)
    thumb_w = 768 * width // max(width, height)
    thumb_h = 768 * height // max(width, height)
    label = np.full((240, 400, 3), 240, np.uint8)
    label[40:200, 40:360] = scene(320, 160, seed=9)
    macro = reduce(scene(1280, 420, seed=3), 1280, 420)

    def level(tif: tifffile.TiffWriter, index: int) -> None:
        w, h = sizes[index]
        pixels = full if index == 0 else reduce(full, w, h)
        tif.write(
            _padded_tiles(pixels, tile, encode),
            shape=pixels.shape,
            dtype=np.uint8,
            photometric="rgb",
            tile=(tile, tile),
            compression=compression,
            description=description if index == 0 else f"{description.split('|', 1)[0]} -> {w}x{h}",
            software=False,
            metadata=None,
        )

    def stripped(tif: tifffile.TiffWriter, pixels: np.ndarray, description: str, subfiletype: int) -> None:
        h = pixels.shape[0]
        tif.write(
            iter([_aperio_style_jpeg(pixels)]),
            shape=pixels.shape,
            dtype=np.uint8,
            photometric="rgb",
            compression="jpeg",
            rowsperstrip=h,
            subfiletype=subfiletype,
            description=description,
            software=False,
            metadata=None,
        )

    with tifffile.TiffWriter(path) as tif:
        level(tif, 0)
        stripped(
            tif,
            reduce(full, thumb_w, thumb_h),
            f"Aperio Image Library vTEST \n{width}x{height} -> {thumb_w}x{thumb_h}",
            0,
        )
        for index in range(1, levels):
            level(tif, index)
        # The label is LZW-compressed, the macro a JPEG, as Aperio stores them.
        tif.write(
            label,
            photometric="rgb",
            compression="lzw",
            rowsperstrip=16,
            subfiletype=1,
            description="Aperio Image Library vTEST \nlabel 400x240",
            software=False,
            metadata=None,
        )
        stripped(tif, macro, "Aperio Image Library vTEST \nmacro 1280x420", 9)
    # tifffile records JPEG data as YCbCr; Aperio's JPEG streams are RGB and the tag says so.
    with tifffile.TiffFile(path, mode="r+b") as tif:
        for page in tif.pages:
            if page.compression == 7:
                page.tags["PhotometricInterpretation"].overwrite(2)


@builder("svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs")
def _svs_jpeg(path: str) -> None:
    write_svs(path, 4097, 2999, 3, 7)


@builder("svs-rgb-1500x1001-2lvl-step4-256tile-jp2k-33003-ycbcr.svs")
def _svs_jp2k_ycbcr(path: str) -> None:
    write_svs(path, 1500, 1001, 2, 33003)


@builder("svs-rgb-1500x1001-2lvl-step4-256tile-jp2k-33005-rgb.svs")
def _svs_jp2k_rgb(path: str) -> None:
    write_svs(path, 1500, 1001, 2, 33005)


DEMO_NAME = "demo-rgb-8192x6144-6lvl-256tile-jpeg-metadata.tif"
# What OBJ=metadata, the IIP metadata objects and IIIF's rights and physical dimensions show
# for the demo: every TIFF tag the server reads, and a resolution.
DEMO_METADATA = {
    "title": "iipsrv_py demo image",  # DocumentName
    "description": "A generated scene with a labelled 1024-pixel grid, for trying every protocol",
    "creator": "The iipsrv_py authors",  # Artist
    "rights": "https://creativecommons.org/publicdomain/zero/1.0/",  # Copyright: a URI, IIIF 3's rights
    "software": "iipsrv_py scripts/make_test_images.py --demo",
    "date": "2024:06:01 12:00:00",  # DateTime, TIFF's own format
    "make": "iipsrv_py",
    "model": "make_test_images.py",
}
DEMO_DPI = 300


def demo_image(path: str) -> None:
    """The demo picture: the test scene with a labelled 1024-px grid, so that every region,
    tile and zoom level can be checked by eye, as a JPEG pyramid (256-px tiles, levels halving
    down to one tile) carrying DEMO_METADATA and 300 dpi.  Drawn by libvips, written by
    tifffile, which can write the descriptive tags libvips does not."""
    width, height = 8192, 6144
    image = pyvips.Image.new_from_array(scene(width, height, seed=11), interpretation="srgb")
    for gx in range(0, width, 1024):
        for gy in range(0, height, 1024):
            label = pyvips.Image.text(f"<b>{gx // 1024},{gy // 1024}</b>", dpi=600, font="sans")
            ink = label.new_from_image([255, 255, 255]).bandjoin(label)
            image = image.composite2(ink.copy(interpretation="srgb"), "over", x=gx + 40, y=gy + 40)
    image = image.flatten() if image.bands == 4 else image
    grid = pyvips.Image.black(width, height).draw_rect(255, 0, 0, width, height, fill=False)
    for g in range(0, width, 1024):
        grid = grid.draw_line(255, g, 0, g, height - 1)
    for g in range(0, height, 1024):
        grid = grid.draw_line(255, 0, g, width - 1, g)
    image = (grid > 0).ifthenelse([255, 255, 255], image).cast("uchar")
    full = np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8, shape=(height, width, 3))
    levels = halving(full, 6)  # 8192 x 6144 down to 256 x 192
    tags = DEMO_METADATA
    args: dict[str, object] = {
        "photometric": "rgb",
        "tile": (256, 256),
        "compression": "jpeg",
        "compressionargs": {"level": 85},
        "metadata": None,
    }
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            levels[0],
            description=tags["description"],
            software=tags["software"],
            datetime=tags["date"],
            resolution=(DEMO_DPI, DEMO_DPI),
            resolutionunit="INCH",
            extratags=[
                (269, "s", 0, tags["title"], True),  # DocumentName
                (271, "s", 0, tags["make"], True),
                (272, "s", 0, tags["model"], True),
                (315, "s", 0, tags["creator"], True),  # Artist
                (33432, "s", 0, tags["rights"], True),  # Copyright
            ],
            **args,  # type: ignore[arg-type]
        )
        for level in levels[1:]:
            tif.write(level, subfiletype=1, **args)  # type: ignore[arg-type]


def build(directory: str, names: list[str] | None = None) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    made = []
    for name in names or list(BUILDERS):
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            # Per process: test runs in parallel may build the same image at the same time.
            tmp = f"{path}.{os.getpid()}.tmp"
            BUILDERS[name](tmp)
            shutil.move(tmp, path)
        made.append(path)
    return made


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    if sys.argv[1] == "--demo":
        target = os.path.join(sys.argv[2], DEMO_NAME)
        os.makedirs(sys.argv[2], exist_ok=True)
        if not os.path.exists(target):
            # Per process, as in build(): a second demo started meanwhile writes its own.
            tmp = f"{target}.{os.getpid()}.tmp"
            demo_image(tmp)
            shutil.move(tmp, target)
        print(target)
        sys.exit(0)
    for made_path in build(sys.argv[1], sys.argv[2:] or None):
        print(made_path)
