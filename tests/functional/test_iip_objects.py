"""IIP OBJ objects through the WSGI app (SPEC sections 3 and 5).

Expected values come from tifffile reading the same fixture, or from the SPEC's own formulas
and examples; nothing is copied from the server's output.
"""

from __future__ import annotations

import json

import pytest
import tifffile

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

ALL_PYRAMIDS = (JPEG_TABLES, JPEG_SUBIFD, DEFLATE, NON_SQUARE, ODD_LEVELS, GREY, BIGTIFF, SAMPLE_RANGE)
NETFPX = "application/vnd.netfpx"

# SPEC section 5: TIFF tag -> OBJ name.
TAG_OBJECTS = {
    "description": "ImageDescription",
    "creator": "Artist",
    "rights": "Copyright",
    "title": "DocumentName",
    "software": "Software",
    "date": "DateTime",
    "make": "Make",
    "model": "Model",
}


@pytest.fixture(scope="module")
def app():
    return helpers.make_app()


def obj(app, name: str, *objects: str) -> helpers.Result:
    query = f"FIF={name}" + "".join(f"&OBJ={o}" for o in objects)
    return helpers.call(app, query)


def tag(name: str, tag_name: str) -> str:
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        value = tif.pages[0].tags.valueof(tag_name)
    return "" if value is None else str(value).strip()


def only_line(result: helpers.Result) -> str:
    assert result.status == 200, result.body
    body_lines = ref.lines(result)
    assert len(body_lines) == 1, body_lines
    return body_lines[0]


# -- protocol and server objects ---------------------------------------------------------------


def test_iip_protocol_object_sets_the_iip_header(app):
    result = obj(app, JPEG_TABLES, "IIP,1.0")
    assert result.status == 200
    assert result.header("IIP") == "1.0"
    assert result.body == b""


@pytest.mark.parametrize("version", ["2.0", "1.3", "1.0\r\nX-Injected: 1", "\u00e9\ud800", "%0d%0a"])
def test_iip_header_is_the_servers_protocol_version_never_client_text(app, version):
    # SPEC 3: the header names the protocol version spoken, and header values must be latin-1
    # without line breaks, so nothing of the client's argument may reach it.
    result = obj(app, JPEG_TABLES, f"IIP,{version}")
    assert result.status == 200
    assert result.header("IIP") == "1.0"


def test_iip_protocol_header_is_absent_without_the_object(app):
    assert obj(app, JPEG_TABLES, "Max-size").header("IIP") is None


@pytest.mark.parametrize("query", ["OBJ=IIP-server", f"FIF={JPEG_TABLES}&OBJ=IIP-server", "OBJ=iip-server"])
def test_iip_server_needs_no_image(app, query):
    result = helpers.call(app, query)
    assert only_line(result) == "IIP-server:3.65"
    assert result.header("Content-Type") == NETFPX


# -- image structure objects -------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_PYRAMIDS)
def test_max_size_is_the_full_image_size(app, name):
    full = ref.levels(name)[0]
    assert only_line(obj(app, name, "Max-size")) == f"Max-size:{full.width} {full.height}"


@pytest.mark.parametrize("name", ALL_PYRAMIDS)
def test_resolution_number_counts_stored_levels(app, name):
    assert only_line(obj(app, name, "Resolution-number")) == f"Resolution-number:{len(ref.levels(name))}"


@pytest.mark.parametrize("name", ALL_PYRAMIDS)
def test_tile_size_is_the_real_tile_width_and_height(app, name):
    full = ref.levels(name)[0]
    assert only_line(obj(app, name, "Tile-size")) == f"Tile-size:{full.tile_width} {full.tile_height}"


def test_tile_size_of_non_square_tiles_is_width_then_height(app):
    # The fixture's tiles are 512 wide and 256 high ([fix]: iipsrv reports one number twice).
    assert only_line(obj(app, NON_SQUARE, "Tile-size")) == "Tile-size:512 256"


