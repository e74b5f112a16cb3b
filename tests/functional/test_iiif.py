"""IIIF Image API 2.1 and 3.0 through the WSGI application (SPEC section 8), with URI_MAP
routing /iiif/... to the protocol (SPEC section 2) and the ``?IIIF=`` query form.

Expected values are computed here, independently of the server: levels, tiles and pixels from
tifffile reading the fixtures; reference crops, rotations and grey conversions with numpy on
those pixels; reference downscales with Pillow's Lanczos filter; sizes from the IIIF
specifications' formulas and their own worked examples (a 300 x 200 image).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tifffile

from iipsrv_py.settings import SettingsError, from_environ
from tests import helpers
from tests.functional import reference as ref
from tests.functional.reference import (
    BIGTIFF,
    DEFLATE,
    GREY,
    JPEG_SUBIFD,
    JPEG_TABLES,
    NON_SQUARE,
    ODD_LEVELS,
    SAMPLE_RANGE,
)

URI_MAP = "iiif=>IIIF deepzoom=>DeepZoom zoomify=>Zoomify"
CONTEXT = {2: "http://iiif.io/api/image/2/context.json", 3: "http://iiif.io/api/image/3/context.json"}
LD_JSON = 'application/ld+json;profile="{}"'
RESAMPLE_TOLERANCE = 1.0  # lossless server downscale vs Pillow's Lanczos reference (as test_iip_images)
JPEG_TOLERANCE = 6.0  # a JPEG (quality 75) of the test scene vs its source pixels
# Features of IIIF 3.0's extraFeatures table that level 2 does not already include
# (compliance document, level 2: baseUriRedirect, cors, jsonldMediaType, regionByPct,
# regionByPx, regionSquare, rotationBy90s, sizeByConfinedWh, sizeByH, sizeByPct, sizeByW,
# sizeByWh) and that this server offers: each is exercised by a test below.
V3_EXTRA_FEATURES = {"canonicalLinkHeader", "mirroring", "profileLinkHeader", "rotationArbitrary"}
MIME = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "tif": "image/tiff", "avif": "image/avif"}
PIL_FORMAT = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "tif": "TIFF", "avif": "AVIF"}


@pytest.fixture(scope="module")
def app() -> Any:
    return helpers.make_app(URI_MAP=URI_MAP)


@pytest.fixture(scope="module")
def app2() -> Any:
    return helpers.make_app(URI_MAP=URI_MAP, IIIF_VERSION="2")


def iiif(app: Any, path: str, headers: dict[str, str] | None = None, query: str = "") -> helpers.Result:
    return helpers.call(app, query, path="/iiif/" + path, headers=headers)


def info(app: Any, name: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    result = iiif(app, f"{name}/info.json", headers)
    assert result.status == 200, (name, result.status, result.body[:200])
    return json.loads(result.body)


def pixels_of(app: Any, path: str, fmt: str | None = None) -> np.ndarray:
    result = iiif(app, path)
    assert result.status == 200, (path, result.status, result.body[:200])
    fmt = fmt or path.rsplit(".", 1)[1]
    assert result.header("Content-Type") == MIME[fmt]
    assert ref.image_format(result.body) == PIL_FORMAT[fmt]
    return ref.decode(result.body)


def with_environ(app: Any, **extra: str) -> Callable[..., Any]:
    """The application behind a front end that adds CGI variables (HTTPS=on, ...)."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return app({**environ, **extra}, start_response)

    return wrapped


# -- info.json: what the file stores -------------------------------------------------------------


def expected_sizes(name: str, limit: int = 0) -> list[dict[str, int]]:
    """Every stored level but the full one, smallest first (within MAX_CVT when it limits)."""
    levels = ref.levels(name)
    return [
        {"width": lvl.width, "height": lvl.height}
        for lvl in reversed(levels[1:])
        if not limit or max(lvl.width, lvl.height) <= limit
    ]


def expected_tiles(name: str) -> list[dict[str, Any]]:
    """One entry per tile shape; scale factors = each level's downsample, rounded."""
    levels = ref.levels(name)
    full = levels[0]
    shapes: dict[tuple[int, int], set[int]] = {}
    for lvl in levels:
        shapes.setdefault((lvl.tile_width, lvl.tile_height), set()).add(round(full.width / lvl.width))
    return [{"width": w, "height": h, "scaleFactors": sorted(f)} for (w, h), f in shapes.items()]


INFO_FIXTURES = [JPEG_TABLES, JPEG_SUBIFD, DEFLATE, NON_SQUARE, ODD_LEVELS, GREY, BIGTIFF, SAMPLE_RANGE]


@pytest.mark.parametrize("name", INFO_FIXTURES)
def test_v3_info_describes_the_stored_pyramid(app, name):
    doc = info(app, name)
    full = ref.levels(name)[0]
    assert next(iter(doc)) == "@context", "@context comes first (3.0 section 5.2)"
    assert doc["@context"] == CONTEXT[3]
    assert doc["id"] == f"http://localhost/iiif/{name}"
    assert doc["type"] == "ImageService3"
    assert doc["protocol"] == "http://iiif.io/api/image"
    assert doc["profile"] == "level2"
    assert (doc["width"], doc["height"]) == (full.width, full.height)
    assert doc["sizes"] == expected_sizes(name)
    assert doc["tiles"] == expected_tiles(name)
    assert "maxWidth" not in doc and "maxHeight" not in doc and "maxArea" not in doc  # MAX_CVT 5000 > sides
    # No limit announced, so no sizeUpscaling: 3.0 section 5.7 ties it to maxWidth or maxArea.
    assert set(doc["extraFeatures"]) == V3_EXTRA_FEATURES


def test_v3_announces_upscaling_with_its_limit():
    app = helpers.make_app(URI_MAP=URI_MAP, MAX_CVT="1000")
    doc = info(app, ref.JPEG_TABLES)
    assert doc["maxWidth"] == doc["maxHeight"] == 1000
    assert set(doc["extraFeatures"]) == V3_EXTRA_FEATURES | {"sizeUpscaling"}


