"""Damaged and malicious image files through the WSGI app (SPEC sections 3 and 11).

The corpus (tests/hostile_corpus.py) damages a fixture of every format and layout in some
thirty ways each -- truncations, flipped bits, patched sizes, tiles, offsets, byte counts and
directory chains -- and adds the crash inputs Pillow's tests ship.  Every specimen is asked for
its metadata, tiles, views and regions through IIP, IIIF, DeepZoom and the slide REST API.  The
requests run in child processes whose address space is limited (RLIMIT_AS), so a decompression
bomb that got through would fail with MemoryError (a 500, and an assertion here) rather than
take the machine's memory.

Every answer must be a SPEC status with an exact Content-Length, an error body naming no path
and showing no traceback, and a 200 must be what was asked for (an image Pillow decodes, at the
width requested; JSON with a width; the OBJ line).  Each request is timed (10 s at most).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image

from tests import helpers
from tests import hostile_corpus as corpus_module
from tests.functional import reference as ref

WORKERS = min(4, os.cpu_count() or 1)  # child processes sharing the corpus
# A child that writes nothing for this long is hung in a request (each is bounded to 10 s; the
# margin is for a loaded machine): it is killed and the request it began is named.
STALL_SECONDS = 60
# A child's peak resident memory: the imports and caches of one worker plus the largest decode
# unit any specimen could make it allocate.  Measured: about 160 MB.
PEAK_RSS_MB = 1024


def crash_files() -> list[str]:
    """The published crash inputs (scripts/fetch_test_data.py); missing: a failure under CI."""
    import fetch_test_data

    paths = [os.path.join(fetch_test_data.DEFAULT_DIRECTORY, name) for name in fetch_test_data.CRASH_FILES]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        message = f"crash inputs not downloaded ({len(missing)} missing): run scripts/fetch_test_data.py"
        if helpers.IN_CI:
            pytest.fail(message)
        return []
    return paths


class Results:
    def __init__(self, specimens: list[corpus_module.Specimen], records: list[dict[str, Any]], peaks: list[int]):
        self.specimens = specimens
        self.records = records
        self.peaks = peaks
        self.by_key = {(r["name"], r["label"]): r for r in records}

    def of(self, name: str, label: str) -> dict[str, Any]:
        return self.by_key[(name, label)]


def _run_share(directory: str, names: list[str], out: Any) -> subprocess.Popen[bytes]:
    """A child serving ``names``; its answers go to the file ``out`` (a pipe could fill while
    another child is being waited for)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.hostile_corpus", directory, *names],
        cwd=helpers.ROOT,
        stdout=out,
        stderr=subprocess.DEVNULL,  # the server's log of every refusal
    )


def _collect(child: subprocess.Popen[bytes], out: Any) -> tuple[list[dict[str, Any]], int]:
    """The child's records once it has finished; killed when it has written nothing for
    STALL_SECONDS (a request that hangs), the hung request named in the failure."""
    written, quiet_since = 0, time.monotonic()
    while child.poll() is None:
        size = os.fstat(out.fileno()).st_size
        if size != written:
            written, quiet_since = size, time.monotonic()
        elif time.monotonic() - quiet_since > STALL_SECONDS:
            child.kill()
            break
        time.sleep(0.2)
    child.wait()
    out.seek(0)
    lines = [json.loads(line) for line in out.read().decode().splitlines() if line.strip()]
    records = [line for line in lines if "label" in line]
    begun = [line["begin"] for line in lines if "begin" in line]
    peak = next((line["maxrss_kb"] for line in lines if "maxrss_kb" in line), 0)
    assert child.returncode == 0 and peak, f"child died or hung (rc {child.returncode}) at {begun[-1:]}"
    return records, peak


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, fixtures: str) -> Results:
    directory = str(tmp_path_factory.mktemp("hostile"))
    specimens = corpus_module.build(directory, fixtures, crash_files())
    names = [s.name for s in specimens]
    records: list[dict[str, Any]] = []
    peaks = []
    with contextlib.ExitStack() as stack:
        outputs = [stack.enter_context(tempfile.TemporaryFile()) for _ in range(WORKERS)]
        children = [_run_share(directory, names[k::WORKERS], outputs[k]) for k in range(WORKERS)]
        for child, out in zip(children, outputs, strict=True):
            share, peak = _collect(child, out)
            records += share
            peaks.append(peak)
    return Results(specimens, records, peaks)


