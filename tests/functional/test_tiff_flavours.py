"""The TIFF variety of SPEC section 11 through the WSGI app: sample formats (1-bit, palette,
MinIsWhite, 16/32-bit integers, 32-bit float), alpha, planar-separate samples, CIELAB, every
codec tifffile decodes, stripped images (virtual tiles, bounded reads), SubIFD pyramids
(OME-TIFF, libvips) and multi-page stacks.

Expected pixels are tifffile's own decode of the fixture, turned into 8 bits by the rules
written out here (SPEC section 4: full type range, SMin/SMaxSampleValue, floats over [0, 1]);
CIELAB by libvips; reductions by Pillow (tests.functional.reference).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np
import pytest
import pyvips
import tifffile

from iipsrv_py.cache.store import WorkerCache
from iipsrv_py.sources.registry import open_source
from iipsrv_py.storage.local import LocalStorage
from tests import helpers, recording
from tests.functional import reference as ref

URI_MAP = "iiif=>IIIF deepzoom=>DeepZoom"
RESAMPLE_TOLERANCE = 1.5  # a server downscale (PNG) vs Pillow's Lanczos reference, mean per sample

BILEVEL = "tif-bilevel-600x400-1lvl-256tile-packbits-miniswhite.tif"
PALETTE = "tif-palette-600x400-1lvl-256tile-lzw.tif"
MINISWHITE = "tif-grey-600x400-1lvl-256tile-deflate-miniswhite.tif"
GREY16 = "tif-grey16-600x400-2lvl-256tile-deflate.tif"
RGB16_RANGE = "tif-rgb16-600x400-1lvl-256tile-zstd-sminmax.tif"
INT16 = "tif-grey-int16-600x400-1lvl-256tile-none.tif"
UINT32 = "tif-grey-uint32-600x400-1lvl-256tile-deflate.tif"
INT32 = "tif-grey-int32-600x400-1lvl-256tile-lzw.tif"
FLOAT32 = "tif-grey-float32-600x400-1lvl-256tile-deflate-predictor.tif"
RGBA = "tif-rgba-600x400-1lvl-256tile-deflate-unassalpha.tif"
GREY_ALPHA = "tif-greya-600x400-1lvl-256tile-lzw-assocalpha.tif"
PLANAR = "tif-rgb-600x400-1lvl-256tile-deflate-planar.tif"
PLANAR_RGBA16 = "tif-rgba16-600x400-1lvl-256tile-zstd-planar.tif"
CIELAB = "tif-cielab-600x400-1lvl-256tile-none.tif"
CODECS = [
    f"tif-rgb-600x400-1lvl-256tile-{codec}.tif"
    for codec in ("jpeg2000", "webp", "png", "zstd", "lzw", "packbits", "none")
]
STRIPS = "tif-rgb-600x400-strip16-deflate.tif"
ONE_STRIP = "tif-rgb-600x400-strip400-none.tif"
PLANAR_STRIPS = "tif-rgb-600x400-strip32-deflate-planar.tif"
PLANAR_RAW_STRIPS = "tif-rgb-600x400-strip64-none-planar.tif"
BIG_ENDIAN_STRIPS = "tif-grey16-600x400-strip100-none-bigendian.tif"
STRIPPED_PYRAMID = "tif-rgb-1200x800-3lvl-strip64-lzw.tif"
STRIPPED_EXTRAS = "tif-rgb-1200x800-2lvl-256tile-jpeg-stripped-extras.tif"
OME = "ome-rgb-1200x800-3lvl-256tile-subifd-deflate.ome.tif"
VIPS_SUBIFD = "tif-rgb-1200x800-4lvl-256tile-deflate-vips-subifd.tif"
STACK = "tif-stack-3page-600x400-2lvl-256tile-deflate-subifd-pagenames.tif"
STACK_CHAIN = "tif-stack-2page-600x400-2lvl-256tile-lzw-chain.tif"
BROKEN_STRIP = "broken-strip-600x400-strip16-deflate.tif"


@pytest.fixture(scope="module")
def app():
    return helpers.make_app(URI_MAP=URI_MAP, IIIF_DELIMITER=":")


# -- independent references ------------------------------------------------------------------


def stored(name: str, page: int = 0, subifd: int | None = None) -> np.ndarray:
    """A page (or one of its SubIFDs) as tifffile decodes it, samples last."""
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        target = tif.pages[page]
        if subifd is not None:
            target = target.pages[subifd]
        array = target.asarray()
        if target.planarconfig == 2:
            array = np.moveaxis(array, 0, -1)
    return array if array.ndim == 3 else array[:, :, None]


def tag(name: str, tag_name: str) -> tuple[float, ...]:
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        return tuple(np.atleast_1d(tif.pages[0].tags[tag_name].value).astype(float))


def linear(values: np.ndarray, low, high) -> np.ndarray:
    """SPEC: (v - low) * 255 / (high - low), rounded, clipped."""
    scaled = (
        (values.astype(np.float64) - np.asarray(low, float))
        * 255.0
        / (np.asarray(high, float) - np.asarray(low, float))
    )
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def palette_rgb(name: str) -> np.ndarray:
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        colormap = tif.pages[0].colormap
    table = np.round(colormap.astype(np.float64) * 255 / 65535).astype(np.uint8)  # 3 x 256
    return np.moveaxis(table[:, stored(name)[:, :, 0]], 0, -1)


def vips_lab_to_srgb(name: str) -> np.ndarray:
    raw = stored(name)
    lab = np.dstack(
        [
            raw[:, :, 0] * (100 / 255),
            raw[:, :, 1].view(np.int8).astype(np.float64),
            raw[:, :, 2].view(np.int8).astype(np.float64),
        ]
    ).astype(np.float32)
    out = pyvips.Image.new_from_array(lab).copy(interpretation="lab").colourspace("srgb").cast("uchar")
    return np.ndarray(buffer=out.write_to_memory(), dtype=np.uint8, shape=(out.height, out.width, 3))


EXPECTED: dict[str, Callable[[], np.ndarray]] = {
    # MinIsWhite: 1 (True) is black.
    BILEVEL: lambda: np.where(stored(BILEVEL), 0, 255).astype(np.uint8),
    PALETTE: lambda: palette_rgb(PALETTE),
    MINISWHITE: lambda: 255 - stored(MINISWHITE),
    GREY16: lambda: linear(stored(GREY16), 0, 65535),
    RGB16_RANGE: lambda: linear(
        stored(RGB16_RANGE), tag(RGB16_RANGE, "SMinSampleValue"), tag(RGB16_RANGE, "SMaxSampleValue")
    ),
    INT16: lambda: linear(stored(INT16), -32768, 32767),
    UINT32: lambda: linear(stored(UINT32), 0, 2**32 - 1),
    INT32: lambda: linear(stored(INT32), -(2**31), 2**31 - 1),
    FLOAT32: lambda: linear(stored(FLOAT32), 0.0, 1.0),
    RGBA: lambda: stored(RGBA),
    GREY_ALPHA: lambda: stored(GREY_ALPHA),
    PLANAR: lambda: stored(PLANAR),
    PLANAR_RGBA16: lambda: linear(stored(PLANAR_RGBA16), 0, 65535),
    STRIPS: lambda: stored(STRIPS),
    ONE_STRIP: lambda: stored(ONE_STRIP),
    PLANAR_STRIPS: lambda: stored(PLANAR_STRIPS),
    PLANAR_RAW_STRIPS: lambda: stored(PLANAR_RAW_STRIPS),
    BIG_ENDIAN_STRIPS: lambda: linear(stored(BIG_ENDIAN_STRIPS), 0, 65535),
    **{name: (lambda name=name: stored(name)) for name in CODECS},  # type: ignore[misc]
}


def png(app, query: str, path: str = "/fcgi-bin/iipsrv.fcgi") -> np.ndarray:
    result = helpers.call(app, query, path=path)
    assert result.status == 200, (query, path, result.status, result.body[:200])
    assert result.header("Content-Type") == "image/png"
    return ref.decode(result.body)


def iiif_png(app, path: str) -> np.ndarray:
    return png(app, "", path="/iiif/" + path)


def obj(app, name: str, objects: str) -> list[str]:
    result = helpers.call(app, f"FIF={name}&OBJ={objects}")
    assert result.status == 200
    return ref.lines(result)


# -- sample formats, alpha, planar, codecs, strips -------------------------------------------


@pytest.mark.parametrize("name", list(EXPECTED))
def test_whole_image_is_the_converted_stored_samples(app, name):
    expected = EXPECTED[name]()
    assert np.array_equal(png(app, f"FIF={name}&CVT=png"), expected)


@pytest.mark.parametrize("name", [GREY16, PLANAR_RGBA16, STRIPS, ONE_STRIP, PLANAR_STRIPS, BILEVEL])
def test_edge_tiles_are_cropped_and_match(app, name):
    expected = EXPECTED[name]()
    full_size = len(ref.levels(name)) - 1  # IIP resolution of the full size
    # 600 x 400 in 256-px tiles (stored or virtual): 3 x 2, the last row and column cropped.
    boxes = {0: (0, 0, 256, 256), 1: (256, 0, 256, 256), 2: (512, 0, 88, 256), 5: (512, 256, 88, 144)}
    for tile, (x, y, w, h) in boxes.items():
        got = png(app, f"FIF={name}&PTL={full_size},{tile}")
        assert np.array_equal(got, expected[y : y + h, x : x + w]), tile


def test_cielab_is_converted_to_srgb(app):
    got = png(app, f"FIF={CIELAB}&CVT=png")
    difference = np.abs(got.astype(int) - vips_lab_to_srgb(CIELAB))
    assert difference.mean() <= 0.5 and difference.max() <= 3
    assert obj(app, CIELAB, "colorspace") == ["Colorspace,0-0,0:1 0 4 3 0 1 2"]


@pytest.mark.parametrize(
    ("name", "bits", "minmax"),
    [
        (GREY16, 16, "Min-Max-sample-values: 0  65535"),
        (RGB16_RANGE, 16, "Min-Max-sample-values: 1000  60000  2000  50000  3000  40000"),
        (INT16, 16, "Min-Max-sample-values: -32768  32767"),
        (FLOAT32, 32, "Min-Max-sample-values: 0  1"),
        (BILEVEL, 1, "Min-Max-sample-values: 0  1"),
    ],
)
def test_objects_report_the_source_depth_and_range(app, name, bits, minmax):
    assert obj(app, name, "bits-per-channel,min-max-sample-values".replace(",", "&OBJ=")) == [
        f"Bits-per-channel:{bits}",
        minmax,
    ]


def test_alpha_is_kept_through_png_and_dropped_for_jpeg(app):
    assert png(app, f"FIF={RGBA}&PTL=0,0").shape[2] == 4
    result = helpers.call(app, f"FIF={RGBA}&JTL=0,0")
    assert result.status == 200
    decoded = ref.decode(result.body)
    assert decoded.shape == (256, 256, 3)
    assert ref.mean_abs_diff(decoded, stored(RGBA)[:256, :256, :3]) < 6


def test_a_lower_level_of_16bit_samples(app):
    expected = linear(stored(GREY16, page=1), 0, 65535)
    assert np.array_equal(png(app, f"FIF={GREY16}&PTL=0,0"), expected[:, :256])
    assert np.array_equal(png(app, f"FIF={GREY16}&PTL=0,1"), expected[:, 256:])


# -- stripped images ---------------------------------------------------------------------------


def recording_blob(name: str) -> recording.RecordingBlob:
    """A local blob of a fixture that records every read."""
    storage = LocalStorage(os.path.dirname(helpers.fixture(name)) + "/")
    return recording.RecordingBlob(storage.open(*storage.resolve(name)))


def strip_offsets(name: str) -> tuple[list[int], list[int]]:
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        return [int(v) for v in tif.pages[0].dataoffsets], [int(v) for v in tif.pages[0].databytecounts]


def test_a_virtual_tile_decodes_only_its_strips_and_a_strip_row_once():
    blob = recording_blob(STRIPS)
    source = open_source(blob, WorkerCache(1 << 24))  # type: ignore[arg-type]  # decoded strips kept there
    offsets, _ = strip_offsets(STRIPS)
    strip_of = {offset: index for index, offset in enumerate(offsets)}
    assert (source.info.levels[0].tile_width, source.info.levels[0].tile_height) == (256, 256)

    blob.reads.clear()
    first = source.read_tile(0, 0, 0)
    assert sorted(strip_of[o] for o, _ in blob.reads) == list(range(16))  # rows 0-255: strips 0-15
    blob.reads.clear()
    second = source.read_tile(0, 1, 0)
    assert blob.reads == []  # the same strips, kept from the first tile
    source.read_tile(0, 0, 1)
    assert sorted(strip_of[o] for o, _ in blob.reads) == list(range(16, 25))  # rows 256-399
    expected = stored(STRIPS)
    assert np.array_equal(first, expected[:256, :256]) and np.array_equal(second, expected[:256, 256:512])


def test_an_uncompressed_strip_is_read_by_rows_not_whole():
    blob = recording_blob(ONE_STRIP)
    source = open_source(blob)  # type: ignore[arg-type]
    (offset,), (count,) = strip_offsets(ONE_STRIP)
    blob.reads.clear()
    tile = source.read_tile(0, 1, 1)  # x 256-511, y 256-399
    row_bytes = 600 * 3
    assert all(offset + 256 * row_bytes <= o and o + n <= offset + count for o, n in blob.reads)
    assert sum(n for _, n in blob.reads) < 144 * row_bytes
    assert np.array_equal(tile, stored(ONE_STRIP)[256:400, 256:512])


def test_stripped_reduced_pages_are_levels(app):
    assert obj(app, STRIPPED_PYRAMID, "Resolution-number") == ["Resolution-number:3"]
    for page, res in ((1, 1), (2, 0)):
        expected = stored(STRIPPED_PYRAMID, page=page)
        assert np.array_equal(png(app, f"FIF={STRIPPED_PYRAMID}&PTL={res},0"), expected[:256, :256])


def test_stripped_thumbnail_and_label_of_a_tiled_image_are_not_levels(app):
    assert obj(app, STRIPPED_EXTRAS, "Resolution-number") == ["Resolution-number:2"]
    assert obj(app, STRIPPED_EXTRAS, "stack") == []
    level1 = stored(STRIPPED_EXTRAS, page=2)  # page 1 is the thumbnail
    assert np.array_equal(png(app, f"FIF={STRIPPED_EXTRAS}&PTL=0,1"), level1[:256, 256:512])


def test_a_single_level_stripped_image_through_iiif_and_deepzoom(app):
    full = stored(STRIPS)
    got = iiif_png(app, f"{STRIPS}/full/150,/0/default.png")
    assert ref.mean_abs_diff(got, ref.downscale(full, 150, 100)) <= RESAMPLE_TOLERANCE
    # DeepZoom level 8 of 600 x 400 is 150 x 100, one tile.
    result = helpers.call(app, path=f"/deepzoom/{STRIPS}_files/8/0_0.png")
    assert result.status == 200
    assert ref.mean_abs_diff(ref.decode(result.body), ref.downscale(full, 150, 100)) <= RESAMPLE_TOLERANCE
    region = iiif_png(app, f"{STRIPS}/250,100,300,200/max/0/default.png")
    assert np.array_equal(region, full[100:300, 250:550])


def test_a_broken_strip_fails_its_tiles_only(app):
    # Strip 3 (rows 48-63) is garbage: the first row of tiles needs it, the second does not.
    assert helpers.call(app, f"FIF={BROKEN_STRIP}&PTL=0,0").status == 500
    expected = stored(STRIPS)  # the same picture, intact
    assert np.array_equal(png(app, f"FIF={BROKEN_STRIP}&PTL=0,4"), expected[256:400, 256:512])


# -- SubIFD pyramids ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "count"), [(OME, 3), (VIPS_SUBIFD, 4)])
def test_subifd_pyramids(app, name, count):
    assert obj(app, name, "Resolution-number") == [f"Resolution-number:{count}"]
    for level in range(count):
        expected = stored(name) if level == 0 else stored(name, subifd=level - 1)
        res = count - 1 - level
        assert np.array_equal(png(app, f"FIF={name}&PTL={res},0"), expected[:256, :256]), level


# -- stacks ------------------------------------------------------------------------------------


def test_stack_lists_its_page_names(app):
    result = helpers.call(app, f"FIF={STACK}&OBJ=stack")
    assert result.header("Content-Type") == "application/json"
    pages = json.loads(result.body)
    assert pages == [
        {"id": 0, "name": "Infrared", "scale": 1},
        {"id": 1, "name": "Visible", "scale": 1},
        {"id": 2, "name": "Ultraviolet", "scale": 1},
    ]
    names = json.loads(helpers.call(app, f"FIF={STACK_CHAIN}&OBJ=stack").body)
    assert [page["name"] for page in names] == ["page 0", "page 1"]


def test_sds_selects_a_page(app):
    for page in (0, 1, 2, 1):
        got = png(app, f"FIF={STACK}&SDS={page},90&CVT=png")
        assert np.array_equal(got, stored(STACK, page=page)), page
    # A page's own reduced level (its SubIFD).
    got = png(app, f"FIF={STACK}&SDS=2,90&PTL=0,0")
    assert np.array_equal(got, stored(STACK, page=2, subifd=0)[:256, :256])


def test_stack_pages_with_levels_in_the_ifd_chain(app):
    # Chain: page 0, its level, page 1, its level.
    assert obj(app, STACK_CHAIN, "Resolution-number") == ["Resolution-number:2"]
    assert np.array_equal(png(app, f"FIF={STACK_CHAIN}&SDS=1,90&PTL=0,0"), stored(STACK_CHAIN, page=3)[:256, :256])
    assert np.array_equal(png(app, f"FIF={STACK_CHAIN}&PTL=0,0"), stored(STACK_CHAIN, page=1)[:256, :256])


def test_iiif_delimiter_selects_a_page(app):
    for page in (2, 0, 1):
        got = iiif_png(app, f"{STACK}:{page}/full/max/0/default.png")
        assert np.array_equal(got, stored(STACK, page=page)), page
    assert helpers.call(app, path=f"/iiif/{STACK}:3/info.json").status == 404


def test_xmp_packet_and_text_tags_are_metadata(tmp_path):
    """XMLPacket (tag 700) is the ``xmp`` object, sent as XML and left out of OBJ=metadata;
    the text tags come under iipsrv's keys."""
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    with tifffile.TiffWriter(tmp_path / "xmp.tif") as tif:
        tif.write(
            np.zeros((64, 64), np.uint8),
            tile=(32, 32),
            metadata=None,
            software=False,
            extratags=[(700, "B", len(xmp), xmp, True), (315, "s", 0, "A. Artist", True), (272, "s", 0, "M1", True)],
        )
    app = helpers.make_app(FILESYSTEM_PREFIX=str(tmp_path) + "/")
    result = helpers.call(app, "FIF=xmp.tif&OBJ=xmp")
    assert result.status == 200 and result.header("Content-Type") == "application/xml"
    assert xmp.decode() in result.text
    assert json.loads(ref.lines(helpers.call(app, "FIF=xmp.tif&OBJ=metadata"))[0]) == {
        "creator": "A. Artist",
        "model": "M1",
    }