@pytest.mark.parametrize("name", INFO_FIXTURES)
def test_v2_info_describes_the_stored_pyramid(app2, name):
    doc = info(app2, name)
    full = ref.levels(name)[0]
    assert doc["@context"] == CONTEXT[2]
    assert doc["@id"] == f"http://localhost/iiif/{name}"
    assert doc["protocol"] == "http://iiif.io/api/image"
    assert (doc["width"], doc["height"]) == (full.width, full.height)
    assert doc["sizes"] == expected_sizes(name)
    assert doc["tiles"] == expected_tiles(name)
    level, extras = doc["profile"]
    assert level == "http://iiif.io/api/image/2/level2.json"
    assert "maxWidth" not in extras and "maxHeight" not in extras
    grey = name == GREY
    assert extras["qualities"] == ["default", *([] if grey else ["color"]), "gray", "bitonal"]
    for feature in ("mirroring", "rotationArbitrary", "rotationBy90s", "regionSquare", "sizeAboveFull"):
        assert feature in extras["supports"]
    assert {"canonicalLinkHeader", "profileLinkHeader", "baseUriRedirect"} <= set(extras["supports"])
    assert "cors" not in extras["supports"], "no CORS headers are sent without CORS"


def test_scale_factors_of_a_pyramid_that_does_not_halve(app):
    """Levels 3000, 1000, 333, 111 wide: downsamples 1, 3, 9.009, 27.03."""
    assert [lvl.width for lvl in ref.levels(ODD_LEVELS)] == [3000, 1000, 333, 111]
    assert info(app, ODD_LEVELS)["tiles"] == [{"width": 256, "height": 256, "scaleFactors": [1, 3, 9, 27]}]


def test_non_square_tiles(app):
    lvl = ref.levels(NON_SQUARE)[0]
    assert (lvl.tile_width, lvl.tile_height) == (512, 256)
    assert info(app, NON_SQUARE)["tiles"] == [{"width": 512, "height": 256, "scaleFactors": [1, 2, 4]}]


@pytest.mark.parametrize("version", [2, 3])
def test_max_size_announced_only_when_max_cvt_limits_it(version):
    app = helpers.make_app(URI_MAP=URI_MAP, IIIF_VERSION=str(version), MAX_CVT="1000")
    doc = info(app, JPEG_TABLES)
    limits = doc if version == 3 else doc["profile"][1]
    assert (limits["maxWidth"], limits["maxHeight"]) == (1000, 1000)
    # Sizes and tiles must stay within announced limits (3.0 section 5.2).
    assert doc["sizes"] == expected_sizes(JPEG_TABLES, 1000)
    assert all(max(s["width"], s["height"]) <= 1000 for s in doc["sizes"])
    # An image smaller than the limit announces none.
    small = info(app, SAMPLE_RANGE)
    assert "maxWidth" not in (small if version == 3 else small["profile"][1])


def test_extra_qualities_follow_the_channels(app):
    assert info(app, JPEG_TABLES)["extraQualities"] == ["color", "gray", "bitonal"]
    assert info(app, GREY)["extraQualities"] == ["gray", "bitonal"]


@pytest.mark.parametrize("version", [2, 3])
def test_every_announced_format_is_served(version):
    """extraFormats (3) / formats (2) list only what the server writes: each one renders."""
    app = helpers.make_app(URI_MAP=URI_MAP, IIIF_VERSION=str(version))
    doc = info(app, BIGTIFF)
    formats = ["jpg", "png", *doc["extraFormats"]] if version == 3 else doc["profile"][1]["formats"]
    assert {"jpg", "png", "webp", "tif"} <= set(formats)
    assert not {"gif", "jp2", "pdf"} & set(formats)
    size = "max" if version == 3 else "full"
    for fmt in formats:
        got = pixels_of(app, f"{BIGTIFF}/0,0,128,128/{size}/0/default.{fmt}")
        tolerance = 0.0 if fmt in ("png", "tif") else 12.0
        assert ref.mean_abs_diff(got[:, :, :3], ref.pixels(BIGTIFF)[:128, :128]) <= tolerance, fmt


# -- info.json: rights, services, extras -----------------------------------------------------------

LICENSE = "http://creativecommons.org/licenses/by/4.0/"


def test_rights_from_copyright_uri():
    app3 = helpers.make_app(URI_MAP=URI_MAP, COPYRIGHT=LICENSE)
    app2 = helpers.make_app(URI_MAP=URI_MAP, COPYRIGHT=LICENSE, IIIF_VERSION="2")
    # The libvips fixture has no Copyright tag, so COPYRIGHT applies.
    assert info(app3, JPEG_TABLES)["rights"] == LICENSE
    v2 = info(app2, JPEG_TABLES)
    assert v2["license"] == LICENSE and "attribution" not in v2


def test_rights_text_is_attribution_in_v2_and_absent_in_v3():
    """3.0's rights must be a URI; 2.1 has attribution for text.  Escaped in the JSON."""
    text = 'Text with "quotes", a back\\slash & <tags>'
    app3 = helpers.make_app(URI_MAP=URI_MAP, COPYRIGHT=text)
    app2 = helpers.make_app(URI_MAP=URI_MAP, COPYRIGHT=text, IIIF_VERSION="2")
    assert "rights" not in info(app3, JPEG_TABLES)
    v2 = info(app2, JPEG_TABLES)
    assert v2["attribution"] == text and "license" not in v2


def test_rights_of_the_image_win_over_copyright():
    app2 = helpers.make_app(URI_MAP=URI_MAP, COPYRIGHT=LICENSE, IIIF_VERSION="2")
    with tifffile.TiffFile(helpers.fixture(DEFLATE)) as tif:
        stored = tif.pages[0].tags["Copyright"].value
    assert info(app2, DEFLATE)["attribution"] == stored


