"""The slide REST API through WSGI, against independent references: the fixture directory's own
listing, tifffile's pages (reference.py), OpenSlide for SVS, Pillow for downscales, and the
DeepZoom protocol's answers for /slides/{id}/dzi."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np
import pytest
import tifffile

from tests import helpers
from tests.functional import reference
from tests.integration.reference import jpeg_error

SVS = "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs"
IMAGE_EXTENSIONS = (".tif", ".tiff", ".svs", ".jp2", ".j2k", ".jpg", ".jpeg")


@pytest.fixture(scope="module")
def app(fixtures: str) -> Any:
    return helpers.make_app()


def get(app: Any, path: str, query: str = "", **kwargs: Any) -> helpers.Result:
    return helpers.call(app, query, path=path, **kwargs)


def get_json(app: Any, path: str, query: str = "") -> Any:
    result = get(app, path, query)
    assert result.status == 200, result.body
    assert result.header("content-type") == "application/json"
    return json.loads(result.body)


def error(app: Any, path: str, query: str = "", method: str = "GET") -> tuple[int, str]:
    result = get(app, path, query, method=method)
    assert result.header("content-type") == "application/json", result.body
    document = json.loads(result.body)
    assert set(document) == {"error", "message", "status"}
    assert document["status"] == result.status
    # Never a server path in an error.
    assert helpers.FIXTURES.encode() not in result.body and b"Traceback" not in result.body
    return result.status, document["error"]


def all_pages(app: Any, query: str, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        q = f"{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        document = get_json(app, "/slides", q)
        assert document["count"] == len(document["slides"]) <= limit
        pages.append(document["slides"])
        cursor = document["next_cursor"]
        if cursor is None:
            return pages
        assert len(document["slides"]) == limit
        assert len(pages) < 1000


# -- health and the slide list --------------------------------------------------------------------


def test_health(app: Any) -> None:
    from iipsrv_py import __version__

    result = get(app, "/health")
    assert json.loads(result.body) == {"status": "healthy", "version": __version__}
    assert result.header("cache-control") == "no-cache" and result.header("etag") is None


def test_options_on_rest_paths_offers_only_what_they_answer(app: Any) -> None:
    options = helpers.call(app, method="OPTIONS", path="/slides")
    assert options.status == 204 and options.header("allow") == "GET, HEAD, OPTIONS"
    # ... and what it leaves out is indeed refused; IIP's path still offers POST.
    assert helpers.call(app, method="POST", path="/slides").status == 405
    assert helpers.call(app, method="OPTIONS").header("allow") == "GET, HEAD, POST, OPTIONS"


def expected_images(directory: str) -> list[str]:
    found = []
    for parent, _, files in os.walk(directory):
        for name in files:
            relative = os.path.relpath(os.path.join(parent, name), directory).replace(os.sep, "/")
            if name.lower().endswith(IMAGE_EXTENSIONS) and not any(p.startswith(".") for p in relative.split("/")):
                found.append(relative)
    return sorted(found)


@pytest.mark.parametrize("limit", [1, 7, 1000])
def test_pages_cover_every_image_exactly_once(app: Any, fixtures: str, limit: int) -> None:
    expected = expected_images(fixtures)
    assert len(expected) > 20
    pages = all_pages(app, "", limit)
    listed = [slide for page in pages for slide in page]
    assert listed == expected
    assert len(pages) == -(-len(expected) // limit)


def test_default_limit_and_clamps(app: Any, fixtures: str) -> None:
    count = len(expected_images(fixtures))
    assert get_json(app, "/slides")["count"] == min(100, count)
    assert get_json(app, "/slides", "limit=0")["count"] == 1
    assert get_json(app, "/slides", "limit=5000")["count"] == min(1000, count)


def test_filters_apply_before_paging(app: Any, fixtures: str) -> None:
    expected = expected_images(fixtures)
    svs = [name for name in expected if name.startswith("svs-")]
    assert len(svs) >= 3
    assert [s for page in all_pages(app, "prefix=svs-", 2) for s in page] == svs
    jpeg = [name for name in expected if "jpeg" in name.lower()]
    assert len(jpeg) > 5
    assert [s for page in all_pages(app, "search=JpEg", 3) for s in page] == jpeg
    both = [name for name in svs if "jpeg" in name]
    assert [s for page in all_pages(app, "prefix=svs-&search=JPEG", 1) for s in page] == both
    assert get_json(app, "/slides", "prefix=no-such-") == {"slides": [], "next_cursor": None, "count": 0}


def test_folders_dotfiles_and_other_files(tmp_path: Any, fixtures: str) -> None:
    small = os.path.join(fixtures, "tif-rgb-600x400-1lvl-256tile-none.tif")
    for relative in ("b.tif", "a/c.svs", "a/d/e.TIFF", ".hidden.tif", ".dir/f.tif", "a/notes.txt", "g.png"):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(small, path)
    app = helpers.make_app(FILESYSTEM_PREFIX=str(tmp_path) + "/")
    assert get_json(app, "/slides")["slides"] == ["a/c.svs", "a/d/e.TIFF", "b.tif"]
    assert get_json(app, "/slides", "prefix=a/")["slides"] == ["a/c.svs", "a/d/e.TIFF"]
    # A slide in a folder, by segments and by %2F.
    for path in ("/slides/a/d/e.TIFF", "/slides/a%2Fd%2Fe.TIFF"):
        assert get_json(app, path)["slide_id"] == "a/d/e.TIFF"
    assert get(app, "/tiles/a%2Fc.svs/0/0/0.png").status == 200


def test_invalid_cursor(app: Any) -> None:
    assert error(app, "/slides", "cursor=***") == (400, "invalid_cursor")


# -- slide metadata ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", reference.JPEG_PYRAMIDS + reference.LOSSLESS_PYRAMIDS)
def test_levels_match_tifffile(app: Any, name: str) -> None:
    document = get_json(app, f"/slides/{name}")
    levels = reference.levels(name)
    full = levels[0]
    assert document["slide_id"] == name
    assert document["format"] == "Generic Pyramidal TIFF"
    assert (document["width"], document["height"]) == (full.width, full.height)
    assert document["level_count"] == len(levels) == len(document["levels"])
    for index, (got, level) in enumerate(zip(document["levels"], levels, strict=True)):
        assert got["level"] == index
        assert (got["width"], got["height"]) == (level.width, level.height)
        assert (got["tile_width"], got["tile_height"]) == (level.tile_width, level.tile_height)
        assert (got["tiles_x"], got["tiles_y"]) == (level.tiles_x, level.tiles_y)
        expected = (full.width / level.width + full.height / level.height) / 2
        assert got["downsample"] == pytest.approx(expected)
    assert document["associated_images"] == []


def test_resolution_tags_give_mpp(app: Any) -> None:
    """10 x 5 pixels per centimetre: 1000 x 2000 micrometres per pixel."""
    document = get_json(app, f"/slides/{reference.SAMPLE_RANGE}")
    assert (document["mpp_x"], document["mpp_y"]) == (pytest.approx(1000.0), pytest.approx(2000.0))
    # Resolution in pixels per inch: 25400 micrometres per inch.
    with tifffile.TiffFile(helpers.fixture(reference.DEFLATE)) as tif:
        tags = tif.pages[0].tags
        unit = int(tags["ResolutionUnit"].value)
        numerator, denominator = tags["XResolution"].value
    assert unit == 2
    expected = 25400 / (numerator / denominator)
    assert get_json(app, f"/slides/{reference.DEFLATE}")["mpp_x"] == pytest.approx(expected)
    assert get_json(app, "/slides/jpeg-rgb-1001x777-q90.jpg")["mpp_x"] is None


def aperio_pairs(path: str) -> dict[str, str]:
    with tifffile.TiffFile(path) as tif:
        description = tif.pages[0].description
    pairs = (part.split("=", 1) for part in description.split("|")[1:] if "=" in part)
    return {key.strip(): value.strip() for key, value in pairs}


def test_generated_svs(app: Any, fixtures: str) -> None:
    document = get_json(app, f"/slides/{SVS}")
    pairs = aperio_pairs(os.path.join(fixtures, SVS))
    assert document["format"] == "Aperio SVS" and document["vendor"] == "aperio"
    assert document["mpp_x"] == document["mpp_y"] == float(pairs["MPP"])
    assert document["objective_power"] == float(pairs["AppMag"])
    assert document["properties"] == {f"aperio.{k}": v for k, v in pairs.items()}
    assert sorted(document["associated_images"]) == ["label", "macro", "thumbnail"]


@pytest.mark.parametrize("name", ["small.svs", "cmu_small_region.svs"])
def test_real_svs_matches_openslide(app: Any, downloads: str, name: str) -> None:
    openslide = helpers.require_openslide()
    downloaded = helpers.make_app(FILESYSTEM_PREFIX=downloads + "/")
    document = get_json(downloaded, f"/slides/{name}")
    with openslide.OpenSlide(os.path.join(downloads, name)) as slide:
        assert document["level_count"] == slide.level_count
        got = [(level["width"], level["height"]) for level in document["levels"]]
        assert got == [tuple(d) for d in slide.level_dimensions]
        for level, downsample in zip(document["levels"], slide.level_downsamples, strict=True):
            assert level["downsample"] == pytest.approx(downsample, rel=1e-6)
        properties = slide.properties
        for ours, theirs in (("mpp_x", "openslide.mpp-x"), ("mpp_y", "openslide.mpp-y")):
            expected = float(properties[theirs]) if theirs in properties else None
            assert document[ours] == (pytest.approx(expected) if expected is not None else None)
        power = properties.get("openslide.objective-power")
        assert document["objective_power"] == (float(power) if power else None)
        assert sorted(document["associated_images"]) == sorted(slide.associated_images)
        for key, value in properties.items():
            if key.startswith("aperio."):
                assert document["properties"][key] == value


# -- thumbnails and associated images ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "size", "clamped"),
    [(None, 512, "false"), ("10", 64, "true"), ("300", 300, "false"), ("99999", 2048, "true")],
)
def test_thumbnail_size_and_headers(app: Any, requested: str | None, size: int, clamped: str) -> None:
    name = reference.DEFLATE  # 3000 x 2000
    result = get(app, f"/slides/{name}/thumbnail", f"max_size={requested}" if requested else "")
    assert result.status == 200 and result.header("content-type") == "image/jpeg"
    scale = min(size / 3000, size / 2000, 1.0)
    width, height = round(3000 * scale), round(2000 * scale)
    assert result.header("X-Thumbnail-Size-Clamped") == clamped
    assert result.header("X-Thumbnail-Requested-Size") == (requested or "512")
    assert result.header("X-Thumbnail-Actual-Size") == f"{width}x{height}"
    pixels = reference.decode(result.body)
    assert pixels.shape[:2] == (height, width)
    # A Lanczos downscale of the full image, then JPEG at the server's default quality (75): the
    # thumbnail may differ from it by JPEG's own error on this (busy) content plus a level for its
    # one resize from a stored, already reduced level.
    expected = reference.downscale(reference.pixels(name, 0), width, height)
    assert reference.mean_abs_diff(pixels, expected) < jpeg_error(expected, 75) + 1


def test_thumbnail_is_never_enlarged(app: Any) -> None:
    result = get(app, "/slides/tif-rgb-600x400-1lvl-256tile-none.tif/thumbnail", "max_size=2048")
    assert result.header("X-Thumbnail-Actual-Size") == "600x400"
    assert reference.decode(result.body).shape[:2] == (400, 600)


@pytest.mark.parametrize("picture", ["label", "macro", "thumbnail"])
def test_associated_images_of_the_generated_svs(app: Any, fixtures: str, picture: str) -> None:
    openslide = helpers.require_openslide()
    result = get(app, f"/slides/{SVS}/associated/{picture}")
    assert result.status == 200 and result.header("content-type") == "image/jpeg"
    with openslide.OpenSlide(os.path.join(fixtures, SVS)) as slide:
        expected = np.asarray(slide.associated_images[picture].convert("RGB"))
    got = reference.decode(result.body)
    assert got.shape == expected.shape
    assert reference.mean_abs_diff(got, expected) < jpeg_error(expected, 75) + 0.5


def test_missing_associated_image_is_404(app: Any) -> None:
    assert error(app, f"/slides/{reference.DEFLATE}/associated/label") == (404, "not_found")
    assert error(app, f"/slides/{SVS}/associated/nothing") == (404, "not_found")


# -- DeepZoom ---------------------------------------------------------------------------------------


# (level, col, row) of tiles that exist: 4097 x 2999 in 256-pixel tiles (top DeepZoom level 13),
# 1500 x 1000 in 512-pixel tiles (top level 11).
DZI_TILES = {SVS: ((0, 0, 0), (10, 2, 1), (13, 16, 11)), reference.NON_SQUARE: ((0, 0, 0), (9, 0, 0), (11, 2, 1))}


def test_dzi_is_the_deepzoom_protocols(app: Any) -> None:
    for name, tiles in DZI_TILES.items():
        dzi = get(app, f"/slides/{name}/dzi")
        assert dzi.status == 200 and dzi.header("content-type") == "application/xml"
        assert dzi.body == helpers.call(app, f"DeepZoom={name}.dzi").body
        assert b'TileSize="' in dzi.body and b"<Size " in dzi.body
        for level, col, row in tiles:
            # What OpenSeadragon asks for, given the .dzi URL: <url without extension>_files/...
            tile = get(app, f"/slides/{name}/dzi_files/{level}/{col}_{row}.jpeg")
            assert tile.status == 200, (name, level)
            assert tile.body == helpers.call(app, f"DeepZoom={name}_files/{level}/{col}_{row}.jpg").body
    assert error(app, f"/slides/{SVS}/dzi_files/20/0_0.jpeg") == (404, "not_found")


# -- tiles ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [reference.DEFLATE, reference.ODD_LEVELS])
def test_png_tiles_equal_the_reference(app: Any, name: str) -> None:
    levels = reference.levels(name)
    for index, level in enumerate(levels):
        for col, row in {(0, 0), (level.tiles_x - 1, level.tiles_y - 1), (level.tiles_x // 2, 0)}:
            result = get(app, f"/tiles/{name}/{index}/{col}/{row}.png")
            assert result.status == 200 and result.header("content-type") == "image/png"
            assert np.array_equal(reference.decode(result.body), reference.tile_pixels(name, index, col, row))


@pytest.mark.parametrize("name", [reference.JPEG_TABLES, reference.NON_SQUARE, SVS])
def test_jpeg_tiles_are_close_to_the_reference(app: Any, fixtures: str, name: str) -> None:
    document = get_json(app, f"/slides/{name}")
    with tifffile.TiffFile(os.path.join(fixtures, name)) as tif:
        pages = [p for p in tif.pages if p.is_tiled]
        for level in document["levels"]:
            page = pages[level["level"]]
            assert (page.imagewidth, page.imagelength) == (level["width"], level["height"])
            full = page.asarray()
            col, row = level["tiles_x"] - 1, level["tiles_y"] - 1
            x, y = col * level["tile_width"], row * level["tile_height"]
            expected = full[y : y + level["tile_height"], x : x + level["tile_width"]]
            for suffix, quality in (("", 80), (".jpg", 95)):
                result = get(app, f"/tiles/{name}/{level['level']}/{col}/{row}{suffix}", f"quality={quality}")
                assert result.status == 200 and result.header("content-type") == "image/jpeg"
                got = reference.decode(result.body)
                assert got.shape == expected.shape
                # The stored JPEG tile, decoded and encoded again at ``quality``: JPEG's own error
                # on this content at that quality, plus the stored tile's own.
                assert reference.mean_abs_diff(got, expected) < jpeg_error(expected, quality) + 1.5


def test_webp_tile_and_quality(app: Any) -> None:
    name = reference.DEFLATE
    low = get(app, f"/tiles/{name}/0/1/1.jpg", "quality=10")
    high = get(app, f"/tiles/{name}/0/1/1.jpg", "quality=95")
    assert (low.header("X-Tile-Quality"), high.header("X-Tile-Quality")) == ("10", "95")
    assert len(low.body) < len(high.body)
    webp = get(app, f"/tiles/{name}/0/1/1.webp")
    assert webp.header("content-type") == "image/webp" and reference.image_format(webp.body) == "WEBP"
    assert reference.mean_abs_diff(reference.decode(webp.body), reference.tile_pixels(name, 0, 1, 1)) < 4


def test_tile_cache_hit_header(fixtures: str) -> None:
    app = helpers.make_app()
    path = f"/tiles/{reference.JPEG_TABLES}/1/2/1.jpg"
    first, second = get(app, path), get(app, path)
    assert first.header("X-Tile-Cache-Hit") == "false" and second.header("X-Tile-Cache-Hit") == "true"
    assert first.body == second.body and first.header("etag") == second.header("etag")
    assert [first.header("X-Tile-Quality"), second.header("X-Tile-Quality")] == ["80", "80"]
    assert get(app, path, "quality=81").header("X-Tile-Cache-Hit") == "false"
    # A conditional request is answered with 304.
    revalidated = get(app, path, headers={"If-None-Match": first.header("etag") or ""})
    assert revalidated.status == 304


# -- errors -----------------------------------------------------------------------------------------


def test_every_error_code(app: Any) -> None:
    name = reference.DEFLATE
    levels = reference.levels(name)
    last = len(levels) - 1
    assert error(app, f"/tiles/{name}/{len(levels)}/0/0.jpg") == (400, "invalid_level")
    assert error(app, f"/tiles/{name}/{last}/{levels[last].tiles_x}/0.jpg") == (400, "tile_out_of_bounds")
    assert error(app, f"/tiles/{name}/0/0/{levels[0].tiles_y}") == (400, "tile_out_of_bounds")
    assert error(app, f"/tiles/{name}/0/0/0.jpg", "quality=0") == (400, "invalid_quality")
    assert error(app, f"/tiles/{name}/0/0/0.bmp") == (400, "invalid_format")
    assert error(app, "/tiles/no-such-slide.svs/0/0/0.jpg") == (404, "not_found")
    assert error(app, "/slides/no-such-slide.svs") == (404, "not_found")
    assert error(app, "/slides/../etc/passwd") == (404, "not_found")
    assert error(app, "/slides/no-such-slide.svs/thumbnail") == (404, "not_found")
    assert error(app, "/tiles/x") == (404, "not_found")
    assert error(app, f"/slides/{reference.NOT_AN_IMAGE}") == (415, "unsupported_format")
    # Level 0 tile 5 of a 4 x 4 grid holds garbage.
    assert error(app, f"/tiles/{reference.BROKEN_TILE}/0/1/1.jpg") == (500, "decode_error")
    assert error(app, "/slides", method="POST") == (405, "method_not_allowed")
    assert error(app, "/slides", "limit=x") == (400, "invalid_limit")


def test_unreachable_storage_is_a_connection_error() -> None:
    app = helpers.make_app(
        FILESYSTEM_PREFIX="s3://no-bucket/slides/",
        S3_ENDPOINT="http://127.0.0.1:9",
        S3_CONNECT_TIMEOUT="1",
        S3_READ_TIMEOUT="1",
        S3_RETRIES="0",
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="y",
    )
    for path in ("/slides", "/slides/a.svs", "/tiles/a.svs/0/0/0.jpg"):
        result = get(app, path)
        assert result.status == 502, (path, result.body)
        assert json.loads(result.body)["error"] == "connection_error"
        assert b"no-bucket" not in result.body and b"127.0.0.1" not in result.body


def test_view_pages_the_slide_list_and_the_banner(app: Any) -> None:
    page = get(app, f"/view/{SVS}")
    assert page.status == 200 and page.header("content-type") == "text/html; charset=utf-8"
    assert b"openseadragon.min.js" in page.body and "script-src 'self'" in page.header("content-security-policy")
    assert error(app, "/view/no-such-slide.svs") == (404, "not_found")
    assert error(app, "/view") == (404, "not_found")
    assert error(app, "/view/_assets/../../setup.cfg") == (404, "not_found")
    index = get(app, "/")
    assert index.status == 200 and index.header("content-type") == "text/html; charset=utf-8"
    assert f'href="/view/{SVS}"'.encode() in index.body
    # Any other path with an empty query keeps iipsrv's banner page.
    banner = get(app, "/anything")
    assert banner.header("content-type") == "text/html; charset=utf-8" and b"IIPImage" in banner.body
