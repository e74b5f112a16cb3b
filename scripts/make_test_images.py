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


DEMO_NAME = "demo-rgb-8192x6144-jpeg.tif"


def demo_image(path: str) -> None:
    """The demo picture: the test scene with a labelled 1024-px grid, so that every region,
    tile and zoom level can be checked by eye."""
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
    image = (grid > 0).ifthenelse([255, 255, 255], image)
    image.tiffsave(path, tile=True, tile_width=256, tile_height=256, pyramid=True, compression="jpeg", Q=85)


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
            demo_image(target + ".tmp")
            shutil.move(target + ".tmp", target)
        print(target)
        sys.exit(0)
    for made_path in build(sys.argv[1], sys.argv[2:] or None):
        print(made_path)