@pytest.mark.parametrize("name", [JPEG_TABLES, DEFLATE, GREY])
def test_physical_dimensions_service_from_the_resolution(app, app2, name):
    """The fixtures say 300 pixels per inch: 2.54 / 300 cm per pixel."""
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        page = tif.pages[0]
        assert page.tags["ResolutionUnit"].value == 2  # inch
        numerator, denominator = page.tags["XResolution"].value
        assert numerator / denominator == pytest.approx(300, rel=1e-4)
    v3 = info(app, name)["service"]
    assert len(v3) == 1
    service = v3[0]
    assert service["id"].startswith(f"http://localhost/iiif/{name}")  # a valid 3.0 service: id + type
    assert service["type"] == "PhysicalDimensions"
    assert service["profile"] == "http://iiif.io/api/annex/services/physdim"
    assert service["physicalScale"] == pytest.approx(2.54 / 300, rel=1e-12)
    assert service["physicalUnits"] == "cm"
    v2 = info(app2, name)["service"]
    assert v2["@context"] == "http://iiif.io/api/annex/services/physdim/1/context.json"
    assert v2["profile"] == "http://iiif.io/api/annex/services/physdim"
    assert v2["physicalScale"] == pytest.approx(2.54 / 300, rel=1e-12)
    assert v2["physicalUnits"] == "cm"


def test_physical_dimensions_in_pixels_per_centimetre(app):
    """10 pixels per centimetre across: 0.1 cm per pixel."""
    assert info(app, SAMPLE_RANGE)["service"][0]["physicalScale"] == pytest.approx(0.1, rel=1e-5)


def test_no_physical_dimensions_without_a_resolution(app):
    with tifffile.TiffFile(helpers.fixture(BIGTIFF)) as tif:
        assert tif.pages[0].tags["ResolutionUnit"].value == 1  # none: the numbers mean nothing
    assert "service" not in info(app, BIGTIFF)


@pytest.mark.parametrize(
    "extra",
    [
        '"partOf": [{"id": "https://example.org/manifest/1", "type": "Manifest"}]',
        '{"partOf": [{"id": "https://example.org/manifest/1", "type": "Manifest"}]}',
    ],
)
def test_iiif_extra_info_is_merged(extra):
    app = helpers.make_app(URI_MAP=URI_MAP, IIIF_EXTRA_INFO=extra)
    doc = info(app, JPEG_TABLES)
    assert doc["partOf"] == [{"id": "https://example.org/manifest/1", "type": "Manifest"}]
    assert doc["width"] == 3000


def test_iiif_extra_info_that_is_not_json_stops_start_up():
    # SPEC section 1: a value that cannot be used stops start-up with a message naming it.
    with pytest.raises(SettingsError, match="IIIF_EXTRA_INFO"):
        from_environ({"IIIF_EXTRA_INFO": "not json {"})
    with pytest.raises(SettingsError, match="IIIF_EXTRA_INFO"):
        from_environ({"IIIF_EXTRA_INFO": "[1, 2]"})


# -- IIIF_EXTENSIONS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def extensions_app() -> Any:
    return helpers.make_app(URI_MAP=URI_MAP, IIIF_EXTENSIONS="1")


def test_extensions_add_qualities(app, extensions_app):
    added = ["negative", "stretch", "equalization", "log"]
    assert info(extensions_app, JPEG_TABLES)["extraQualities"] == ["color", "gray", "bitonal", *added]
    assert info(app, JPEG_TABLES)["extraQualities"] == ["color", "gray", "bitonal"]
    assert iiif(app, f"{DEFLATE}/0,0,64,64/max/0/negative.png").status == 400


REGION = (1000, 600, 300, 200)  # x, y, w, h on the 3000 x 2000 lossless fixture


def region_pixels(name: str = DEFLATE, box: tuple[int, int, int, int] = REGION) -> np.ndarray:
    x, y, w, h = box
    return np.ascontiguousarray(ref.pixels(name)[y : y + h, x : x + w])


def region_path(name: str = DEFLATE, box: tuple[int, int, int, int] = REGION) -> str:
    return f"{name}/{','.join(map(str, box))}"


def test_negative(extensions_app):
    got = pixels_of(extensions_app, f"{region_path()}/max/0/negative.png")
    assert np.array_equal(got, 255 - region_pixels())


def test_log(extensions_app):
    """log(1 + 255 v) / log(256) on v in [0, 1] (SPEC section 4, GAM=log)."""
    source = region_pixels().astype(np.float64)
    expected = 255 * np.log1p(source) / np.log(256)
    got = pixels_of(extensions_app, f"{region_path()}/max/0/log.png")
    assert np.abs(got - expected).max() <= 0.5 + 1e-9


def test_stretch(extensions_app):
    """Each band's own minimum and maximum become 0 and 255."""
    source = region_pixels().astype(np.float64)
    lo, hi = source.min(axis=(0, 1)), source.max(axis=(0, 1))
    assert (hi > lo).all() and ((lo > 0) | (hi < 255)).any(), "the region must need stretching"
    expected = (source - lo) * 255 / (hi - lo)
    got = pixels_of(extensions_app, f"{region_path()}/max/0/stretch.png")
    assert np.abs(got - expected).max() <= 0.5 + 1e-9


def test_equalization(extensions_app):
    """Histogram equalisation: per band, a monotonic mapping of the levels onto 0..255 whose
    output histogram is close to flat."""
    source = region_pixels()
    got = pixels_of(extensions_app, f"{region_path()}/max/0/equalization.png")
    assert got.shape == source.shape
    for band in range(3):
        s, g = source[:, :, band].ravel(), got[:, :, band].ravel()
        order = np.argsort(s, kind="stable")
        assert (np.diff(g[order].astype(int)) >= 0).all(), "equal inputs map to equal outputs, in order"
        assert g.min() == 0 and g.max() == 255
        # Flat: the cumulative share of pixels at or below v is close to v / 255.
        cdf = np.cumsum(np.bincount(g, minlength=256)) / g.size
        used = np.unique(g)
        assert np.abs(cdf[used] - used / 255).max() < 0.1


