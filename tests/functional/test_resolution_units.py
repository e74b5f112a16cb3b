"""Resolutions in every unit a file can state them, as OBJ=DPI and IIIF's physical dimensions.

OBJ=DPI reports pixels per metre, printed with ``%f`` as iipsrv does; the IIIF
physical-dimensions service reports centimetres per pixel.  The expected values are computed
here from the definitions (an inch is exactly 0.0254 m, a micrometre 1e-6 m) and from the
resolution the file states, read by tifffile or Pillow; nothing comes from the server's code.
A 300-dpi image is 300 / 0.0254 = 11811.023622 pixels per metre: the rounded factor 39.37
gives 11811.000000, which these tests refuse.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct

import numpy as np
import pytest
import tifffile
from PIL import Image

from tests import helpers
from tests.functional import reference as ref
from tests.functional.reference import DEFLATE, JPEG_TABLES, SAMPLE_RANGE

METRES_PER_INCH = 0.0254  # exactly, by definition
JPEG = "jpeg-rgb-3000x2000-q90-exif.jpg"
SVS = "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs"
REAL_SVS = "cmu_small_region.svs"


def dpi_line(app, name: str) -> str:
    result = helpers.call(app, f"FIF={name}&OBJ=DPI")
    assert result.status == 200, result.body
    lines = ref.lines(result)
    assert len(lines) == 1, lines
    return lines[0]


def physical_scale(app, name: str, version: int) -> float:
    accept = f'application/ld+json;profile="http://iiif.io/api/image/{version}/context.json"'
    result = helpers.call(app, f"IIIF=/{name}/info.json", headers={"Accept": accept})
    assert result.status == 200, result.body
    services = json.loads(result.body)["service"]
    services = services if isinstance(services, list) else [services]
    (service,) = [s for s in services if s["profile"] == "http://iiif.io/api/annex/services/physdim"]
    assert service["physicalUnits"] == "cm"
    return float(service["physicalScale"])


def tiff_resolution(path: str) -> tuple[float, float, int]:
    """XResolution, YResolution and ResolutionUnit as the file states them."""
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        (xn, xd), (yn, yd) = tags.valueof("XResolution"), tags.valueof("YResolution")
        return xn / xd, yn / yd, int(tags.valueof("ResolutionUnit"))


def per_metre(value: float, unit: int) -> float:
    """Pixels per metre from a TIFF resolution: unit 2 is the inch, 3 the centimetre."""
    return value / METRES_PER_INCH if unit == 2 else value * 100


# -- TIFF -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [JPEG_TABLES, DEFLATE])
def test_300_dpi_tiff_is_11811_023622_pixels_per_metre(app, name):
    x, y, unit = tiff_resolution(helpers.fixture(name))
    assert (x, y, unit) == (300, 300, 2)
    assert dpi_line(app, name) == f"DPI:{300 / METRES_PER_INCH:f} {300 / METRES_PER_INCH:f}"
    assert dpi_line(app, name) == "DPI:11811.023622 11811.023622"  # worked by hand: 300 / 0.0254


def test_centimetre_tiff(app):
    x, y, unit = tiff_resolution(helpers.fixture(SAMPLE_RANGE))
    assert unit == 3
    assert dpi_line(app, SAMPLE_RANGE) == f"DPI:{x * 100:f} {y * 100:f}"
    assert physical_scale(app, SAMPLE_RANGE, 3) == pytest.approx(1 / x, rel=1e-12)


# Resolutions whose conversions a rounded factor gets visibly wrong at %f's six decimals.
GENERATED_TIFFS = {
    "inch-2540": ((2540, 1), (2540, 1), "INCH"),  # exactly 100000 pixels per metre
    "inch-72": ((720000, 10000), (72, 1), "INCH"),  # the common default, stored two ways
    "inch-odd": ((1200, 7), (600, 7), "INCH"),  # a resolution that is no whole number
    "centimetre-118.11": ((11811, 100), (11811, 100), "CENTIMETER"),
}


@pytest.fixture(scope="module")
def generated_tiffs(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("resolutions")
    pixels = np.zeros((64, 96, 3), np.uint8)
    for name, (x, y, unit) in GENERATED_TIFFS.items():
        tifffile.imwrite(directory / f"{name}.tif", pixels, tile=(16, 16), resolution=(x, y), resolutionunit=unit)
    return str(directory)


@pytest.mark.parametrize("name", list(GENERATED_TIFFS))
def test_tiff_resolutions_in_both_units(generated_tiffs, name):
    app = helpers.make_app(FILESYSTEM_PREFIX=generated_tiffs + "/")
    x, y, unit = tiff_resolution(os.path.join(generated_tiffs, f"{name}.tif"))
    expected_x, expected_y = per_metre(x, unit), per_metre(y, unit)
    assert dpi_line(app, f"{name}.tif") == f"DPI:{expected_x:f} {expected_y:f}"
    for version in (2, 3):
        # Centimetres per pixel, from the horizontal resolution.
        assert physical_scale(app, f"{name}.tif", version) == pytest.approx(100 / expected_x, rel=1e-12)


def test_2540_dpi_is_exactly_100000_pixels_per_metre(generated_tiffs):
    app = helpers.make_app(FILESYSTEM_PREFIX=generated_tiffs + "/")
    assert dpi_line(app, "inch-2540.tif") == "DPI:100000.000000 100000.000000"
    assert physical_scale(app, "inch-2540.tif", 3) == pytest.approx(0.001, rel=1e-12)


@pytest.mark.parametrize("name", [JPEG_TABLES, DEFLATE])
def test_physical_scale_of_300_dpi(app, name):
    for version in (2, 3):
        assert physical_scale(app, name, version) == pytest.approx(2.54 / 300, rel=1e-12)


# -- JPEG -------------------------------------------------------------------------------------------


def test_300_dpi_jpeg(app):
    with Image.open(helpers.fixture(JPEG)) as image:
        assert image.info["dpi"] == (300, 300)
    assert dpi_line(app, JPEG) == "DPI:11811.023622 11811.023622"
    assert physical_scale(app, JPEG, 3) == pytest.approx(2.54 / 300, rel=1e-12)


def _jfif_with_density(units: int, x: int, y: int) -> bytes:
    """A small baseline JPEG whose JFIF header states ``x`` by ``y`` dots per ``units``
    (1 inch, 2 centimetre), written into the APP0 segment by hand."""
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 100, 50)).save(out, "JPEG", quality=90, dpi=(72, 72))
    data = out.getvalue()
    assert data[2:4] == b"\xff\xe0" and data[6:11] == b"JFIF\x00"  # SOI, then APP0 "JFIF"
    # APP0: marker, length, "JFIF\0", version (2 bytes), units, Xdensity, Ydensity, ...
    return data[:13] + struct.pack(">BHH", units, x, y) + data[18:]


@pytest.mark.parametrize(("units", "x", "y", "expected"), [(2, 100, 50, (10000.0, 5000.0)), (1, 254, 127, None)])
def test_jpeg_density_units(tmp_path, units, x, y, expected):
    (tmp_path / "density.jpg").write_bytes(_jfif_with_density(units, x, y))
    if expected is None:  # dots per inch
        expected = (x / METRES_PER_INCH, y / METRES_PER_INCH)
    app = helpers.make_app(FILESYSTEM_PREFIX=str(tmp_path) + "/")
    line = dpi_line(app, "density.jpg")
    assert line == f"DPI:{expected[0]:f} {expected[1]:f}"
    assert physical_scale(app, "density.jpg", 3) == pytest.approx(100 / expected[0], rel=1e-12)


# -- Aperio SVS: MPP, micrometres per pixel ----------------------------------------------------------


def _mpp(path: str) -> float:
    with tifffile.TiffFile(path) as tif:
        description = tif.pages[0].description
    match = re.search(r"\|\s*MPP\s*=\s*([0-9.]+)", description)
    assert match, description
    return float(match.group(1))


@pytest.mark.parametrize("where", ["fixtures", "downloads"])
def test_svs_mpp(request, where):
    directory = request.getfixturevalue(where)
    name = SVS if where == "fixtures" else REAL_SVS
    mpp = _mpp(os.path.join(directory, name))
    app = helpers.make_app(FILESYSTEM_PREFIX=directory + "/")
    per_metre_value = 1 / (mpp * 1e-6)
    assert dpi_line(app, name) == f"DPI:{per_metre_value:f} {per_metre_value:f}"
    for version in (2, 3):
        assert physical_scale(app, name, version) == pytest.approx(mpp * 1e-4, rel=1e-12)  # µm -> cm
