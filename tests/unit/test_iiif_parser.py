"""The IIIF Image API request parser (SPEC section 8), on the specifications' own examples.

Tables: the URL examples of IIIF Image API 3.0 (https://iiif.io/api/image/3.0/) and 2.1
(https://iiif.io/api/image/2.1/), sections 4.1-4.6 (region, size, rotation, quality, format,
order of implementation) and 9 (URI encoding), each with the value the specification says it
means; then the forms each version forbids, which must be a BadRequest (HTTP 400).

Properties (Hypothesis): any text, and any composition of path segments built from the
grammar's pieces, gives an ImageRequest, InfoRequest or BaseRequest or raises BadRequest and
nothing else; a parsed image request's canonical form parses back to the same request.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iipsrv_py.errors import BadRequest, NotFound
from iipsrv_py.planning import Region, Size
from iipsrv_py.protocols.iiif import (
    BaseRequest,
    ImageRequest,
    InfoRequest,
    parse,
    region_text,
    size_text,
)
from tests import helpers

VERSIONS = (2, 3)


def image(path: str, version: int = 3, extensions: bool = False) -> ImageRequest:
    request = parse(path, version, extensions)
    assert isinstance(request, ImageRequest), request
    return request


def rejected(path: str, version: int, extensions: bool = False) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        parse(path, version, extensions)
    assert caught.value.status == 400
    return caught.value


# -- region (3.0 and 2.1 section 4.1: the same six examples) -----------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("full", Region("full")),
        ("square", Region("square")),
        ("125,15,120,140", Region("pixels", 125, 15, 120, 140)),
        ("pct:41.6,7.5,40,70", Region("percent", 41.6, 7.5, 40, 70)),
        ("125,15,200,200", Region("pixels", 125, 15, 200, 200)),  # beyond the edge: cropped later
        ("pct:41.6,7.5,66.6,100", Region("percent", 41.6, 7.5, 66.6, 100)),
    ],
)
def test_spec_region_examples(version: int, text: str, expected: Region) -> None:
    size = "max" if version == 3 else "full"
    assert image(f"abcd1234/{text}/{size}/0/default.jpg", version).region == expected


# -- size --------------------------------------------------------------------------------------

# What each size means to the planner: IIIF refuses what it cannot serve (strict); in 3.0 a size
# without "^" may never exceed the region (upscale False), with it the server decides (None),
# as it does for every 2.1 size.
V3_SIZES = [  # 3.0 section 4.2, both columns of the examples table
    ("max", Size("max", upscale=False, strict=True)),
    ("^max", Size("max", upscale=None, strict=True)),
    ("150,", Size("width", width=150, upscale=False, strict=True)),
    ("^360,", Size("width", width=360, upscale=None, strict=True)),
    (",150", Size("height", height=150, upscale=False, strict=True)),
    ("^,240", Size("height", height=240, upscale=None, strict=True)),
    ("pct:50", Size("percent", percent=50, upscale=False, strict=True)),
    ("^pct:120", Size("percent", percent=120, upscale=None, strict=True)),
    ("225,100", Size("exact", 225, 100, upscale=False, strict=True)),
    ("^360,360", Size("exact", 360, 360, upscale=None, strict=True)),
    ("!225,100", Size("fit", 225, 100, upscale=False, strict=True)),
    ("^!360,360", Size("fit", 360, 360, upscale=None, strict=True)),
]
V2_SIZES = [  # 2.1 section 4.2
    ("full", Size("max", strict=True)),
    ("max", Size("max", strict=True)),
    ("150,", Size("width", width=150, strict=True)),
    (",150", Size("height", height=150, strict=True)),
    ("pct:50", Size("percent", percent=50, strict=True)),
    ("pct:120", Size("percent", percent=120, strict=True)),  # 2.1: above 100 is allowed (sizeAboveFull)
    ("225,100", Size("exact", 225, 100, strict=True)),
    ("!225,100", Size("fit", 225, 100, strict=True)),
]


@pytest.mark.parametrize(("text", "expected"), V3_SIZES)
def test_spec_v3_size_examples(text: str, expected: Size) -> None:
    assert image(f"abcd1234/full/{text}/0/default.jpg", 3).size == expected


@pytest.mark.parametrize(("text", "expected"), V2_SIZES)
def test_spec_v2_size_examples(text: str, expected: Size) -> None:
    assert image(f"abcd1234/full/{text}/0/default.jpg", 2).size == expected


# -- rotation, quality, format -----------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("text", "angle", "mirror"),
    [
        ("0", 0, False),
        ("180", 180, False),
        ("90", 90, False),
        ("22.5", 22.5, False),
        ("!0", 0, True),
        ("!180", 180, True),
        ("360", 360, False),
        ("!345", 345, True),  # 3.0 section 4.6
        ("0.9", 0.9, False),  # 3.0 section 4.7
    ],
)
def test_spec_rotation_examples(version: int, text: str, angle: float, mirror: bool) -> None:
    request = image(f"abcd1234/full/max/{text}/default.png", version)
    assert (request.rotation, request.mirror) == (angle, mirror)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("quality", ["default", "color", "gray", "bitonal"])
def test_spec_qualities(version: int, quality: str) -> None:
    assert image(f"abcd1234/full/max/0/{quality}.jpg", version).quality == quality


def test_v2_native_quality_is_the_default() -> None:
    """2.x still accepts 1.1's ``native``; it means what ``default`` means."""
    assert image("abcd1234/full/full/0/native.jpg", 2).quality == "default"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tif", "avif"])