# -- id construction --------------------------------------------------------------------------------


def test_id_keeps_the_host_port(app):
    doc = info(app, BIGTIFF, headers={"Host": "images.example.org:8080"})
    assert doc["id"] == f"http://images.example.org:8080/iiif/{BIGTIFF}"


def test_id_is_https_when_the_front_end_says_so(app):
    result = iiif(with_environ(app, HTTPS="on"), f"{BIGTIFF}/info.json", {"Host": "images.example.org"})
    assert json.loads(result.body)["id"] == f"https://images.example.org/iiif/{BIGTIFF}"


def test_id_from_base_url():
    app = helpers.make_app(URI_MAP=URI_MAP, BASE_URL="https://cdn.example.org/iiif3/")
    doc = info(app, BIGTIFF, headers={"Host": "internal:9000"})
    assert doc["id"] == f"https://cdn.example.org/iiif3/{BIGTIFF}"


def test_id_from_x_iiif_id_header(app):
    doc = info(app, BIGTIFF, headers={"X-IIIF-ID": "https://proxy.example.org/images/abc"})
    assert doc["id"] == "https://proxy.example.org/images/abc"


def test_base_url_wins_over_x_iiif_id():
    app = helpers.make_app(URI_MAP=URI_MAP, BASE_URL="https://cdn.example.org/iiif/")
    doc = info(app, BIGTIFF, headers={"X-IIIF-ID": "https://proxy.example.org/x"})
    assert doc["id"] == f"https://cdn.example.org/iiif/{BIGTIFF}"


def test_query_string_after_info_json_does_not_reach_the_id(app):
    result = iiif(app, f"{BIGTIFF}/info.json", query="callback=x&t=1")
    assert result.status == 200
    assert json.loads(result.body)["id"] == f"http://localhost/iiif/{BIGTIFF}"


@pytest.fixture(scope="module")
def nested_app(tmp_path_factory) -> Any:
    """Images in a sub-directory, so identifiers hold a "/"."""
    root = tmp_path_factory.mktemp("iiif-root")
    os.makedirs(root / "sub dir")
    shutil.copy(helpers.fixture(BIGTIFF), root / "sub dir" / "img.tif")
    return helpers.make_app(URI_MAP=URI_MAP, FILESYSTEM_PREFIX=f"{root}/")


def test_identifier_with_an_escaped_slash(nested_app):
    """The id keeps the identifier as the client escaped it (%2F), so the URLs a viewer
    builds from it reach the same image."""
    doc = info(nested_app, "sub%20dir%2Fimg.tif")
    assert doc["id"] == "http://localhost/iiif/sub%20dir%2Fimg.tif"
    assert doc["width"] == ref.levels(BIGTIFF)[0].width
    tile = iiif(nested_app, "sub%20dir%2Fimg.tif/0,0,128,128/max/0/default.png")
    assert np.array_equal(ref.decode(tile.body), ref.pixels(BIGTIFF)[:128, :128])


def test_identifier_with_a_literal_slash(nested_app):
    doc = info(nested_app, "sub%20dir/img.tif")
    assert doc["id"] == "http://localhost/iiif/sub%20dir/img.tif"
    assert iiif(nested_app, "sub%20dir/img.tif/full/max/0/default.jpg").status == 200


def test_id_of_the_query_form_builds_working_urls(app):
    """``?IIIF=/id/info.json``: the id, with /full/... appended, is a URL this server answers."""
    result = helpers.call(app, f"IIIF=/{BIGTIFF}/info.json")
    assert result.status == 200
    image_id = json.loads(result.body)["id"]
    assert image_id.startswith("http://localhost/fcgi-bin/iipsrv.fcgi?IIIF=")
    query = image_id.split("?", 1)[1] + "/0,0,128,128/max/0/default.png"
    tile = helpers.call(app, query)
    assert tile.status == 200
    assert np.array_equal(ref.decode(tile.body), ref.pixels(BIGTIFF)[:128, :128])


# -- content negotiation and caching ----------------------------------------------------------------


def test_content_type_json_unless_ld_json_is_asked_for(app, app2):
    plain = iiif(app2, f"{BIGTIFF}/info.json", {"Accept": "application/json"})
    assert plain.header("Content-Type") == "application/json"
    ld = iiif(app2, f"{BIGTIFF}/info.json", {"Accept": "application/ld+json"})
    assert ld.header("Content-Type") == LD_JSON.format(CONTEXT[2])
    ld3 = iiif(app, f"{BIGTIFF}/info.json", {"Accept": "application/ld+json"})
    assert ld3.header("Content-Type") == LD_JSON.format(CONTEXT[3])
    for result in (plain, ld, ld3):
        assert result.header("Vary") == "Accept"
        assert result.header("Cache-Control") == "max-age=86400"


def test_v2_without_accept_is_plain_json(app2):
    """2.1 section 5: "otherwise the server must return the regular JSON content-type"."""
    assert iiif(app2, f"{BIGTIFF}/info.json").header("Content-Type") == "application/json"


def test_v3_without_accept_is_json_ld(app):
    """3.0 section 5.1: without an Accept header, application/ld+json with the profile."""
    assert iiif(app, f"{BIGTIFF}/info.json").header("Content-Type") == LD_JSON.format(CONTEXT[3])


@pytest.mark.parametrize(("server", "asked"), [(3, 2), (2, 3)])
def test_accept_with_a_context_selects_the_version(server, asked):
    app = helpers.make_app(URI_MAP=URI_MAP, IIIF_VERSION=str(server))
    accept = LD_JSON.format(CONTEXT[asked])
    result = iiif(app, f"{BIGTIFF}/info.json", {"Accept": accept})
    assert result.status == 200
    doc = json.loads(result.body)
    assert doc["@context"] == CONTEXT[asked]
    assert ("id" in doc) == (asked == 3) and ("@id" in doc) == (asked == 2)
    assert result.header("Content-Type") == accept
    assert result.header("Cache-Control") == "private"
    assert result.header("Vary") == "Accept"
    # Image requests follow the asked version's syntax too.
    size = "full" if asked == 2 else "max"
    image = iiif(app, f"{BIGTIFF}/0,0,64,64/{size}/0/default.jpg", {"Accept": accept})
    assert image.status == 200
    assert f'<http://iiif.io/api/image/{asked}/level2.json>;rel="profile"' in image.header("Link")


