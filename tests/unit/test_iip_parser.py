"""The IIP request parser (SPEC section 2, rule 5; section 4's argument forms).

Table-driven cases written from the SPEC, then properties checked with Hypothesis: any text
gives an IIPRequest or an IIPError and nothing else; the canonical form of a parsed request
parses back to the same request; the whole application never answers 5xx to IIP queries.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iipsrv_py.errors import IIPError
from iipsrv_py.model import Quality
from iipsrv_py.protocols.iip import (
    Command,
    Cvt,
    Fif,
    Hei,
    Ignored,
    IIPRequest,
    Lyr,
    Obj,
    ProtocolCommand,
    Qlt,
    Rgn,
    Sds,
    Tile,
    Wid,
    parse,
)
from tests import helpers


def commands(query: str) -> list[Command]:
    return list(parse(query).commands)


def error_code(query: str) -> str:
    with pytest.raises(IIPError) as caught:
        parse(query)
    return caught.value.code


# -- tables -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # Names are case-insensitive and come out upper case.
        ("fif=a.tif&wid=10&Cvt=PNG", [Fif("a.tif"), Wid(10), Cvt("png")]),
        ("FiF=a.tif&jTl=1,2", [Fif("a.tif"), Tile("JTL", 1, 2)]),
        # Empty tokens are skipped.
        ("&&FIF=a.tif&&&OBJ=max-size&", [Fif("a.tif"), Obj("max-size", "max-size")]),
        ("", []),
        ("&", []),
        # Pairs with an empty name or an empty value are ignored, whatever the name.
        ("=x&FIF=&WID=5", [Wid(5)]),
        ("FIF&HEI=7", [Hei(7)]),
        ("BOGUS=&=BOGUS&OBJ=iip-server", [Obj("iip-server", "iip-server")]),
        # Split at the first "=" only.
        ("FIF=a=b.tif", [Fif("a=b.tif")]),
        # Only FIF (of these commands) is URL-decoded: + is a space, %xx a byte.
        ("FIF=a%20b+c%2Fd.tif", [Fif("a b c/d.tif")]),
        ("FIF=%C3%A9t%C3%A9.tif", [Fif("été.tif")]),
        ("OBJ=Max%2Dsize", [Obj("max%2dsize", "max%2dsize")]),
        ("OBJ=IIP,1.0&OBJ=Basic-Info", [Obj("iip,1.0", "iip,1.0"), Obj("basic-info", "basic-info")]),
        ("OBJ= Max-size ", [Obj("max-size", " max-size ")]),
        # Commands keep their order: modifiers apply to what follows them.
        ("WID=1&FIF=a&HEI=2&WID=3", [Wid(1), Fif("a"), Hei(2), Wid(3)]),
        # Sizes: integers, iipsrv-style tolerance of a decimal point.
        ("WID=500.0", [Wid(500)]),
        ("HEI= 12 ", [Hei(12)]),
        ("LYR=3", [Lyr(3)]),
        # CVT: known names, tif accepted [fix], anything else JPEG [compat].
        ("CVT=JPG", [Cvt("jpeg")]),
        ("CVT=tif", [Cvt("tiff")]),
        ("CVT=TIFF", [Cvt("tiff")]),
        ("CVT=png", [Cvt("png")]),
        ("CVT=webp", [Cvt("webp")]),
        ("CVT=avif", [Cvt("avif")]),
        ("CVT=bmp", [Cvt("jpeg")]),
        ("CVT=jp%65g", [Cvt("jpeg")]),
        # Tiles: res,tile; negative numbers parse (and are 404 later, not a syntax error).
        ("JTL=3,7", [Tile("JTL", 3, 7)]),
        ("PTL=0,-1", [Tile("PTL", 0, -1)]),
        ("TTL=1,2&WTL=3,4&ATL=5,6", [Tile("TTL", 1, 2), Tile("WTL", 3, 4), Tile("ATL", 5, 6)]),
        # JTLS x,res,tile,y; ignored unless four values.
        ("JTLS=0,3,7,90", [Tile("JTLS", 3, 7, (0, 90))]),
        ("JTLS=3,7", [Ignored("JTLS", "3,7")]),
        # SDS x[,y].
        ("SDS=3", [Sds(3, 0)]),
        ("SDS=3,4", [Sds(3, 4)]),
        # Whole requests of other protocols, still percent-encoded; "+" is a space.
        ("IIIF=/a%2Fb.tif/info.json", [ProtocolCommand("IIIF", "/a%2Fb.tif/info.json")]),
        ("deepzoom=a+b.tif.dzi", [ProtocolCommand("DEEPZOOM", "a%20b.tif.dzi")]),
    ],
)
def test_parse_table(query, expected):
    assert commands(query) == expected


def test_typed_commands_name_their_encoding_and_protocol():
    assert [c.encoding for c in commands("JTL=0,0&PTL=0,0&WTL=0,0&ATL=0,0&TTL=0,0&JTLS=0,0,0,0")] == [
        "jpeg",
        "png",
        "webp",
        "avif",
        "tiff",
        "jpeg",
    ]
    assert parse("ZOOMIFY=a/ImageProperties.xml").protocol_command == ProtocolCommand(
        "ZOOMIFY", "a/ImageProperties.xml"
    )
    assert parse("FIF=a&DeepZoom=b.dzi&IIIF=c").protocol_command.protocol == "DeepZoom"
    assert parse("FIF=a&CVT=png").protocol_command is None


@pytest.mark.parametrize(
    ("raw", "quality"),
    [
        ("90", Quality(90, None)),
        ("1", Quality(1, None)),
        ("-1", Quality(-1, None)),  # lossless WebP/AVIF
        ("deflate:6", Quality(6, "deflate")),
        ("DEFLATE:6", Quality(6, "deflate")),
        ("jpeg:80", Quality(80, "jpeg")),
        ("lzw", Quality(None, "lzw")),
        ("zstd:", Quality(None, "zstd")),
        ("webp:-1", Quality(-1, "webp")),
        ("none", Quality(None, "none")),
    ],
)
def test_quality_forms(raw, quality):
    assert commands(f"QLT={raw}") == [Qlt(quality)]


@pytest.mark.parametrize("raw", ["foo", "gzip:5", "jpeg:abc", "9%30", "nan", "1e400", "jpeg:nan"])
def test_bad_quality_is_malformed(raw):
    assert error_code(f"QLT={raw}") == "2 1"


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("0.1,0.2,0.3,0.4", (0.1, 0.2, 0.3, 0.4)),
        ("0,0,1,1", (0.0, 0.0, 1.0, 1.0)),
        # Each value clamped to [0, 1].
        ("-0.5,0.2,1.5,0.3", (0.0, 0.2, 1.0, 0.3)),
        ("2,-3,7,9", (1.0, 0.0, 1.0, 1.0)),
        ("1e-3, 0.5 ,0.25,0.25", (0.001, 0.5, 0.25, 0.25)),
        # Ignored unless four values with w, h > 0.
        ("0.1,0.1,0.5", None),
        ("0.1,0.1,0.5,0.5,0.5", None),
        ("0.1,0.1,0,0.5", None),
        ("0.1,0.1,0.5,-1", None),
        ("0.5", None),
    ],
)
def test_region(raw, region):
    # The argument's text is kept only for an ignored region (its canonical form).
    assert commands(f"RGN={raw}") == [Rgn(region, raw if region is None else "")]


def test_region_spellings_are_one_request():
    assert parse("RGN=0,0,1,1") == parse("RGN=0.0,0.0,1.0,1.0") == parse(parse("RGN=0,0,1,1").canonical)


@pytest.mark.parametrize(
    "query",
    [
        "WID=abc",
        "WID=-5",
        "HEI=1%30",  # not URL-decoded, so not a number
        "WID=nan",
        "WID=inf",
        "WID=99999999999",
        "RGN=a,b,c,d",
        "RGN=nan,0,1,1",
        "RGN=0,0,1,",
        "JTL=x,y",
        "JTL=1",
        "JTL=1,2,3",
        "PTL=,",
        "SDS=a",
        "SDS=1,2,3",
        "JTLS=1,2,3,x",
    ],
)
def test_malformed_arguments(query):
    assert error_code(f"FIF=a.tif&{query}") == "2 1"


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("FOO=1", "FOO"),
        ("FIF=a.tif&XYZ=1&WID=5", "XYZ"),
        # ASCII case-insensitivity only: a ligature that upper-cases to "FIF" is not FIF.
        ("\ufb01f=a.tif", "\ufb01f"),
        ("\u017fDS=1", "\u017fDS"),
    ],
)
def test_unknown_command(query, name):
    with pytest.raises(IIPError) as caught:
        parse(query)
    assert caught.value.code == "2 2"
    assert caught.value.arg == name


def test_unknown_command_is_reported_even_after_good_ones():
    assert error_code("FIF=a.tif&OBJ=max-size&BOGUS=1") == "2 2"


def test_parsed_requests_are_frozen():
    request = parse("FIF=a.tif&WID=5")
    with pytest.raises(AttributeError):
        request.commands = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        request.commands[0].path = "b"  # type: ignore[misc]


# -- properties -------------------------------------------------------------------------------

COMMAND_NAMES = [
    *("FIF", "OBJ", "WID", "HEI", "RGN", "QLT", "CVT", "JTL", "PTL", "WTL", "ATL", "TTL", "JTLS", "SDS", "LYR"),
    *("IIIF", "DEEPZOOM", "ZOOMIFY"),
]


def _random_case(draw, word: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.lower() if flip else c for c, flip in zip(word, flips, strict=True))


number_text = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "-0", "1e400", "nan", "0x10", "1_0", "+5", ".5", "5.", "١٢"]),
)
argument = st.one_of(
    number_text,
    st.lists(number_text, min_size=0, max_size=6).map(",".join),
    st.sampled_from(["jpeg", "png", "tif", "deflate:6", "jpeg:80", "lzw", "iip,1.0", "Max-size", "a.tif"]),
    st.builds(lambda a, b: f"{a}:{b}", st.sampled_from(["jpeg", "deflate", "zstd", "x", ""]), number_text),
    st.text(alphabet=st.sampled_from("%&=,:+./\\-0123456789abcdefABCDEF \x00é\u2028"), max_size=12),
    st.text(max_size=8),
    st.text(max_size=8).map(lambda text: quote(text, safe="")),  # percent-encoded, for FIF
    st.text(alphabet=st.sampled_from("%25+&=a"), max_size=8),
    st.text(alphabet=st.sampled_from(" \t\n\x0b\xa0\u3000"), min_size=1, max_size=3),  # blank
    st.text(st.characters(categories=["Cs"]), max_size=3),  # lone surrogates (surrogateescape input)
)


@st.composite
def iip_queries(draw) -> str:
    tokens = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.one_of(st.sampled_from(COMMAND_NAMES), st.text(max_size=4)))
        name = _random_case(draw, name)
        separator = draw(st.sampled_from(["=", "=", "=", "", "=="]))
        tokens.append(name + separator + draw(argument))
    joiner = draw(st.sampled_from(["&", "&", "&&"]))
    return joiner.join(tokens)


@st.composite
def known_command_queries(draw) -> str:
    """Only commands the parser knows, with arguments of every shape: what round-trips."""
    tokens = [
        _random_case(draw, draw(st.sampled_from(COMMAND_NAMES))) + "=" + draw(argument)
        for _ in range(draw(st.integers(1, 4)))
    ]
    return "&".join(tokens)


def _parse_or_error(query: str) -> IIPRequest | IIPError:
    try:
        return parse(query)
    except IIPError as exc:
        return exc


@given(st.text() | st.text(st.characters(categories=["Cs", "Cc", "Zs"]) | st.sampled_from("%&=+")))
@settings(max_examples=500)
def test_any_text_gives_a_request_or_an_iip_error(text):
    assert isinstance(_parse_or_error(text), IIPRequest | IIPError)


@given(iip_queries())
@settings(max_examples=500)
def test_command_like_text_gives_a_request_or_an_iip_error(query):
    outcome = _parse_or_error(query)
    assert isinstance(outcome, IIPRequest | IIPError)
    if isinstance(outcome, IIPError):
        assert outcome.code in ("2 1", "2 2")
        assert outcome.body().startswith(b"Error/")


@given(st.one_of(known_command_queries(), iip_queries(), st.text()))
@settings(max_examples=1500)
def test_canonical_form_parses_to_the_same_request(query):
    request = _parse_or_error(query)
    if isinstance(request, IIPError):
        return
    again = parse(request.canonical)
    assert again == request
    assert again.canonical == request.canonical


def test_canonical_form_keeps_an_identifier_with_reserved_characters():
    request = parse("FIF=a%26b%3Dc%2520d+e.tif&WID=5")
    assert request.commands[0] == Fif("a&b=c%20d e.tif")
    assert parse(request.canonical) == request


# -- the whole application --------------------------------------------------------------------

FIXTURE_IMAGES = ["tif-rgb-1200x800-3lvl-128tile-jpeg-bigtiff.tif", "tif-grey-2000x1500-4lvl-256tile-none.tif"]


@pytest.fixture(scope="module")
def capped_app():
    # MAX_CVT keeps each example fast; capping is itself part of what gets exercised.
    return helpers.make_app(MAX_CVT="1024", CORS="*")


fraction = st.floats(-0.5, 1.5, allow_nan=False) | st.sampled_from([0.0, 1.0, 1e-9])
modifier = st.one_of(
    st.integers(-5, 2500).map(lambda n: f"WID={n}"),
    st.integers(-5, 2500).map(lambda n: f"HEI={n}"),
    st.lists(fraction, min_size=3, max_size=5).map(lambda v: "RGN=" + ",".join(map(str, v))),
    st.sampled_from(["QLT=1", "QLT=100", "QLT=-1", "QLT=0", "QLT=deflate:9", "QLT=jpeg:5", "QLT=lzw", "QLT=zstd:3"]),
    st.sampled_from(["QLT=webp:-1", "QLT=none", "SDS=0", "SDS=3,90"]),
)
renderer = st.one_of(
    st.sampled_from(["jpeg", "png", "webp", "avif", "tif", "bmp"]).map(lambda f: f"CVT={f}"),
    st.builds(
        "{}={},{}".format,
        st.sampled_from(["JTL", "PTL", "WTL", "ATL", "TTL"]),
        st.integers(0, 4) | st.just(-1),
        st.integers(0, 50) | st.just(-1),
    ),
    st.builds("JTLS=0,{},{},0".format, st.integers(0, 4), st.integers(0, 50)),
    st.sampled_from(
        ["Max-size", "Resolutions", "metadata", "Summary-info", "DPI", "IIP,1.0", "colorspace", "nope"]
    ).map(lambda o: f"OBJ={o}"),
)


@st.composite
def app_queries(draw) -> str:
    """Mostly well-formed renderings of a real image, so the pipeline is what gets exercised;
    sometimes a bad identifier, a missing FIF or a garbage token from ``iip_queries``."""
    image = draw(st.sampled_from([*FIXTURE_IMAGES * 3, "missing.tif", "../x.tif", "%00"]))
    tokens = [f"FIF={image}"] if draw(st.sampled_from([True, True, True, True, False])) else []
    tokens += draw(st.lists(modifier, max_size=4))
    tokens += draw(st.lists(renderer, min_size=1, max_size=2))
    if draw(st.sampled_from([False, False, False, True])):
        tokens.insert(draw(st.integers(0, len(tokens))), draw(iip_queries()))
    return "&".join(tokens)


@given(query=app_queries(), method=st.sampled_from(["GET", "GET", "HEAD", "POST"]))
@settings(max_examples=200, deadline=None)
def test_app_never_answers_5xx_to_iip_queries(capped_app, query, method):
    result = helpers.call(capped_app, query, method=method)
    assert result.status < 500, (query, result.status, result.body[:200])
    if method != "HEAD":
        assert result.header("Content-Length") == str(len(result.body))
    assert result.header("Access-Control-Allow-Origin") == "*"
