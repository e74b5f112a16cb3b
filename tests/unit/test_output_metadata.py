"""What outputs carry besides pixels (encoders/metadata.py), and the encoders writing it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from iipsrv_py.encoders import ENCODERS
from iipsrv_py.encoders.metadata import NONE, OutputMetadata, output_metadata
from iipsrv_py.model import METRES_PER_INCH_FACTOR, ImageInfo, Level, Ops, Quality
from iipsrv_py.planning import GridTile, Region, Size, StoredTile, ViewRequest, plan
from iipsrv_py.settings import Settings

ICC = bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
INFO = ImageInfo(
    width=1000,
    height=800,
    levels=(Level(1000, 800, 256, 256), Level(500, 400, 256, 256, 2.0, 2.0)),
    dpi=(200 * METRES_PER_INCH_FACTOR, 100 * METRES_PER_INCH_FACTOR),
    metadata=(("creator", "Someone"), ("make", "Maker")),
)


PLAIN, DEFAULTS = Ops(), Settings()


def decide(ops: Ops = PLAIN, view: bool = True, settings: Settings = DEFAULTS, **kw) -> OutputMetadata:
    args = {"out_size": (500, 400), "region": (0.0, 0.0, 1000.0, 800.0), **kw}
    return output_metadata(INFO, ICC, b"<xmp/>", None, ops=ops, view=view, settings=settings, **args)


def test_changes_colours_for_gray_and_bitonal_only():
    assert Ops(colour="gray").changes_colours and Ops(colour="bitonal").changes_colours
    assert not Ops().changes_colours and not Ops(rotation=90, mirror=True, tone="negative").changes_colours


def test_profile_rules():
    assert decide().icc == ICC
    assert decide(Ops(colour="gray")).icc is None
    assert decide(settings=Settings(embed_icc=False)).icc is None
    assert decide(settings=Settings(max_icc=0)).icc is None
    assert decide(settings=Settings(max_icc=len(ICC) - 1)).icc is None
    assert decide(settings=Settings(max_icc=len(ICC))).icc == ICC
    assert decide(settings=Settings(max_icc=-1)).icc == ICC


def test_xmp_and_exif_only_in_views():
    view = decide()
    assert view.xmp == b"<xmp/>" and view.exif is not None
    exif = Image.Exif()
    exif.load(b"Exif\0\0" + view.exif)
    assert exif[315] == "Someone" and exif[271] == "Maker"
    tile = decide(view=False)
    assert tile.xmp is None and tile.exif is None and tile.icc == ICC


def test_resolution_scaled_and_swapped_by_a_quarter_turn():
    assert decide().dpi == pytest.approx((100, 50))
    assert decide(out_size=(250, 200), region=(0.0, 0.0, 250.0, 200.0)).dpi == pytest.approx((200, 100))
    assert decide(Ops(rotation=90)).dpi == pytest.approx((50, 100))


def test_the_plan_says_view_or_tile():
    settings = Settings()
    assert plan(ViewRequest(size=Size("width", 300)), INFO, settings).view
    assert not plan(ViewRequest(area=StoredTile(1, 0)), INFO, settings).view
    grid = GridTile((1000, 800), (1.0, 1.0), (300, 300), 0, 0)
    assert not plan(ViewRequest(area=grid), INFO, settings).view
    # A IIIF tile request lands on a stored tile: a tile, not a view.
    tile = ViewRequest(area=Region("pixels", 0, 0, 256, 256), size=Size("width", 256))
    assert not plan(tile, INFO, settings).view
    a = plan(ViewRequest(area=Region("pixels", 0, 0, 300, 300), size=Size("width", 300)), INFO, settings)
    assert a.view and "/V" in a.canonical


def test_settings_fingerprint_has_the_watermark_and_profile_settings():
    base = Settings().fingerprint
    for changed in (
        Settings(watermark="a.tif"),
        Settings(watermark_probability=0.5),
        Settings(watermark_opacity=0.5),
        Settings(max_icc=10),
        Settings(embed_icc=False),
    ):
        assert changed.fingerprint != base


META = OutputMetadata(ICC, b"<x:xmpmeta/>", NONE.exif, (72.0, 144.0))


@pytest.mark.parametrize("bands", [3, 4])
@pytest.mark.parametrize("name", ["jpeg", "png", "webp", "tiff"])
def test_encoders_write_what_readers_find(name, bands):
    pixels = np.random.default_rng(1).integers(0, 256, (33, 47, bands), dtype=np.uint8)
    body = ENCODERS[name].encode(pixels, Quality(), Settings(), META)
    with Image.open(io.BytesIO(body)) as image:
        image.load()
        assert image.info.get("icc_profile") == ICC
        assert image.size == (47, 33)
        if name in ("jpeg", "png"):
            assert image.info["dpi"] == pytest.approx((72, 144), abs=0.5)
    plain = ENCODERS[name].encode(pixels, Quality(), Settings())
    with Image.open(io.BytesIO(plain)) as image:
        assert not image.info.get("icc_profile")


@pytest.mark.parametrize("lossless", [True, False])
def test_webp_extended_layout_keeps_alpha_and_pixels(lossless):
    pixels = np.random.default_rng(2).integers(0, 256, (20, 30, 4), dtype=np.uint8)
    settings = Settings(webp_quality=-1 if lossless else 90)
    body = ENCODERS["webp"].encode(pixels, Quality(), settings, OutputMetadata(ICC, b"<x/>", None, None))
    with Image.open(io.BytesIO(body)) as image:
        assert image.mode == "RGBA" and image.info.get("xmp") in (b"<x/>", "<x/>")
        if lossless:
            assert np.array_equal(np.asarray(image), pixels)


def test_a_large_profile_is_split_over_jpeg_segments():
    big = ICC + bytes(150_000)  # Pillow joins the APP2 chunks back; validity is not checked
    pixels = np.zeros((8, 8, 3), np.uint8)
    body = ENCODERS["jpeg"].encode(pixels, Quality(), Settings(), OutputMetadata(big, None, None, None))
    assert body.count(b"ICC_PROFILE\0") == 3
    with Image.open(io.BytesIO(body)) as image:
        assert image.info["icc_profile"] == big


def test_a_profile_of_another_colour_space_is_dropped():
    grey = np.zeros((8, 8, 1), np.uint8)
    body = ENCODERS["png"].encode(grey, Quality(), Settings(), OutputMetadata(ICC, None, None, None))
    with Image.open(io.BytesIO(body)) as image:
        assert not image.info.get("icc_profile")