def test_info_json_conditional_get(app):
    first = iiif(app, f"{BIGTIFF}/info.json")
    etag, modified = first.header("ETag"), first.header("Last-Modified")
    assert etag and modified
    again = iiif(app, f"{BIGTIFF}/info.json", {"If-None-Match": etag})
    assert again.status == 304 and again.body == b""
    assert again.header("ETag") == etag
    assert iiif(app, f"{BIGTIFF}/info.json", {"If-Modified-Since": modified}).status == 304
    # Another version of the document is another representation: another ETag.
    v2 = iiif(app, f"{BIGTIFF}/info.json", {"Accept": LD_JSON.format(CONTEXT[2]), "If-None-Match": etag})
    assert v2.status == 200 and v2.header("ETag") != etag
    # So is the same document for another host (the id differs).
    other = iiif(app, f"{BIGTIFF}/info.json", {"Host": "other.example.org", "If-None-Match": etag})
    assert other.status == 200


def test_cors_on_iiif_responses():
    app = helpers.make_app(URI_MAP=URI_MAP, CORS="*")
    v2 = helpers.make_app(URI_MAP=URI_MAP, CORS="*", IIIF_VERSION="2")
    assert "cors" in info(v2, BIGTIFF)["profile"][1]["supports"]
    for path in (f"{BIGTIFF}/info.json", f"{BIGTIFF}/full/max/0/default.jpg", f"{BIGTIFF}", "missing.tif/info.json"):
        assert iiif(app, path).header("Access-Control-Allow-Origin") == "*", path


# -- base URI, delimiter, errors -------------------------------------------------------------------


@pytest.mark.parametrize("version", [2, 3])
def test_bare_identifier_redirects_to_info_json(version):
    app = helpers.make_app(URI_MAP=URI_MAP, IIIF_VERSION=str(version))
    result = iiif(app, BIGTIFF, {"Host": "images.example.org:8080"})
    assert result.status == 303
    assert result.header("Location") == f"http://images.example.org:8080/iiif/{BIGTIFF}/info.json"
    assert result.body == b""


def test_iiif_delimiter_selects_a_page():
    app = helpers.make_app(URI_MAP=URI_MAP, IIIF_DELIMITER=":")
    assert info(app, f"{BIGTIFF}:0")["width"] == ref.levels(BIGTIFF)[0].width
    assert iiif(app, f"{BIGTIFF}:0/0,0,64,64/max/0/default.png").status == 200
    assert iiif(app, f"{BIGTIFF}:1/info.json").status == 404  # a single image has only page 0
    assert iiif(app, f"{BIGTIFF}:1/full/max/0/default.jpg").status == 404
    assert info(app, BIGTIFF)["width"] == ref.levels(BIGTIFF)[0].width
    # Without IIIF_DELIMITER the suffix is part of the identifier: no such file.
    assert iiif(helpers.make_app(URI_MAP=URI_MAP), f"{BIGTIFF}:0/info.json").status == 404


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("missing.tif/info.json", 404),
        ("missing.tif/full/max/0/default.jpg", 404),
        ("../etc/passwd/info.json", 404),
        (f"{DEFLATE}/full/full/0/default.jpg", 400),  # 3.0 has no "full" size
        (f"{DEFLATE}/full/max/0/default.gif", 400),
        (f"{DEFLATE}/full/max/400/default.jpg", 400),
        (f"{DEFLATE}/full/max/0/grey.jpg", 400),
        (f"{DEFLATE}/3000,0,10,10/max/0/default.jpg", 400),  # starts right of the image
        (f"{DEFLATE}/0,2000,10,10/max/0/default.jpg", 400),  # starts below it
        (f"{DEFLATE}/pct:100,0,10,10/max/0/default.jpg", 400),
        (f"{DEFLATE}/0,0,0,10/max/0/default.jpg", 400),
        (f"{DEFLATE}/full/0,/0/default.jpg", 400),
        (f"{DEFLATE}/full/pct:101/0/default.jpg", 400),
        ("not-an-image.tif/info.json", 415),
    ],
)
def test_errors(app, path, status):
    result = iiif(app, path)
    assert result.status == status, (path, result.body)
    assert result.header("Content-Type") == "text/plain; charset=utf-8"
    assert helpers.fixture_dir().encode() not in result.body


# -- regions and sizes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "box"),
    [
        ("full", (0, 0, 3000, 2000)),
        ("1000,600,300,200", (1000, 600, 300, 200)),
        ("pct:10,20,30,40", (300, 400, 900, 800)),  # percentages of 3000 x 2000
        ("2900,1900,500,500", (2900, 1900, 100, 100)),  # clipped at the edges, no pixel lost
        ("2999,1999,1,1", (2999, 1999, 1, 1)),
    ],
)
def test_regions_at_full_resolution(app, region, box):
    x, y, w, h = box
    got = pixels_of(app, f"{DEFLATE}/{region}/max/0/default.png")
    assert np.array_equal(got, ref.pixels(DEFLATE)[y : y + h, x : x + w])


def test_square_region_is_the_centred_square(app):
    """3.0 section 4.1: "centered is often a reasonable default" (the README says we centre)."""
    got = pixels_of(app, f"{DEFLATE}/square/400,/0/default.png")
    assert got.shape[:2] == (400, 400)
    centre = np.ascontiguousarray(ref.pixels(DEFLATE)[:, 500:2500])
    assert ref.mean_abs_diff(got, ref.downscale(centre, 400, 400)) < RESAMPLE_TOLERANCE


