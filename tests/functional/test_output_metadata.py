"""ICC profile, XMP, EXIF and resolution in outputs, read back by Pillow and tifffile."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from tests import helpers

NAME = "tif-rgb-1024x768-256tile-deflate-icc-xmp-300dpi.tif"
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
MAKE, ARTIST = "Test Camera Works", "A. Photographer"
FORMATS = ("jpeg", "png", "webp", "tiff")


@pytest.fixture(scope="module")
def icc() -> bytes:
    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


@pytest.fixture(scope="module")
def folder(tmp_path_factory, icc) -> str:
    """A tiled RGB TIFF with an ICC profile, an XMP packet, Make and Artist, and 300 dpi."""
    folder = tmp_path_factory.mktemp("metadata")
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    tifffile.imwrite(
        folder / NAME,
        pixels,
        photometric="rgb",
        tile=(256, 256),
        compression="zlib",
        iccprofile=icc,
        resolution=(300, 300),
        resolutionunit="INCH",
        extratags=[(700, 1, len(XMP), XMP, True), (271, "s", 0, MAKE, True), (315, "s", 0, ARTIST, True)],
    )
    return str(folder) + "/"


def get(folder: str, query: str, **env: str) -> bytes:
    app = helpers.make_app(FILESYSTEM_PREFIX=folder, **env)
    result = helpers.call(app, query)
    assert result.status == 200, result.body[:300]
    return result.body


def opened(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


def profile(body: bytes) -> bytes | None:
    return opened(body).info.get("icc_profile") or None


def test_the_fixture_has_what_the_tests_expect(folder, icc):
    with tifffile.TiffFile(folder + NAME) as tif:
        page = tif.pages[0]
        assert bytes(page.iccprofile) == icc and page.tags[700].value == XMP


@pytest.mark.parametrize("fmt", FORMATS)
def test_views_and_tiles_carry_the_profile_unchanged(folder, icc, fmt):
    view = get(folder, f"FIF={NAME}&WID=300&CVT={fmt}")
    assert profile(view) == icc
    tile = get(folder, f"FIF={NAME}&{fmt[0].upper()}TL=0,1")
    assert profile(tile) == icc


def test_tiff_output_profile_read_by_tifffile(folder, icc):
    body = get(folder, f"FIF={NAME}&WID=300&CVT=tiff")
    with tifffile.TiffFile(io.BytesIO(body)) as tif:
        assert bytes(tif.pages[0].iccprofile) == icc


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_profile_after_a_colour_change(folder, fmt):
    ext = {"jpeg": "jpg", "tiff": "tif"}.get(fmt, fmt)
    assert profile(get(folder, f"IIIF={NAME}/full/200,/0/gray.{ext}")) is None
    assert profile(get(folder, f"IIIF={NAME}/full/200,/0/bitonal.{ext}")) is None
    assert profile(get(folder, f"IIIF={NAME}/0,0,256,256/256,/0/gray.{ext}")) is None  # a tile
    assert profile(get(folder, f"IIIF={NAME}/full/200,/0/default.{ext}")) is not None


@pytest.mark.parametrize("command", ["COL=grey", "COL=binary", "CMP=jet", "CTW=[0,0,1;0,1,0;1,0,0]", "SHD=30,40"])
def test_iip_colour_changing_commands_drop_the_profile(folder, icc, command):
    assert profile(get(folder, f"FIF={NAME}&WID=200&{command}&CVT=png")) is None
    assert profile(get(folder, f"FIF={NAME}&{command}&PTL=0,0")) is None


@pytest.mark.parametrize("command", ["GAM=2", "INV=1", "CNT=1.5", "CNV=sharpen", "ROT=90"])
def test_tone_commands_keep_the_profile(folder, icc, command):
    assert profile(get(folder, f"FIF={NAME}&WID=200&{command}&CVT=png")) == icc


def test_embed_icc_and_max_icc(folder, icc):
    query = f"FIF={NAME}&WID=300&CVT=jpeg"
    assert profile(get(folder, query, EMBED_ICC="0")) is None
    assert profile(get(folder, query, MAX_ICC="0")) is None
    assert profile(get(folder, query, MAX_ICC=str(len(icc) - 1))) is None
    assert profile(get(folder, query, MAX_ICC=str(len(icc)))) == icc
    assert profile(get(folder, query, MAX_ICC="-1")) == icc


def test_profile_settings_change_the_etag(folder):
    tags = set()
    for env in ({}, {"EMBED_ICC": "0"}, {"MAX_ICC": "100"}):
        app = helpers.make_app(FILESYSTEM_PREFIX=folder, **env)
        tags.add(helpers.call(app, f"FIF={NAME}&WID=300&CVT=jpeg").header("etag"))
    assert len(tags) == 3


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_views_carry_xmp_and_exif(folder, fmt):
    image = opened(get(folder, f"FIF={NAME}&WID=300&CVT={fmt}"))
    xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    assert xmp is not None and XMP in (xmp if isinstance(xmp, bytes) else xmp.encode())
    exif = image.getexif()
    assert exif.get(271) == MAKE and exif.get(315) == ARTIST


def test_tiff_views_carry_xmp(folder):
    body = get(folder, f"FIF={NAME}&WID=300&CVT=tiff")
    with tifffile.TiffFile(io.BytesIO(body)) as tif:
        assert tif.pages[0].tags[700].value == XMP


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_tiles_carry_neither_xmp_nor_exif(folder, fmt):
    image = opened(get(folder, f"FIF={NAME}&{fmt[0].upper()}TL=0,0"))
    assert not (image.info.get("xmp") or image.info.get("XML:com.adobe.xmp"))
    assert 271 not in image.getexif()


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_resolution_scales_with_the_output(folder, fmt):
    full = opened(get(folder, f"FIF={NAME}&WID=1024&CVT={fmt}")).info["dpi"]
    half = opened(get(folder, f"FIF={NAME}&WID=512&CVT={fmt}")).info["dpi"]
    assert full == pytest.approx((300, 300), abs=0.5)
    assert half == pytest.approx((150, 150), abs=0.5)
    # A region at full resolution keeps the source's resolution.
    region = opened(get(folder, f"FIF={NAME}&RGN=0.25,0.25,0.5,0.5&WID=512&CVT={fmt}")).info["dpi"]
    assert region == pytest.approx((300, 300), abs=0.5)


def test_tiff_resolution_scales_with_the_output(folder):
    body = get(folder, f"FIF={NAME}&WID=256&CVT=tiff")
    with tifffile.TiffFile(io.BytesIO(body)) as tif:
        page = tif.pages[0]
        assert page.tags["ResolutionUnit"].value == 2  # inch
        x = page.tags["XResolution"].value
        assert x[0] / x[1] == pytest.approx(75, abs=0.01)


def test_a_grey_output_of_a_grey_profile_source_keeps_it(tmp_path):
    grey = bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes())  # not GRAY
    path = tmp_path / "grey.tif"
    tifffile.imwrite(path, np.zeros((300, 300), np.uint8), tile=(256, 256), iccprofile=grey)
    # An RGB-less profile on a grey output would not describe it: dropped, never invalid.
    assert profile(get(str(tmp_path) + "/", "FIF=grey.tif&WID=100&CVT=png")) is None