def test_every_request_of_every_specimen_was_answered(results: Results) -> None:
    expected = {(s.name, p.label) for s in results.specimens for p in corpus_module.probes(s.name)}
    assert set(results.by_key) == expected
    assert len(results.specimens) > 400


def test_every_answer_is_a_spec_status_well_formed_and_quick(results: Results) -> None:
    wrong = [(r["name"], r["label"], r["status"], r["problems"]) for r in results.records if r["problems"]]
    assert not wrong, f"{len(wrong)} bad answers, e.g. {wrong[:10]}"
    statuses = Counter(r["status"] for r in results.records)
    # The corpus exercises each way of failing, and still has servable files in it.
    for status in (200, 404, 413, 415, 500):
        assert statuses[status] > 20, statuses
    assert max(r["elapsed"] for r in results.records) < corpus_module.REQUEST_SECONDS


def test_no_unexpected_exception_reached_the_error_handler(results: Results) -> None:
    """A 500 is a damaged tile (``damaged image``), never an exception the sources did not
    translate (``Internal Server Error``: a crash inside a decoder, or MemoryError)."""
    internal = [(r["name"], r["label"]) for r in results.records if r["status"] == 500 and "Internal" in r["error"]]
    assert not internal


def test_impossible_headers_are_refused_when_opened(results: Results) -> None:
    """Tiles of 65535 x 65535 (x 4 samples), a compressed strip 2^31 wide, a JPEG frame of
    65500 x 65500 (also in a file of a few hundred bytes), JPEG 2000 single tiles of 10^6 and
    2^31 pixels square or of one pixel, zero sizes: 415 for every request, which means nothing
    was decoded (a MemoryError in the limited child would be a 500)."""
    bombs = [s for s in results.specimens if s.expect == corpus_module.REFUSED_AT_OPEN]
    kinds = {s.mutation for s in bombs}
    assert {"tile-65535-4spp", "one-strip-2g-wide", "frame-65500", "siz-one-tile-1m", "siz-tiles-1px"} <= kinds
    wrong = [
        (s.name, p.label, results.of(s.name, p.label)["status"])
        for s in bombs
        for p in corpus_module.probes(s.name)
        if results.of(s.name, p.label)["status"] != 415
    ]
    assert not wrong
    assert results.of("tiny-16x16--frame-65500.jpg", "iiif-info")["error"] == "image too large to decode"


def test_tiles_whose_own_stream_declares_a_bomb_are_413(results: Results) -> None:
    """The TIFF tags are right but the first tile's JPEG frame, JPEG 2000 SIZ, PNG IHDR or WebP
    header claims 65500 x 65500 (16384 x 16384) pixels: the image opens, and a request needing
    that tile is refused before the decoder allocates (or, for a stored JPEG tile, before it is
    sent to a browser as it is)."""
    bombs = [s for s in results.specimens if s.expect == corpus_module.TILE_REFUSED]
    assert len(bombs) == len(corpus_module.STREAM_SOURCES)
    for specimen in bombs:
        assert results.of(specimen.name, "iip-obj")["status"] == 200, specimen.name
        refused = results.of(specimen.name, "iiif-full-res-region")
        assert (refused["status"], refused["error"]) == (413, "image too large to decode"), specimen.name
        assert results.of(specimen.name, "rest-tile")["status"] == 413, specimen.name


UNCOMPRESSED_STRIP = "tif-rgb-600x400-strip400-none.tif"