@pytest.mark.parametrize(
    ("size", "out"),
    [
        # 3.0 section 4.2 forms on a 3000 x 2000 region
        ("max", (3000, 2000)),
        ("150,", (150, 100)),
        (",150", (225, 150)),
        ("pct:5", (150, 100)),
        ("225,100", (225, 100)),  # distorted
        ("!225,100", (150, 100)),
        ("!300,300", (300, 200)),
        ("1000,", (1000, 667)),  # 666.67 rounds to 667
    ],
)
def test_v3_sizes_of_the_full_image(app, size, out):
    got = pixels_of(app, f"{DEFLATE}/full/{size}/0/default.png")
    assert (got.shape[1], got.shape[0]) == out
    assert ref.mean_abs_diff(got, ref.downscale(ref.pixels(DEFLATE), *out)) < RESAMPLE_TOLERANCE


@pytest.mark.parametrize(
    ("size", "out"),
    [
        ("full", (300, 200)),
        ("max", (300, 200)),
        ("150,", (150, 100)),
        (",50", (75, 50)),
        ("pct:50", (150, 100)),
        ("200,50", (200, 50)),
        ("!100,100", (100, 67)),
        ("600,", (600, 400)),
        ("pct:200", (600, 400)),
    ],
)
def test_v2_sizes_of_a_region(app2, size, out):
    """2.1: no "^"; sizes above the region are allowed (sizeAboveFull, ALLOW_UPSCALING=1)."""
    got = pixels_of(app2, f"{region_path()}/{size}/0/default.png")
    assert (got.shape[1], got.shape[0]) == out
    if out[0] <= 300:
        assert ref.mean_abs_diff(got, ref.downscale(region_pixels(), *out)) < RESAMPLE_TOLERANCE


@pytest.mark.parametrize("size", ["301,", ",201", "pct:101", "301,200", "!400,400", "max"])
def test_v3_upscaling_needs_the_caret(app, size):
    if size == "max":  # max never upscales: it is the region's size
        got = pixels_of(app, f"{region_path()}/max/0/default.png")
        assert got.shape[:2] == (200, 300)
        return
    assert iiif(app, f"{region_path()}/{size}/0/default.png").status == 400


@pytest.mark.parametrize(
    ("size", "out"),
    [
        ("^301,", (301, 201)),
        ("^,400", (600, 400)),
        ("^pct:150", (450, 300)),
        ("^600,100", (600, 100)),
        ("^!400,400", (400, 267)),
        ("^max", (300, 200)),  # no larger limit is announced: the region's size
        ("^150,", (150, 100)),  # "^" allows upscaling, it does not require it
    ],
)
def test_v3_upscaling_with_the_caret(app, size, out):
    got = pixels_of(app, f"{region_path()}/{size}/0/default.png")
    assert (got.shape[1], got.shape[0]) == out


def test_no_upscaling_when_the_server_forbids_it():
    app = helpers.make_app(URI_MAP=URI_MAP, ALLOW_UPSCALING="0")
    assert "sizeUpscaling" not in info(app, BIGTIFF)["extraFeatures"]
    assert iiif(app, f"{region_path()}/^600,/0/default.png").status == 400
    assert iiif(app, f"{region_path()}/^150,/0/default.png").status == 200


def test_max_cvt_caps_max_and_refuses_larger_sizes():
    app = helpers.make_app(URI_MAP=URI_MAP, MAX_CVT="1000")
    got = pixels_of(app, f"{DEFLATE}/full/max/0/default.png")
    assert (got.shape[1], got.shape[0]) == (1000, 667)
    assert iiif(app, f"{DEFLATE}/full/1001,/0/default.png").status == 413
    assert iiif(app, f"{DEFLATE}/full/1000,/0/default.png").status == 200
    app2 = helpers.make_app(URI_MAP=URI_MAP, MAX_CVT="1000", IIIF_VERSION="2")
    got = pixels_of(app2, f"{DEFLATE}/full/full/0/default.png")
    assert (got.shape[1], got.shape[0]) == (1000, 667)


# -- the specification's worked examples on a 300 x 200 image ------------------------------------------


@pytest.fixture(scope="module")
def spec_image(tmp_path_factory) -> tuple[Any, np.ndarray]:
    """The examples of 3.0 sections 4.1 and 4.2 are drawn on a 300 x 200 image."""
    root = tmp_path_factory.mktemp("spec-image")
    pixels = np.ascontiguousarray(ref.pixels(DEFLATE, 3)[:200, :300])  # any 300 x 200 picture
    tifffile.imwrite(root / "spec.tif", pixels, photometric="rgb", tile=(128, 128), compression="zlib")
    return helpers.make_app(URI_MAP=URI_MAP, FILESYSTEM_PREFIX=f"{root}/"), pixels


@pytest.mark.parametrize(
    ("path", "out"),
    [
        ("125,15,200,200/max/0/default.png", (175, 185)),  # "N.B. Returned image is 175,185 px"
        ("pct:41.6,7.5,66.6,100/max/0/default.png", (175, 185)),  # the same
        ("full/!225,100/0/default.png", (150, 100)),  # "N.B. Returned image is 150,100 px"
        ("full/^!360,360/0/default.png", (360, 240)),  # "N.B. Returned image is 360,240 px"
        ("full/150,/0/default.png", (150, 100)),
        ("full/,150/0/default.png", (225, 150)),
        ("full/pct:50/0/default.png", (150, 100)),
        ("full/^pct:120/0/default.png", (360, 240)),
        ("full/225,100/0/default.png", (225, 100)),
        ("full/^360,360/0/default.png", (360, 360)),
        ("full/^360,/0/default.png", (360, 240)),
        ("full/^,240/0/default.png", (360, 240)),
        ("125,15,120,140/90,/!345/gray.png", None),  # section 4.6: rotated, so only checked to work
    ],
)
def test_spec_examples(spec_image, path, out):
    app, pixels = spec_image
    got = pixels_of(app, f"spec.tif/{path}")
    if out is not None:
        assert (got.shape[1], got.shape[0]) == out
    if path.startswith("125,15,200,200"):
        assert np.array_equal(got, pixels[15:200, 125:300])