@pytest.mark.parametrize("name", ALL_PYRAMIDS)
def test_bits_per_channel(app, name):
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        bits = tif.pages[0].bitspersample
    assert only_line(obj(app, name, "Bits-per-channel")) == f"Bits-per-channel:{bits}"


def test_views_of_a_single_image(app):
    assert only_line(obj(app, JPEG_TABLES, "Horizontal-views")) == "Horizontal-views:0"
    assert only_line(obj(app, JPEG_TABLES, "Vertical-views")) == "Vertical-views:90"


def _min_max_line(minimums: list[float], maximums: list[float]) -> str:
    # SPEC 5: each value printed as " %.9g ", then the last space removed.
    text = "".join(f" {lo:.9g}  {hi:.9g} " for lo, hi in zip(minimums, maximums, strict=True))
    return "Min-Max-sample-values:" + text[:-1]


@pytest.mark.parametrize("name", [JPEG_TABLES, DEFLATE, GREY, BIGTIFF])
def test_min_max_sample_values_default_to_the_bit_depth_range(app, name):
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        channels = tif.pages[0].samplesperpixel
        assert tif.pages[0].tags.get("SMinSampleValue") is None
    expected = _min_max_line([0] * channels, [255] * channels)
    assert only_line(obj(app, name, "Min-Max-sample-values")) == expected


def test_min_max_sample_values_from_smin_smax_tags(app):
    with tifffile.TiffFile(helpers.fixture(SAMPLE_RANGE)) as tif:
        tags = tif.pages[0].tags
        minimums = list(bytes(tags.valueof("SMinSampleValue")))
        maximums = list(bytes(tags.valueof("SMaxSampleValue")))
    assert len(minimums) == 3
    line = only_line(obj(app, SAMPLE_RANGE, "Min-Max-sample-values"))
    assert line == _min_max_line(minimums, maximums)
    assert line == "Min-Max-sample-values: 10  200  20  210  30  220"


@pytest.mark.parametrize("name", ALL_PYRAMIDS)
def test_resolutions_smallest_first(app, name):
    sizes = [f"{lvl.width} {lvl.height}" for lvl in reversed(ref.levels(name))]
    assert only_line(obj(app, name, "Resolutions")) == "Resolutions:" + ",".join(sizes)


def test_resolutions_of_levels_that_do_not_halve(app):
    line = only_line(obj(app, ODD_LEVELS, "Resolutions"))
    assert line == "Resolutions:111 74,333 222,1000 667,3000 2000"


@pytest.mark.parametrize("name", [JPEG_TABLES, JPEG_SUBIFD, DEFLATE, NON_SQUARE, ODD_LEVELS, GREY])
def test_dpi_in_pixels_per_metre(app, name):
    with tifffile.TiffFile(helpers.fixture(name)) as tif:
        tags = tif.pages[0].tags
        assert int(tags.valueof("ResolutionUnit")) == 2  # inch
        xn, xd = tags.valueof("XResolution")
        yn, yd = tags.valueof("YResolution")
    expected = f"DPI:{xn / xd / 0.0254:f} {yn / yd / 0.0254:f}"  # an inch is 0.0254 m
    line = only_line(obj(app, name, "DPI"))
    assert line == expected
    assert line == "DPI:11811.023622 11811.023622"  # the fixtures say 300 dpi


def test_dpi_from_pixels_per_centimetre(app):
    # 10 px/cm across and 5 px/cm down: 1000 and 500 pixels per metre, in that order.
    assert only_line(obj(app, SAMPLE_RANGE, "DPI")) == "DPI:1000.000000 500.000000"


def test_dpi_omitted_without_a_resolution_unit(app):
    with tifffile.TiffFile(helpers.fixture(BIGTIFF)) as tif:
        assert int(tif.pages[0].tags.valueof("ResolutionUnit")) == 1  # RESUNIT NONE
    result = obj(app, BIGTIFF, "DPI")
    assert result.status == 200
    assert result.body == b""
    # ... and a following object still answers.
    assert ref.lines(obj(app, BIGTIFF, "DPI", "Max-size")) == ["Max-size:1200 800"]