@pytest.mark.parametrize("mutation", ["offset-past-eof", "bytecount-4g"])
def test_tiles_pointing_past_the_end_are_500_and_the_file_still_opens(results: Results, mutation: str) -> None:
    """The first full-resolution tile (strip) points outside the file: the image opens (its
    header is fine) and the region over that tile is a 500, never a 200 of garbage.  (Rows of
    uncompressed strips are read where they lie, which a wrong byte count does not change: that
    image is still served.)"""
    damaged = [s for s in results.specimens if s.mutation == mutation]
    assert len(damaged) == len(corpus_module.TIFF_SOURCES)
    for specimen in damaged:
        assert results.of(specimen.name, "iip-obj")["status"] == 200, specimen.name
        rows_read_in_place = mutation == "bytecount-4g" and specimen.source == UNCOMPRESSED_STRIP
        expected = 200 if rows_read_in_place else 500
        assert results.of(specimen.name, "iiif-full-res-region")["status"] == expected, specimen.name


def test_directory_loops_end_the_chain(results: Results) -> None:
    """An IFD pointing at itself (or the last pointing at the first) does not hang the open:
    the image is read up to the loop."""
    loops = [s for s in results.specimens if s.mutation.startswith("ifd-loop")]
    assert len(loops) == 2 * len(corpus_module.TIFF_SOURCES)
    for specimen in loops:
        assert results.of(specimen.name, "iip-obj")["status"] == 200, specimen.name


def test_published_crash_inputs_were_served(results: Results) -> None:
    crashes = [s for s in results.specimens if s.mutation == "published-crash-input"]
    if not crashes:
        pytest.skip("crash inputs not downloaded: run scripts/fetch_test_data.py")
    import fetch_test_data

    assert len(crashes) == len(fetch_test_data.CRASH_FILES)
    # Some of them are valid images after all (a JPEG with odd EXIF): they are served.
    assert any(results.of(s.name, "iip-cvt")["status"] == 200 for s in crashes)


def test_children_stayed_within_their_memory(results: Results) -> None:
    assert max(results.peaks) / 1024 < PEAK_RSS_MB, results.peaks


# -- what must still work ------------------------------------------------------------------------

WIDE, HIGH, TILE = 100_000, 20_000, 256
COLOUR = (30, 160, 220)


