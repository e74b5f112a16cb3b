"""Image sequences (FILENAME_PATTERN) and associated-image identifiers, through the WSGI app.

A sequence is built in the test from fixture pyramids of different sizes, so each angle's
answer shows which file served it; expected sizes come from tifffile reading those files.
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image

from tests import helpers

MEMBERS = {
    (0, 90): "tif-rgb-1500x1000-3lvl-512x256tile-jpeg.tif",
    (10, 90): "tif-rgb-1200x800-3lvl-128tile-jpeg-bigtiff.tif",
    (20, 90): "tif-rgb-600x400-2lvl-256tile-none-sminmax-10x5dpcm.tif",
}


def _size(path: str) -> tuple[int, int]:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        return page.imagewidth, page.imagelength


@pytest.fixture
def sequence(tmp_path, fixtures: str):
    for (h, v), name in MEMBERS.items():
        shutil.copy(os.path.join(fixtures, name), tmp_path / f"vase_pyr_{h:03d}_{v:03d}.tif")
    (tmp_path / "vase_pyr_notes.txt").write_text("not a member")
    return str(tmp_path)


def _max_size(result: helpers.Result) -> tuple[int, int]:
    line = next(line for line in result.text.split("\r\n") if line.startswith("Max-size:"))
    w, h = line.split(":", 1)[1].split()
    return int(w), int(h)


def test_sequence_lists_its_angles_and_answers_as_its_first_member(sequence: str, fixtures: str) -> None:
    app = helpers.make_app(FILESYSTEM_PREFIX=sequence + "/")
    r = helpers.call(app, "FIF=vase&OBJ=Horizontal-views&OBJ=Vertical-views&OBJ=Max-size")
    assert r.status == 200, r.text
    assert "Horizontal-views:0 10 20" in r.text
    assert "Vertical-views:90" in r.text
    assert _max_size(r) == _size(os.path.join(fixtures, MEMBERS[(0, 90)]))


@pytest.mark.parametrize(("angles", "member"), [("10,90", (10, 90)), ("20", (20, 90)), ("0,90", (0, 90))])
def test_sds_selects_the_member_at_those_angles(sequence: str, fixtures: str, angles: str, member) -> None:
    app = helpers.make_app(FILESYSTEM_PREFIX=sequence + "/")
    r = helpers.call(app, f"FIF=vase&SDS={angles}&WID=300&CVT=png")
    assert r.status == 200, r.text
    width, height = _size(os.path.join(fixtures, MEMBERS[member]))
    shown = Image.open(io.BytesIO(r.body))
    assert shown.size == (300, round(300 * height / width))


def test_unknown_angles_and_other_names_are_not_found(sequence: str) -> None:
    app = helpers.make_app(FILESYSTEM_PREFIX=sequence + "/")
    assert helpers.call(app, "FIF=vase&SDS=30,90&JTL=0,0").status == 404
    assert helpers.call(app, "FIF=vas&OBJ=Max-size").status == 404  # a prefix of the name is not it
    assert helpers.call(app, "IIIF=/vase_pyr_/info.json").status == 404
    # The server keeps answering.
    assert helpers.call(app, "FIF=vase&OBJ=Max-size").status == 200


def test_sequence_pixels_are_the_selected_files(sequence: str, fixtures: str) -> None:
    app = helpers.make_app(FILESYSTEM_PREFIX=sequence + "/")
    r = helpers.call(app, "FIF=vase&SDS=20,90&PTL=1,0")
    assert r.status == 200
    tile = np.asarray(Image.open(io.BytesIO(r.body)).convert("RGB"))
    with tifffile.TiffFile(os.path.join(fixtures, MEMBERS[(20, 90)])) as tif:
        page = tif.pages.first
        expected = page.asarray()[: tile.shape[0], : tile.shape[1]]
    # The member is uncompressed: the PNG tile equals the stored pixels exactly.
    assert tile.shape[:2] == (min(256, page.imagelength), min(256, page.imagewidth))
    np.testing.assert_array_equal(tile, expected)


def test_members_may_not_leave_the_root(tmp_path, fixtures: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside_pyr_000_090.tif"
    shutil.copy(os.path.join(fixtures, MEMBERS[(0, 90)]), outside)
    os.symlink(outside, root / "escape_pyr_000_090.tif")
    app = helpers.make_app(FILESYSTEM_PREFIX=str(root) + "/")
    assert helpers.call(app, "FIF=escape&OBJ=Max-size").status == 404
    assert helpers.call(app, "FIF=../outside&OBJ=Max-size").status == 404


def test_associated_name_of_an_image_without_one_is_not_found(app) -> None:
    r = helpers.call(app, "IIIF=/tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif::label/info.json")
    assert r.status == 404
    assert helpers.call(app, "IIIF=/tif-rgb-3000x2000-5lvl-256tile-jpeg-tables.tif/info.json").status == 200