def test_served_formats(version: int, fmt: str) -> None:
    assert image(f"abcd1234/full/max/0/default.{fmt}", version).format == fmt


@pytest.mark.parametrize("quality", ["negative", "stretch", "equalization", "log"])
def test_extension_qualities_only_when_enabled(quality: str) -> None:
    """IIIF_EXTENSIONS=1 adds iipsrv's extra qualities; without it they are unknown (400)."""
    for version in VERSIONS:
        assert image(f"a/full/max/0/{quality}.png", version, extensions=True).quality == quality
        rejected(f"a/full/max/0/{quality}.png", version)


def test_spec_order_of_implementation_example() -> None:
    """3.0 section 4.6: ``.../125,15,120,140/90,/!345/gray.jpg``."""
    request = image("abcd1234/125,15,120,140/90,/!345/gray.jpg")
    assert request.region == Region("pixels", 125, 15, 120, 140)
    assert request.size == Size("width", width=90, upscale=False, strict=True)
    assert (request.rotation, request.mirror, request.quality, request.format) == (345, True, "gray", "jpg")


# -- identifiers and URI encoding (section 9 of both versions) --------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("path", "identifier", "params"),
    [
        ("id1/full/{max}/0/default.jpg", "id1", ("full", "max", 0, "default", "jpg")),
        ("id1/0,10,100,200/pct:50/90/default.png", "id1", ("0,10,100,200", "pct:50", 90, "default", "png")),
        ("id1/pct:10,10,80,80/50,/22.5/color.jpg", "id1", ("pct:10,10,80,80", "50,", 22.5, "color", "jpg")),
        ("bb157hs6068/full/{max}/270/gray.jpg", "bb157hs6068", ("full", "max", 270, "gray", "jpg")),
        ("ark:%2F12025%2F654xz321/full/{max}/0/default.jpg", "ark:/12025/654xz321", None),
        ("urn:foo:a123,456/full/{max}/0/default.jpg", "urn:foo:a123,456", None),
        (
            "urn:sici:1046-8188(199501)13:1%253C69:FTTHBI%253E2.0.TX;2-4/full/{max}/0/default.jpg",
            "urn:sici:1046-8188(199501)13:1%3C69:FTTHBI%3E2.0.TX;2-4",
            None,
        ),
        ("http:%2F%2Fexample.com%2F%3F54%23a/full/{max}/0/default.jpg", "http://example.com/?54#a", None),
    ],
)
def test_spec_uri_encoding_examples(version: int, path: str, identifier: str, params: tuple | None) -> None:
    """The table of section 9.  Its rows without a format get ``.jpg``: a format is required
    (section 4.5) and the table is only about encoding."""
    request = image(path.format(max="max" if version == 3 else "full"), version)
    assert request.identifier == identifier
    if params is not None:
        region, size, rotation, quality, fmt = params
        assert region_text(request.region) == region
        assert size_text(request.size, version) == size
        assert (request.rotation, request.quality, request.format) == (rotation, quality, fmt)


