"""The per-worker response cache must never change what a request gets: a hit is revalidated
like a fresh request (identifier resolved inside the root again, file stat'ed)."""

from __future__ import annotations

import json
import os
import shutil

from tests import helpers
from tests.functional import reference as ref

TILE = "FIF={name}&JTL=2,3"


def _root_with(tmp_path, *names: str):
    root = tmp_path / "root"
    root.mkdir()
    for name in names:
        shutil.copy(helpers.fixture(name), root / name)
    return root


def test_a_repeated_request_gets_the_same_bytes_and_headers(app) -> None:
    query = TILE.format(name=ref.JPEG_TABLES)
    first, second = helpers.call(app, query), helpers.call(app, query)
    assert first.status == second.status == 200
    assert first.body == second.body and first.header_list == second.header_list
    head = helpers.call(app, query, method="HEAD")
    assert head.body == b"" and head.header_list == first.header_list


def test_link_retargeted_out_of_the_root_is_refused_after_a_hit(tmp_path) -> None:
    root = _root_with(tmp_path, ref.JPEG_TABLES)
    outside = tmp_path / "outside.tif"
    shutil.copy(helpers.fixture(ref.GREY), outside)
    link = root / "link.tif"
    os.symlink(root / ref.JPEG_TABLES, link)
    app = helpers.make_app(FILESYSTEM_PREFIX=str(root) + "/")
    query = TILE.format(name="link.tif")
    assert helpers.call(app, query).status == 200
    assert helpers.call(app, query).status == 200  # now from the response cache
    os.unlink(link)
    os.symlink(outside, link)
    refused = helpers.call(app, query)
    assert refused.status == 404 and str(tmp_path) not in refused.text


def test_deleted_and_replaced_files_are_noticed_after_a_hit(tmp_path) -> None:
    root = _root_with(tmp_path, ref.JPEG_TABLES)
    app = helpers.make_app(FILESYSTEM_PREFIX=str(root) + "/")
    query = f"FIF={ref.JPEG_TABLES}&OBJ=Max-size"
    assert helpers.call(app, query).text == "Max-size:3000 2000\r\n"
    helpers.call(app, query)
    os.unlink(root / ref.JPEG_TABLES)
    assert helpers.call(app, query).status == 404
    shutil.copy(helpers.fixture(ref.GREY), root / ref.JPEG_TABLES)  # another image, same name
    width, height = ref.levels(ref.GREY)[0].width, ref.levels(ref.GREY)[0].height
    assert helpers.call(app, query).text == f"Max-size:{width} {height}\r\n"


def test_responses_that_depend_on_the_host_are_kept_apart() -> None:
    app = helpers.make_app(URI_MAP="iiif=>IIIF")
    path = f"/iiif/{ref.JPEG_TABLES}/info.json"
    one = json.loads(helpers.call(app, path=path, headers={"Host": "a.example:8080"}).body)
    two = json.loads(helpers.call(app, path=path, headers={"Host": "b.example"}).body)
    again = json.loads(helpers.call(app, path=path, headers={"Host": "a.example:8080"}).body)
    assert one["id"] == again["id"] == f"http://a.example:8080/iiif/{ref.JPEG_TABLES}"
    assert two["id"] == f"http://b.example/iiif/{ref.JPEG_TABLES}"


def test_conditional_request_after_a_hit_still_gets_304(app) -> None:
    query = TILE.format(name=ref.JPEG_TABLES)
    etag = helpers.call(app, query).header("ETag")
    helpers.call(app, query)
    assert helpers.call(app, query, headers={"If-None-Match": etag}).status == 304