def test_spec_max_with_a_max_width(spec_image, tmp_path):
    """3.0 section 4.2, size=max "assuming that the image has a maxWidth of 200px"."""
    _, pixels = spec_image
    tifffile.imwrite(tmp_path / "spec.tif", pixels, photometric="rgb", tile=(128, 128))
    app = helpers.make_app(URI_MAP=URI_MAP, FILESYSTEM_PREFIX=f"{tmp_path}/", MAX_CVT="200")
    assert info(app, "spec.tif")["maxWidth"] == 200
    got = pixels_of(app, "spec.tif/full/max/0/default.png")
    assert (got.shape[1], got.shape[0]) == (200, 133)


# -- rotation, mirroring, quality, format ----------------------------------------------------------


@pytest.mark.parametrize(
    ("rotation", "transform"),
    [
        ("0", lambda a: a),
        ("90", lambda a: np.rot90(a, -1)),  # clockwise
        ("180", lambda a: np.rot90(a, 2)),
        ("270", lambda a: np.rot90(a, 1)),
        ("360", lambda a: a),
        ("!0", lambda a: a[:, ::-1]),  # mirrored on the vertical axis
        ("!90", lambda a: np.rot90(a[:, ::-1], -1)),  # mirrored, then rotated
        ("!180", lambda a: np.rot90(a[:, ::-1], 2)),
        ("!270", lambda a: np.rot90(a[:, ::-1], 1)),
    ],
)
@pytest.mark.parametrize("version", [2, 3])
def test_right_angles_and_mirroring_are_exact(app, app2, version, rotation, transform):
    server = app if version == 3 else app2
    size = "max" if version == 3 else "full"
    got = pixels_of(server, f"{region_path()}/{size}/{rotation}/default.png")
    assert np.array_equal(got, transform(region_pixels()))


@pytest.mark.parametrize("rotation", ["0", "!0", "90", "!90", "180", "!180", "270", "!270"])
@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tif"])
def test_outputs_of_a_pixel_or_two_in_every_orientation(app, rotation, fmt):
    """Arrays with a side of 1 pixel keep odd strides through numpy's flips and turns."""
    turned = rotation.lstrip("!") in ("90", "270")
    for size, (w, h) in (("1,1", (1, 1)), ("3,1", (3, 1)), ("1,2", (1, 2))):
        got = pixels_of(app, f"{BIGTIFF}/full/{size}/{rotation}/default.{fmt}")
        assert (got.shape[1], got.shape[0]) == ((h, w) if turned else (w, h)), (size, rotation, fmt)


@pytest.mark.parametrize("angle", [45, 22.5, 300])
def test_any_angle_gives_the_bounding_box(app, angle):
    w, h = 300, 200
    radians = math.radians(angle)
    box_w = w * abs(math.cos(radians)) + h * abs(math.sin(radians))
    box_h = w * abs(math.sin(radians)) + h * abs(math.cos(radians))
    jpg = pixels_of(app, f"{region_path()}/max/{angle:g}/default.jpg")
    assert abs(jpg.shape[1] - box_w) <= 1.5 and abs(jpg.shape[0] - box_h) <= 1.5
    # The corners the turned image does not cover: white where there is no alpha ...
    assert jpg[:3, :3].min() >= 235 and jpg[-3:, -3:].min() >= 235
    png = pixels_of(app, f"{region_path()}/max/{angle:g}/default.png")
    assert png.shape[2] == 4 and png.shape[:2] == jpg.shape[:2]
    # ... and transparent where there is.
    assert png[0, 0, 3] == 0 and png[-1, -1, 3] == 0
    cy, cx = png.shape[0] // 2, png.shape[1] // 2
    assert png[cy, cx, 3] == 255
    # The content is the region turned: the centre pixel is the region's centre pixel.
    centre = region_pixels()[h // 2 - 2 : h // 2 + 3, w // 2 - 2 : w // 2 + 3].astype(int)
    assert np.abs(png[cy, cx, :3].astype(int) - centre).min(axis=(0, 1)).max() <= 12


def test_gray_is_the_luminance_of_the_spec(app):
    """SPEC section 4, COL: (1254097 R + 2462056 G + 478151 B) >> 22."""
    source = region_pixels().astype(np.uint64)
    expected = (source[:, :, 0] * 1254097 + source[:, :, 1] * 2462056 + source[:, :, 2] * 478151) >> 22
    got = pixels_of(app, f"{region_path()}/max/0/gray.png")
    assert got.shape[2] == 1
    assert np.array_equal(got[:, :, 0], expected.astype(np.uint8))


def test_bitonal_is_black_and_white_split_by_luminance(app):
    source = region_pixels().astype(np.uint64)
    luminance = (source[:, :, 0] * 1254097 + source[:, :, 1] * 2462056 + source[:, :, 2] * 478151) >> 22
    got = pixels_of(app, f"{region_path()}/max/0/bitonal.png")[:, :, 0]
    assert set(np.unique(got)) == {0, 255}
    # One threshold: every black pixel is darker than every white one.
    assert luminance[got == 0].max() < luminance[got == 255].min()


def test_color_is_the_default_for_a_colour_image(app):
    default = pixels_of(app, f"{region_path()}/max/0/default.png")
    assert np.array_equal(pixels_of(app, f"{region_path()}/max/0/color.png"), default)


def test_color_of_a_grey_image(app, app2):
    """3.0 section 4.4: a request for color "MUST NOT result in an error" (the grey pixels
    come back); 2.1 lists the qualities a grey image has, and color is not one (400)."""
    got = pixels_of(app, f"{GREY}/0,0,200,100/max/0/color.png")
    assert np.array_equal(got[:, :, 0], ref.pixels(GREY)[:100, :200, 0])
    assert iiif(app2, f"{GREY}/0,0,200,100/full/0/color.png").status == 400


def test_gray_of_a_grey_image_is_the_image(app):
    got = pixels_of(app, f"{GREY}/0,0,200,100/max/0/gray.png")
    assert np.array_equal(got, ref.pixels(GREY)[:100, :200])


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tif"])
@pytest.mark.parametrize("version", [2, 3])
def test_formats(app, app2, version, fmt):
    server = app if version == 3 else app2
    size = "max" if version == 3 else "full"
    result = iiif(server, f"{region_path()}/{size}/0/default.{fmt}")
    assert result.status == 200
    assert result.header("Content-Type") == MIME[fmt]
    assert result.header("Content-Disposition") == f'inline; filename="{DEFLATE[:-4]}_300x200.{fmt}"'
    got = ref.decode(result.body)
    tolerance = 0 if fmt in ("png", "tif") else JPEG_TOLERANCE
    assert ref.mean_abs_diff(got, region_pixels()) <= tolerance


def test_avif_when_the_codec_is_available(app):
    formats = info(app, BIGTIFF)["extraFormats"]
    result = iiif(app, f"{region_path()}/max/0/default.avif")
    if "avif" not in formats:
        assert result.status == 400
        return
    assert result.status == 200 and result.header("Content-Type") == "image/avif"
    got = ref.decode(result.body)
    assert got.shape[:2] == (200, 300)
    assert ref.mean_abs_diff(got[:, :, :3], region_pixels()) <= 2 * JPEG_TOLERANCE


# -- Link headers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "request_path", "canonical"),
    [
        (3, "pct:10,20,30,40/150,/0/default.jpg", "300,400,900,800/150,133/0/default.jpg"),
        (3, "full/max/!90/color.png", "full/max/!90/color.png"),
        (3, "0,0,100,100/^200,/0/default.jpg", "0,0,100,100/^200,200/0/default.jpg"),
        (3, "full/!225,100/22.5/gray.png", "full/150,100/22.5/gray.png"),
        (3, "0,0,100,100/max/0.0000001/default.png", "0,0,100,100/max/0.0000001/default.png"),  # no exponent
        (2, "pct:10,20,30,40/150,/0/default.jpg", "300,400,900,800/150,/0/default.jpg"),
        (2, "full/full/0/native.jpg", "full/full/0/default.jpg"),
        (2, "0,0,100,100/200,50/0/default.jpg", "0,0,100,100/200,50/0/default.jpg"),  # distorted: w,h
        (2, "full/300,200/0/default.jpg", "full/300,/0/default.jpg"),
    ],
)
def test_canonical_and_profile_link_headers(app, app2, version, request_path, canonical):
    server = app if version == 3 else app2
    result = iiif(server, f"{DEFLATE}/{request_path}")
    assert result.status == 200
    base = f"http://localhost/iiif/{DEFLATE}"
    links = result.header("Link")
    assert f'<{base}/{canonical}>;rel="canonical"' in links
    assert f'<http://iiif.io/api/image/{version}/level2.json>;rel="profile"' in links
    # The canonical URL names the same image.
    again = iiif(server, f"{DEFLATE}/{canonical}")
    assert again.status == 200 and again.body == result.body