@pytest.fixture(scope="module")
def huge(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 100,000 x 20,000 tiled pyramid (every tile the same compressed block) and a
    100,000 x 64 image stored as one uncompressed strip."""
    directory = tmp_path_factory.mktemp("huge")
    helpers.write_uniform_pyramid(directory / "wide.tif", WIDE, HIGH, TILE, COLOUR)
    band = np.zeros((64, WIDE, 3), np.uint8)
    band[:, :, 0] = (np.arange(WIDE) % 251).astype(np.uint8)
    tifffile.imwrite(directory / "band.tif", band, photometric="rgb", rowsperstrip=64, metadata=None)
    return f"{directory}/"


def test_huge_tiled_pyramid_is_served(huge: str) -> None:
    app = helpers.make_app(FILESYSTEM_PREFIX=huge)
    info = helpers.call(app, "FIF=wide.tif&OBJ=Max-size&OBJ=Resolution-number")
    assert info.status == 200
    lines = ref.lines(info)
    assert lines[0] == f"Max-size:{WIDE} {HIGH}"
    full = int(lines[1].split(":")[1]) - 1
    last = -(-WIDE // TILE) * -(-HIGH // TILE) - 1
    tile = helpers.call(app, f"FIF=wide.tif&PTL={full},{last}")
    assert tile.status == 200
    pixels = ref.decode(tile.body)
    # The last tile is cropped at the image edge: 100000 - 390 * 256 = 160 wide.
    assert pixels.shape[:2] == (HIGH - (HIGH // TILE) * TILE, WIDE - (WIDE // TILE) * TILE)
    assert (pixels.reshape(-1, 3) == COLOUR).all()
    view = helpers.call(app, "FIF=wide.tif&WID=1000&CVT=png")
    assert view.status == 200
    assert ref.decode(view.body).shape[:2] == (200, 1000)


def test_huge_single_strip_image_is_served_by_rows(huge: str) -> None:
    app = helpers.make_app(FILESYSTEM_PREFIX=huge)
    columns = WIDE // TILE - 1  # the last full tile, at x = 99,584
    result = helpers.call(app, f"FIF=band.tif&PTL=0,{columns}")
    if result.status == 404:  # the image has more than one level: ask for the full one
        levels = int(ref.lines(helpers.call(app, "FIF=band.tif&OBJ=Resolution-number"))[0].split(":")[1])
        result = helpers.call(app, f"FIF=band.tif&PTL={levels - 1},{columns}")
    assert result.status == 200
    pixels = ref.decode(result.body)
    expected = (np.arange(columns * TILE, columns * TILE + TILE) % 251).astype(np.uint8)
    assert pixels.shape[:2] == (64, TILE)
    assert np.array_equal(pixels[0, :, 0], expected)


# -- a request that needs too large a decode ---------------------------------------------------------

SVS = "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs"


def test_oversized_slide_picture_is_413_and_the_slide_still_served(tmp_path, fixtures: str) -> None:
    """An SVS label whose header claims 20,000 x 20,000 pixels (more than one decode) is
    refused for the request that needs it (413); the slide and its other pictures are served."""
    with open(os.path.join(fixtures, SVS), "rb") as f:
        data = f.read()
    with tifffile.TiffFile(os.path.join(fixtures, SVS)) as tif:
        label = next(i for i, page in enumerate(tif.pages) if "label" in page.description.split("\n", 2)[-1][:40])
    patched = corpus_module.TiffPatcher(data).tag(256, 20_000, page=label)
    assert patched is not None
    patched = corpus_module.TiffPatcher(patched).tag(257, 20_000, page=label)
    assert patched is not None
    (tmp_path / "slide.svs").write_bytes(patched)
    app = helpers.make_app(FILESYSTEM_PREFIX=f"{tmp_path}/")
    refused = helpers.call(app, "", path="/slides/slide.svs/associated/label")
    assert refused.status == 413
    assert json.loads(refused.body)["error"] == "too_large"
    macro = helpers.call(app, "", path="/slides/slide.svs/associated/macro")
    assert macro.status == 200
    with Image.open(io.BytesIO(macro.body)) as im:
        assert im.width > 0
    slide = json.loads(helpers.call(app, "", path="/slides/slide.svs").body)
    assert (slide["width"], slide["height"]) == (4097, 2999)


def test_slide_picture_whose_strip_declares_a_bomb_is_413(tmp_path, fixtures: str) -> None:
    """The macro picture's JPEG strip claims 65500 x 65500 pixels in its own frame header (the
    TIFF tags are right): refused before the picture is decoded; the label is still served."""
    with open(os.path.join(fixtures, SVS), "rb") as f:
        data = bytearray(f.read())
    with tifffile.TiffFile(os.path.join(fixtures, SVS)) as tif:
        macro = next(page for page in tif.pages if page.description.split("\n")[1:2] == ["macro 1280x420"])
        assert macro.compression == 7 and len(macro.dataoffsets) == 1
        offset = int(macro.dataoffsets[0])
    frame = corpus_module._jpeg_frame(bytes(data[offset:]))
    assert frame is not None
    data[offset + frame + 5 : offset + frame + 9] = (65500).to_bytes(2, "big") * 2
    (tmp_path / "slide.svs").write_bytes(data)
    app = helpers.make_app(FILESYSTEM_PREFIX=f"{tmp_path}/")
    refused = helpers.call(app, "", path="/slides/slide.svs/associated/macro")
    assert (refused.status, json.loads(refused.body)["error"]) == (413, "too_large")
    assert helpers.call(app, "FIF=slide.svs::macro&WID=100&CVT=jpeg").status == 413
    label = helpers.call(app, "", path="/slides/slide.svs/associated/label")
    assert label.status == 200
    with Image.open(io.BytesIO(label.body)) as im:
        assert im.size[0] > 0