@pytest.mark.parametrize("version", VERSIONS)
def test_identifier_slashes_escaped_or_literal(version: int) -> None:
    escaped = image("dir%2Fsub%2Fa.tif/full/max/0/default.jpg", version)
    literal = image("dir/sub/a.tif/full/max/0/default.jpg", version)
    assert escaped.identifier == literal.identifier == "dir/sub/a.tif"
    assert escaped.raw_identifier == "dir%2Fsub%2Fa.tif"  # kept as sent, for the ids built from it
    assert literal.raw_identifier == "dir/sub/a.tif"
    assert parse("dir%2Fsub%2Fa.tif/info.json", version) == InfoRequest("dir/sub/a.tif", "dir%2Fsub%2Fa.tif")
    assert parse("dir/sub/a.tif/info.json", version) == InfoRequest("dir/sub/a.tif", "dir/sub/a.tif")


@pytest.mark.parametrize("version", VERSIONS)
def test_info_and_base_requests(version: int) -> None:
    assert parse("abcd1234/info.json", version) == InfoRequest("abcd1234", "abcd1234")
    assert parse("/abcd1234/info.json", version) == InfoRequest("abcd1234", "abcd1234")
    assert parse("abcd1234", version) == BaseRequest("abcd1234", "abcd1234")
    assert parse("abcd1234/", version) == BaseRequest("abcd1234", "abcd1234")
    assert parse("a%20b%2Fc", version) == BaseRequest("a b/c", "a%20b%2Fc")
    # Unescaped characters a client should have encoded are escaped in the raw form, so that
    # an id built from it is a valid URL.
    assert parse("a b", version) == BaseRequest("a b", "a%20b")
    assert parse("%C3%A4%C3%B6%C3%BC/info.json", version).identifier == "äöü"


def test_percent_encoded_parameters_are_decoded() -> None:
    """Only the identifier may need encoding, but encoding anything else is not an error
    (section 9: "percent-encoding other characters introduces no ambiguity")."""
    request = image("a/pct%3A10,10,80,80/%5E%21360,360/%2190/gray.png")
    assert request.region == Region("percent", 10, 10, 80, 80)
    assert request.size == Size("fit", 360, 360, upscale=None, strict=True)
    assert (request.rotation, request.mirror) == (90, True)


# -- what each version forbids: 400 -------------------------------------------------------------

