"""scripts/demo keeps its promise: every URL it prints answers with what it says it is.

The script itself runs (on a free port, in the virtualenv of this test run, with its own demo
directory), so the test sees exactly the environment, image and URLs a user gets.  Each
printed URL must answer 200 with the content type of what it names, never the banner page
that a path without URI_MAP gets; OBJ=metadata must be a JSON object holding the tags that
tifffile reads from the demo image; images must have the size the URL asks for, and one
DeepZoom tile must be the stored level's pixels.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import tifffile
from PIL import Image

from tests import helpers
from tests.integration import reference, servers

pytestmark = pytest.mark.integration

DEMO = os.path.join(helpers.ROOT, "scripts", "demo")
DEMO_DIR = os.path.join(helpers.ROOT, ".demo")  # where the script keeps its image
# Generating the 8192 x 6144 demo image takes 30-60 s on two cores (once per checkout: the
# script keeps it in .demo/); the server then starts in a few seconds.
START_TIMEOUT = 200.0
TAG_KEYS = {
    "Artist": "creator",
    "Copyright": "rights",
    "ImageDescription": "description",
    "DateTime": "date",
    "Software": "software",
    "DocumentName": "title",
    "Make": "make",
    "Model": "model",
}


@dataclass(frozen=True)
class Demo:
    urls: list[str]
    image: str  # path of the demo image the script made
    process: servers.Managed


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    workdir = str(tmp_path_factory.mktemp("demo"))
    port = servers.free_port()
    # The virtualenv of this run (scripts/test's), so the script installs nothing.
    env = servers.base_env(HOST="127.0.0.1", PORT=str(port), WORKERS="1", IIPSRV_PY_VENV=sys.prefix)
    process = servers.Managed("demo", ["bash", DEMO], workdir, env)
    try:
        process.wait_accepting(("127.0.0.1", port), timeout=START_TIMEOUT)
        output = process.output()
        urls = re.findall(rf"http://127\.0\.0\.1:{port}/\S+", output)  # not the bare base URL
        names = {m for url in urls for m in re.findall(r"[?&]FIF=([^&]+)", url)}
        assert len(names) == 1, f"the demo's URLs should name one image:\n{output}"
        yield Demo(urls, os.path.join(DEMO_DIR, urllib.parse.unquote(names.pop())), process)
    finally:
        process.stop()


def expected_type(url: str) -> str:
    """The content type of what a printed URL names."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    if "CVT" in query:
        return {"jpeg": "image/jpeg", "png": "image/png"}[query["CVT"][0]]
    if "JTL" in query:
        return "image/jpeg"
    if query.get("OBJ") == ["metadata"] or "PFL" in query:
        return "application/json"
    if parts.path.startswith("/view/"):
        return "text/html"
    if parts.path.startswith("/slides") and not parts.path.endswith(("/thumbnail", "/dzi")):
        return "application/json"
    if parts.path.endswith("/thumbnail"):
        return "image/jpeg"
    if "OBJ" in query:
        return "application/vnd.netfpx"
    suffix = parts.path.rsplit(".", 1)[-1]
    return {"json": "application/json", "jpg": "image/jpeg", "webp": "image/webp", "png": "image/png"}.get(
        suffix, "application/xml"
    )


def get(url: str) -> tuple[int, str, bytes]:
    with servers.http_session() as session:
        response = session.get(url, timeout=servers.HTTP_TIMEOUT, allow_redirects=False)
    return response.status_code, response.headers.get("Content-Type", ""), response.content


def test_the_demo_prints_a_url_for_every_protocol(demo: Demo) -> None:
    paths = [urllib.parse.urlsplit(url) for url in demo.urls]
    assert any(p.query.startswith("FIF=") and "OBJ=metadata" in p.query for p in paths), demo.urls
    for protocol in ("iiif", "deepzoom", "zoomify"):
        assert len([p for p in paths if p.path.startswith(f"/{protocol}/")]) >= 2, (protocol, demo.urls)
    assert any(p.path.endswith("/info.json") for p in paths)
    assert any(p.path.endswith(".dzi") for p in paths)
    assert any(p.path.endswith("/ImageProperties.xml") for p in paths)
    # The viewer and the REST API.
    assert any(p.path.startswith("/view/") for p in paths), demo.urls
    assert any(p.path == "/slides" for p in paths) and any(p.path.startswith("/tiles/") for p in paths)