# -- requests that are one stored tile -------------------------------------------------------------


def spliced_tile(name: str, level: int, index: int) -> bytes:
    """SPEC section 7: the stored tile with the shared JPEGTables spliced in."""
    stored = ref.stored_tile(name, level, index)
    tables = ref.jpeg_tables(name, level)
    return tables[:-2] + stored[2:] if tables else stored


@pytest.mark.parametrize(
    ("level", "col", "row", "path"),
    [
        (0, 1, 0, "256,0,256,256/256,256/0/default.jpg"),
        (0, 1, 0, "256,0,256,256/256,/0/default.jpg"),  # how OpenSeadragon asks in 2.x
        (0, 2, 3, "512,768,256,256/max/0/default.jpg"),
        (1, 1, 0, "512,0,512,512/256,256/0/default.jpg"),  # scale factor 2
        (2, 1, 0, "1024,0,1024,1024/256,/0/default.jpg"),  # scale factor 4
    ],
)
def test_a_request_that_is_a_stored_tile_is_passed_through(app, level, col, row, path):
    lvl = ref.levels(JPEG_TABLES)[level]
    index = row * lvl.tiles_x + col
    result = iiif(app, f"{JPEG_TABLES}/{path}")
    assert result.status == 200
    assert result.body == spliced_tile(JPEG_TABLES, level, index)
    assert np.array_equal(ref.decode(result.body), ref.tile_pixels(JPEG_TABLES, level, col, row))
    # The same bytes as the IIP tile command (resolution 0 is the smallest level).
    resolution = len(ref.levels(JPEG_TABLES)) - 1 - level
    assert helpers.call(app, f"FIF={JPEG_TABLES}&JTL={resolution},{index}").body == result.body
    # And through the query form.
    assert helpers.call(app, f"IIIF=/{JPEG_TABLES}/{path}").body == result.body


def test_an_edge_tile_is_cropped_and_re_encoded(app):
    """The last column of the full level is 3000 - 11 * 256 = 184 pixels wide."""
    result = iiif(app, f"{JPEG_TABLES}/2816,0,184,256/184,256/0/default.jpg")
    assert result.status == 200
    got = ref.decode(result.body)
    assert got.shape == (256, 184, 3)
    assert ref.mean_abs_diff(got, ref.tile_pixels(JPEG_TABLES, 0, 11, 0)) <= JPEG_TOLERANCE


@pytest.mark.parametrize(
    "path",
    [
        "256,0,256,256/256,256/0/gray.jpg",  # a quality
        "256,0,256,256/256,256/90/default.jpg",  # a rotation
        "256,0,256,256/256,256/!0/default.jpg",  # mirroring
        "256,0,256,256/256,256/0/default.png",  # another format
    ],
)
def test_processing_rules_out_passthrough(app, path):
    result = iiif(app, f"{JPEG_TABLES}/{path}")
    assert result.status == 200
    assert result.body != spliced_tile(JPEG_TABLES, 0, 1)