@pytest.mark.parametrize("name", [JPEG_TABLES, DEFLATE, NON_SQUARE, BIGTIFF])
def test_colorspace_srgb(app, name):
    last = len(ref.levels(name)) - 1
    assert only_line(obj(app, name, "Colorspace")) == f"Colorspace,0-{last},0:0 0 3 3 0 1 2"


def test_colorspace_grey(app):
    last = len(ref.levels(GREY)) - 1
    assert last == 3
    assert only_line(obj(app, GREY, "Colorspace")) == "Colorspace,0-3,0:0 0 1 1 0"


def test_colorspace_matches_any_name_containing_it(app):
    # Clients ask for e.g. "colorspace,0-4,0"; SPEC 5: any name containing it.
    assert only_line(obj(app, JPEG_TABLES, "colorspace,0-4,0")) == "Colorspace,0-4,0:0 0 3 3 0 1 2"


def test_basic_info_is_four_objects_in_order(app):
    expected = (
        ref.lines(obj(app, GREY, "IIP-server"))
        + ref.lines(obj(app, GREY, "Max-size"))
        + ref.lines(obj(app, GREY, "Resolution-number"))
        + ref.lines(obj(app, GREY, "Colorspace"))
    )
    assert expected == ["IIP-server:3.65", "Max-size:2000 1500", "Resolution-number:4", "Colorspace,0-3,0:0 0 1 1 0"]
    assert ref.lines(obj(app, GREY, "Basic-info")) == expected


def test_optional_commands_listed_are_all_understood(app):
    line = only_line(helpers.call(app, "OBJ=IIP-opt-comm"))
    name, _, listed = line.partition(":")
    assert name == "IIP-opt-comm"
    commands = listed.split()
    assert {"CVT", "QLT", "JTL", "WID", "HEI", "RGN"} <= set(commands)
    for command in commands:
        # A listed command must never be an "unsupported command" (2 2) error.
        result = helpers.call(app, f"FIF={BIGTIFF}&{command}=1")
        if result.status == 400:
            assert not ref.iip_error(result).startswith("2 2"), command


def test_optional_objects_listed_are_all_answered(app):
    line = only_line(helpers.call(app, "OBJ=IIP-opt-obj"))
    name, _, listed = line.partition(":")
    assert name == "IIP-opt-obj"
    objects = listed.split()
    assert {"Tile-size", "Resolutions", "Resolution-number"} <= set(objects)
    for listed_object in objects:
        assert obj(app, JPEG_TABLES, listed_object).status == 200, listed_object


# -- metadata ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [DEFLATE, GREY, SAMPLE_RANGE, JPEG_TABLES])
@pytest.mark.parametrize("key", sorted(TAG_OBJECTS))
def test_metadata_object_is_the_raw_tag_value(app, name, key):
    value = tag(name, TAG_OBJECTS[key])
    result = obj(app, name, key)
    assert result.status == 200
    if value:
        assert ref.lines(result) == [value]
        assert result.header("Content-Type").startswith("text/plain")
    else:
        assert result.body == b"", f"{key} is not in {name}: no line"


def test_metadata_fixtures_cover_present_and_absent_values():
    # Guards the parametrised test above against silently testing only empty values.
    assert tag(DEFLATE, "Artist") == "Test Creator"
    assert tag(JPEG_TABLES, "Artist") == ""
    assert '"' in tag(DEFLATE, "ImageDescription") and "<" in tag(DEFLATE, "ImageDescription")


def test_metadata_names_are_case_insensitive(app):
    assert ref.lines(obj(app, DEFLATE, "Creator")) == [tag(DEFLATE, "Artist")]