def test_every_printed_url_answers_with_its_content(demo: Demo) -> None:
    assert len(demo.urls) >= 10, demo.process.output()
    with tifffile.TiffFile(demo.image) as tif:
        width, height = tif.pages[0].imagewidth, tif.pages[0].imagelength
    for url in demo.urls:
        status, content_type, body = get(url)
        assert status == 200, (url, status, body[:200])
        assert content_type.split(";")[0] == expected_type(url), (url, content_type)
        if content_type.startswith("text/html"):
            assert b"openseadragon" in body.lower(), f"{url} is not the viewer page"
            continue
        assert b"<html" not in body[:200].lower(), f"{url} answered with the banner page"
        if content_type.startswith("image/"):
            with Image.open(io.BytesIO(body)) as image:
                image.load()
                assert image.width > 0 and image.height > 0
        elif url.endswith("info.json"):
            info = json.loads(body)
            assert (info["width"], info["height"]) == (width, height)
        elif url.endswith((".dzi", ".xml")):
            assert f'"{width}"' in body.decode() and f'"{height}"' in body.decode(), body


def test_obj_metadata_shows_the_demo_images_tags(demo: Demo) -> None:
    (url,) = [u for u in demo.urls if u.endswith("OBJ=metadata")]
    status, content_type, body = get(url)
    assert (status, content_type) == (200, "application/json")
    metadata = json.loads(body)
    assert isinstance(metadata, dict) and metadata
    with tifffile.TiffFile(demo.image) as tif:
        tags = {TAG_KEYS[tag.name]: str(tag.value).strip() for tag in tif.pages[0].tags if tag.name in TAG_KEYS}
    assert set(tags) == set(TAG_KEYS.values()), "the demo image lacks some descriptive tag"
    assert metadata == tags
    # ...and a resolution, which IIIF turns into physical dimensions.
    (info_url,) = [u for u in demo.urls if u.endswith("/info.json")]
    services = json.loads(get(info_url)[2]).get("service", [])
    assert any("physdim" in service["profile"] for service in services)


def test_image_urls_give_the_sizes_and_pixels_they_ask_for(demo: Demo) -> None:
    with tifffile.TiffFile(demo.image) as tif:
        levels = {(p.imagewidth, p.imagelength): i for i, p in enumerate(tif.pages)}
        full = tif.pages[0].imagewidth, tif.pages[0].imagelength
    for url in demo.urls:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parts.query)
        if "WID" in query and "RGN" not in query:
            wid = int(query["WID"][0])
            expected = (wid, round(full[1] * wid / full[0]))
        elif "WID" in query:
            _, _, w, h = (float(v) for v in query["RGN"][0].split(","))
            wid = int(query["WID"][0])
            expected = (wid, round(h * full[1] * wid / (w * full[0])))
        elif match := re.search(r"/(\d+),(\d+),(\d+),(\d+)/(\d+),/0/", parts.path):
            w, h, wid = int(match[3]), int(match[4]), int(match[5])
            expected = (wid, round(h * wid / w))
        elif match := re.search(r"/full/(\d+),/0/", parts.path):
            wid = int(match[1])
            expected = (wid, round(full[1] * wid / full[0]))
        elif "JTL" in query or parts.path.endswith(".jpg"):
            expected = (256, 256)  # interior tiles of the 256-px tiled levels
        else:
            continue
        if float(query.get("ROT", ["0"])[0].lstrip("!")) % 180 == 90:
            expected = expected[::-1]  # a quarter turn swaps width and height
        with Image.open(io.BytesIO(get(url)[2])) as image:
            assert image.size == expected, url

    # The DeepZoom tile: a tile of the stored 1024 x 768 level (DeepZoom level 10 of 13).
    (tile_url,) = [u for u in demo.urls if "_files/" in u]
    match = re.search(r"_files/(\d+)/(\d+)_(\d+)\.jpg$", tile_url)
    assert match, tile_url
    level, col, row = int(match[1]), int(match[2]), int(match[3])
    scale = 2 ** (math.ceil(math.log2(max(full))) - level)  # DeepZoom's top level is 1:1
    page = levels[(full[0] // scale, full[1] // scale)]
    stored = tifffile.imread(demo.image, key=page)[row * 256 : (row + 1) * 256, col * 256 : (col + 1) * 256]
    got = np.asarray(Image.open(io.BytesIO(get(tile_url)[2])).convert("RGB"))
    assert reference.mean_abs_diff(got, stored) <= reference.jpeg_error(stored, 75) + 1.0