ALWAYS_BAD = [
    # region
    "a/0,0,0,10/max/0/default.jpg",  # zero width
    "a/0,0,10,0/max/0/default.jpg",
    "a/pct:0,0,0,10/max/0/default.jpg",
    "a/-1,0,10,10/max/0/default.jpg",  # negative
    "a/1,2,3/max/0/default.jpg",  # three numbers
    "a/1,2,3,4,5/max/0/default.jpg",
    "a/pct:1,2,3/max/0/default.jpg",
    "a/pct:/max/0/default.jpg",
    "a/Full/max/0/default.jpg",  # case matters
    "a/squares/max/0/default.jpg",
    "a/1e2,0,10,10/max/0/default.jpg",  # digits and "." only (3.0 section 4.7)
    "a/+1,0,10,10/max/0/default.jpg",
    "a/١٢٥,15,120,140/max/0/default.jpg",  # non-ASCII digits
    "a/0x10,0,10,10/max/0/default.jpg",
    "a/nan,0,10,10/max/0/default.jpg",
    f"a/{'9' * 400},0,10,10/max/0/default.jpg",  # overflows a float
    "a/0,0,10,10%0A/max/0/default.jpg",  # trailing newline
    # size
    "a/full/0,/0/default.jpg",  # zero
    "a/full/,0/0/default.jpg",
    "a/full/0,0/0/default.jpg",
    "a/full/!0,10/0/default.jpg",
    "a/full/pct:0/0/default.jpg",
    "a/full/pct:-5/0/default.jpg",
    "a/full/-5,/0/default.jpg",  # negative
    "a/full/,/0/default.jpg",
    "a/full/!10,/0/default.jpg",  # !w,h needs both
    "a/full/!,10/0/default.jpg",
    "a/full/10/0/default.jpg",  # no comma
    "a/full/pct:abc/0/default.jpg",
    "a/full/pct:nan/0/default.jpg",
    "a/full/pct:inf/0/default.jpg",
    "a/full/1.5,/0/default.jpg",  # pixel sizes are integers
    "a/full/١٥٠,/0/default.jpg",
    f"a/full/{'9' * 5000},/0/default.jpg",  # more digits than Python converts
    "a/full/150,%0A/0/default.jpg",
    "a/full/MAX/0/default.jpg",
    # rotation
    "a/full/max/361/default.jpg",  # above 360
    "a/full/max/360.5/default.jpg",
    "a/full/max/-90/default.jpg",  # negative
    "a/full/max/!!90/default.jpg",
    "a/full/max/!/default.jpg",
    "a/full/max/abc/default.jpg",
    "a/full/max/9e1/default.jpg",
    "a/full/max/٩٠/default.jpg",
    f"a/full/max/{'9' * 400}/default.jpg",
    # quality and format
    "a/full/max/0/grey.jpg",  # American spelling only
    "a/full/max/0/Default.jpg",
    "a/full/max/0/colour.jpg",
    "a/full/max/0/negative.jpg",  # only with IIIF_EXTENSIONS
    "a/full/max/0/default.gif",  # listed by the spec, not served
    "a/full/max/0/default.jp2",
    "a/full/max/0/default.pdf",
    "a/full/max/0/default.JPG",
    "a/full/max/0/default.jpeg",
    "a/full/max/0/default.",
    "a/full/max/0/.jpg",
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", ALWAYS_BAD)
def test_invalid_in_both_versions(version: int, path: str) -> None:
    path = path.replace("/max/", "/full/") if version == 2 else path
    rejected(path, version)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", ["info.json", "/info.json", "", "/"])
def test_nothing_to_identify_is_no_route(version: int, path: str) -> None:
    """A path under the IIIF prefix that names no identifier matches none of IIIF's routes: 404."""
    with pytest.raises(NotFound):
        parse(path, version)


@pytest.mark.parametrize(
    "size",
    ["full", "pct:101", "pct:120", "^full", "^", "^^max", "^0,", "^pct:0", "^!0,5", "^,"],
)
def test_invalid_v3_sizes(size: str) -> None:
    """3.0 replaced ``full`` with ``max``; above 100% needs ``^``."""
    rejected(f"a/full/{size}/0/default.jpg", 3)


@pytest.mark.parametrize(
    "size", ["^max", "^360,", "^,240", "^pct:120", "^360,360", "^!360,360", "^full", "pct:0", "0,"]
)
def test_invalid_v2_sizes(size: str) -> None:
    """``^`` is new in 3.0."""
    rejected(f"a/full/{size}/0/default.jpg", 2)


@pytest.mark.parametrize("version", VERSIONS)
def test_native_is_not_a_v3_quality(version: int) -> None:
    if version == 3:
        rejected("a/full/max/0/native.jpg", 3)
    else:
        image("a/full/full/0/native.jpg", 2)


def test_error_message_never_echoes_control_characters() -> None:
    error = rejected("a/full/max/0/%00%1B[31m.jpg", 3)
    assert all(c.isprintable() for c in error.message)


# -- canonical form ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "_"), V3_SIZES)
def test_canonical_form_of_v3_examples(text: str, _: Size) -> None:
    request = image(f"id/pct:41.6,7.5,40,70/{text}/!22.5/gray.png", 3)
    assert request.canonical == f"pct:41.6,7.5,40,70/{text}/!22.5/gray.png"
    assert image(f"id/{request.canonical}", 3) == request


# -- properties ---------------------------------------------------------------------------------

RESULTS = (ImageRequest, InfoRequest, BaseRequest)


def _outcome(path: str, version: int, extensions: bool) -> object:
    try:
        return parse(path, version, extensions)
    except (BadRequest, NotFound) as exc:
        assert exc.status in (400, 404)
        return exc


def mostly(valid: st.SearchStrategy[str], odd: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``valid`` nine times in ten, else ``odd``: most paths parse, so that what is checked
    of a parsed request gets checked often."""
    return st.sampled_from([valid] * 9 + [odd]).flatmap(lambda strategy: strategy)


decimals = st.one_of(
    st.integers(0, 10**6).map(str),
    st.floats(0, 1e6, allow_nan=False).map(lambda f: f"{f:f}".rstrip("0")),
    st.sampled_from(["0.0000001", ".5", "5.", "100", "360", "22.5"]),
)
numbers = mostly(
    decimals,
    st.sampled_from(["", "-0", "-5", "1e400", "nan", "inf", "1_0", "+5", "0x1", "١٢", "9" * 400, "9" * 5000])
    | st.sampled_from([" 1", "1 ", "1\n"]),
)
regions = mostly(
    st.one_of(
        st.sampled_from(["full", "square"]),
        st.lists(numbers, min_size=4, max_size=4).map(",".join),
        st.lists(numbers, min_size=4, max_size=4).map(lambda v: "pct:" + ",".join(v)),
    ),
    st.sampled_from(["pct:", "Full", "", "1,2,3", "1,2,3,4,5", "pct:1,2,3"]),
)
pixels = mostly(st.integers(1, 5000).map(str), numbers)
angles = mostly(st.integers(0, 360).map(str) | st.floats(0, 360).map(lambda f: f"{f:f}".rstrip("0")), numbers)
sizes = st.one_of(
    mostly(st.sampled_from(["full", "max", "^max"]), st.sampled_from(["^", "!", ",", "pct:", "^^max"])),
    st.builds(
        "{}{},{}".format,
        mostly(st.sampled_from(["", "^", "!", "^!"]), st.just("!^")),
        mostly(pixels, st.just("")),
        mostly(pixels, st.just("")),
    ),
    st.builds(",{}".format, pixels),
    st.builds("{}{},".format, st.sampled_from(["", "^"]), pixels),
    st.builds("{}pct:{}".format, st.sampled_from(["", "^"]), mostly(st.integers(1, 100).map(str), numbers)),
)
rotations = st.builds("{}{}".format, mostly(st.sampled_from(["", "!"]), st.just("!!")), angles)
qualities = mostly(
    st.sampled_from(["default", "color", "gray", "bitonal", "native", "negative", "stretch", "log"]),
    st.sampled_from(["grey", "", "Default"]),
)
formats = mostly(st.sampled_from(["jpg", "png", "webp", "tif", "avif"]), st.sampled_from(["gif", "JPG", "", "a.b"]))
identifiers = mostly(
    st.sampled_from(["a.tif", "dir%2Fa.tif", "dir/a.tif", "a%20b", "%C3%A4", "info.json"])
    | st.text(min_size=1, max_size=12),
    st.sampled_from(["", "/", "%", "%zz", "%FF", "%00", "..", "a/"]),
)


@st.composite
def iiif_paths(draw) -> str:
    """Paths made of the grammar's pieces, valid or nearly so, in every arrangement."""
    pieces = [draw(identifiers), draw(regions), draw(sizes), draw(rotations), draw(qualities)]
    image_path = "/".join(pieces) + "." + draw(formats)
    segments = image_path.split("/")
    kind = draw(st.sampled_from(["image"] * 6 + ["info", "base", "shuffled", "dropped", "encoded"]))
    if kind == "info":
        return draw(identifiers) + "/info.json"
    if kind == "base":
        return draw(identifiers)
    if kind == "shuffled":
        return "/".join(draw(st.permutations(segments)))
    if kind == "dropped" and len(segments) > 1:
        del segments[draw(st.integers(0, len(segments) - 1))]
        return "/".join(segments)
    if kind == "encoded":
        return "".join(f"%{ord(c):02X}" if c in ",:!^" and draw(st.booleans()) else c for c in image_path)
    return image_path


@given(
    path=st.text() | st.text(st.characters(categories=["Cs", "Cc", "Zs", "Nd"]) | st.sampled_from("/%.,:!^")),
    version=st.sampled_from(VERSIONS),
    extensions=st.booleans(),
)
@settings(max_examples=1000)
def test_any_text_gives_a_request_or_bad_request(path: str, version: int, extensions: bool) -> None:
    assert isinstance(_outcome(path, version, extensions), (*RESULTS, BadRequest, NotFound))


@given(path=iiif_paths(), version=st.sampled_from(VERSIONS), extensions=st.booleans())
@settings(max_examples=2000)
def test_composed_paths_give_a_request_or_bad_request(path: str, version: int, extensions: bool) -> None:
    outcome = _outcome(path, version, extensions)
    assert isinstance(outcome, (*RESULTS, BadRequest, NotFound))
    if isinstance(outcome, ImageRequest):
        # What parsed is within the grammar's ranges.
        assert 0 <= outcome.rotation <= 360
        assert outcome.format in ("jpg", "png", "webp", "tif", "avif")
        assert outcome.region.kind in ("full", "square") or (outcome.region.w > 0 and outcome.region.h > 0)
        size = outcome.size
        assert size.kind in ("max", "width", "height", "percent", "exact", "fit")
        assert size.kind not in ("width", "exact", "fit") or size.width > 0
        assert size.kind not in ("height", "exact", "fit") or size.height > 0
        assert size.strict
        assert size.kind != "percent" or 0 < size.percent <= (100 if size.upscale is False else 1e308)
        assert size.upscale is None or (version == 3 and size.upscale is False)
        # The canonical form names the same request.
        again = parse(f"{outcome.raw_identifier}/{outcome.canonical}", version, extensions)
        assert again == outcome


# -- the whole application ------------------------------------------------------------------------

APP_IMAGES = ["tif-rgb-1200x800-3lvl-128tile-jpeg-bigtiff.tif", "tif-grey-2000x1500-4lvl-256tile-none.tif"]


@pytest.fixture(scope="module")
def iiif_app():
    # MAX_CVT keeps each example fast; the 413 it gives is itself part of what gets exercised.
    return helpers.make_app(URI_MAP="iiif=>IIIF", MAX_CVT="512", CORS="*", IIIF_EXTENSIONS="1")


@st.composite
def app_paths(draw) -> str:
    """Paths of the grammar's pieces on real images (sometimes missing ones)."""
    path = draw(iiif_paths())
    image = draw(st.sampled_from([*APP_IMAGES * 4, "missing.tif", "..%2Fx.tif", "not-an-image.tif"]))
    _, _, rest = path.partition("/")
    return f"{image}/{rest}" if rest and draw(st.sampled_from([True] * 4 + [False])) else path


@given(path=app_paths(), version=st.sampled_from(VERSIONS), method=st.sampled_from(["GET", "GET", "HEAD"]))
@settings(max_examples=300, deadline=None)
def test_app_answers_iiif_paths_without_5xx(iiif_app, path: str, version: int, method: str) -> None:
    accept = f'application/ld+json;profile="http://iiif.io/api/image/{version}/context.json"'
    result = helpers.call(
        iiif_app, "", method=method, path="/iiif/" + quote(path, safe="/%:,!^"), headers={"Accept": accept}
    )
    assert result.status in (200, 303, 400, 404, 413, 414, 415), (path, result.status, result.body[:200])
    if method == "GET":
        assert result.header("Content-Length") == str(len(result.body))
    assert result.header("Access-Control-Allow-Origin") == "*"