def test_copyright_env_fills_missing_rights(fixtures):
    app = helpers.make_app(COPYRIGHT="Env Rights © Museum")
    assert tag(JPEG_TABLES, "Copyright") == ""
    assert ref.lines(obj(app, JPEG_TABLES, "rights")) == ["Env Rights © Museum"]
    # An image's own rights win over the environment.
    assert ref.lines(obj(app, DEFLATE, "rights")) == [tag(DEFLATE, "Copyright")]
    # It appears in Summary-info and metadata too.
    assert "Env Rights © Museum" in ref.lines(obj(app, JPEG_TABLES, "Summary-info"))
    assert json.loads(obj(app, JPEG_TABLES, "metadata").body)["rights"] == "Env Rights © Museum"


def test_rights_without_copyright_env_is_empty(app):
    assert obj(app, JPEG_TABLES, "rights").body == b""


def test_summary_info_lists_non_empty_values_in_spec_order(app):
    expected = [tag(DEFLATE, t) for t in ("Copyright", "ImageDescription", "Artist", "DateTime", "Software")]
    assert all(expected)
    assert ref.lines(obj(app, DEFLATE, "Summary-info")) == expected
    # Only the description is set in the libvips-written fixture.
    assert ref.lines(obj(app, JPEG_TABLES, "Summary-info")) == [tag(JPEG_TABLES, "ImageDescription")]


@pytest.mark.parametrize("name", [DEFLATE, SAMPLE_RANGE, JPEG_TABLES])
def test_metadata_object_is_valid_escaped_json(app, name):
    result = obj(app, name, "metadata")
    assert result.status == 200
    assert result.header("Content-Type") == "application/json"
    parsed = json.loads(result.body.decode("utf-8"))
    expected = {key: tag(name, t) for key, t in TAG_OBJECTS.items() if tag(name, t)}
    assert parsed == expected


def test_metadata_json_survives_quotes_backslashes_and_brackets(app):
    title = tag(SAMPLE_RANGE, "DocumentName")
    assert all(c in title for c in '"\\<>&')
    parsed = json.loads(obj(app, SAMPLE_RANGE, "metadata").body)
    assert parsed["title"] == title


# -- combinations and errors ------------------------------------------------------------------


def test_several_objects_are_concatenated_in_order(app):
    full = ref.levels(NON_SQUARE)[0]
    result = obj(app, NON_SQUARE, "IIP,1.0", "Max-size", "Tile-size", "Resolution-number", "Vertical-views")
    assert result.status == 200
    assert result.header("IIP") == "1.0"
    assert result.header("Content-Type") == NETFPX
    assert result.body.decode() == (
        f"Max-size:{full.width} {full.height}\r\n"
        f"Tile-size:{full.tile_width} {full.tile_height}\r\n"
        f"Resolution-number:{len(ref.levels(NON_SQUARE))}\r\n"
        "Vertical-views:90\r\n"
    )


def test_text_responses_carry_standard_headers(app):
    result = obj(app, DEFLATE, "Max-size")
    assert result.header("Content-Length") == str(len(result.body))
    assert result.header("X-Powered-By") == "IIPImage"
    assert result.header("ETag")
    assert result.header("Last-Modified")


@pytest.mark.parametrize("name", ["Foo", "NOT-AN-OBJECT", "Max-Sizes", "x"])
def test_unknown_object_is_error_3_2_with_the_lower_cased_name(app, name):
    result = obj(app, JPEG_TABLES, name)
    assert ref.iip_error(result) == f"3 2 {name.lower()}"
    expected_body = f"Error/{len(f'3 2 {name.lower()}')}:3 2 {name.lower()}\r\n"
    assert result.body.decode() == expected_body


@pytest.mark.parametrize("name", ["Max-size", "Resolutions", "Tile-size", "metadata", "rights", "Basic-info"])
def test_object_needing_an_image_without_fif_is_error_1_3(app, name):
    payload = ref.iip_error(helpers.call(app, f"OBJ={name}"))
    assert payload.split(" ")[:2] == ["1", "3"]


def test_unknown_object_after_good_ones_is_still_an_error(app):
    assert ref.iip_error(obj(app, JPEG_TABLES, "Max-size", "bogus")) == "3 2 bogus"
