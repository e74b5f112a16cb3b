"""The slide REST API's parser: every route, ids with "/" (as %2F or as segments), bad levels,
extensions and qualities, clamped limits and sizes, unknown sub-paths (404), and the command
line's ROOT."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iipsrv_py import cli
from iipsrv_py.errors import BadRequest, NotFound, ServerError, rest_code
from iipsrv_py.protocols import rest
from iipsrv_py.settings import from_environ, with_root


def error_of(path: str, query: str = "") -> tuple[int, str]:
    with pytest.raises(ServerError) as caught:
        rest.parse(path, query)
    return caught.value.status, rest_code(caught.value)


@pytest.mark.parametrize(
    ("path", "claimed"),
    [
        ("/health", True),
        ("/slides", True),
        ("/slides/", True),
        ("/slides/a.svs", True),
        ("/tiles", True),
        ("/tiles/a.svs/0/0/0", True),
        ("/view", True),
        ("/view/a.svs", True),
        ("/", False),
        ("/healthz", False),
        ("/health/x", False),
        ("/slidesx", False),
        ("/fcgi-bin/iipsrv.fcgi", False),
        ("/iiif/a.tif/info.json", False),
    ],
)
def test_claimed_paths(path: str, claimed: bool) -> None:
    assert rest.claims(path) is claimed


def test_health_and_list() -> None:
    assert rest.parse("/health") == rest.Health()
    assert rest.parse("/health").slide_id is None
    assert rest.parse("/slides") == rest.SlideList()
    assert rest.parse("/slides/") == rest.SlideList()
    cursor = rest.encode_cursor("a/b.svs")
    parsed = rest.parse("/slides", f"limit=10&cursor={cursor}&prefix=a%2F&search=B")
    assert parsed == rest.SlideList(10, "a/b.svs", "a/", "B")
    assert parsed.slide_id is None


@pytest.mark.parametrize(("limit", "expected"), [("0", 1), ("-5", 1), ("1", 1), ("1000", 1000), ("99999", 1000)])
def test_limit_is_clamped(limit: str, expected: int) -> None:
    route = rest.parse("/slides", f"limit={limit}")
    assert isinstance(route, rest.SlideList) and route.limit == expected


def test_limit_must_be_a_number() -> None:
    assert error_of("/slides", "limit=ten") == (400, "invalid_limit")


@pytest.mark.parametrize("cursor", ["!!!", "a", rest.encode_cursor("x") + "B", "%FF"])
def test_invalid_cursor(cursor: str) -> None:
    assert error_of("/slides", f"cursor={cursor}") == (400, "invalid_cursor")


@given(st.text(min_size=1))
def test_cursor_round_trips(last_id: str) -> None:
    assert rest.decode_cursor(rest.encode_cursor(last_id)) == last_id


@pytest.mark.parametrize(
    "path",
    ["/slides/a/b.svs", "/slides/a%2Fb.svs", "/slides/a%2fb.svs", "/slides/a/b.svs/"],
)
def test_slide_ids_with_slashes(path: str) -> None:
    assert rest.parse(path) == rest.SlideInfo("a/b.svs")


def test_slide_sub_resources() -> None:
    assert rest.parse("/slides/a/b.svs/thumbnail") == rest.Thumbnail("a/b.svs")
    assert rest.parse("/slides/a%2Fb.svs/thumbnail", "max_size=300") == rest.Thumbnail("a/b.svs", 300, 300, False)
    assert rest.parse("/slides/a.svs/associated/label") == rest.Associated("a.svs", "label")
    assert rest.parse("/slides/x/a.svs/associated/macro") == rest.Associated("x/a.svs", "macro")
    assert rest.parse("/slides/a.svs/associated/thumbnail") == rest.Associated("a.svs", "thumbnail")
    assert rest.parse("/slides/a.svs/associated/dzi") == rest.Associated("a.svs", "dzi")
    assert rest.parse("/slides/a.svs/dzi") == rest.Dzi("a.svs")
    assert rest.parse("/slides/a.svs/dzi_files/12/3_4.jpeg") == rest.DziTile("a.svs", 12, 3, 4, "jpeg")
    assert rest.parse("/slides/d/a.svs/dzi_files/0/0_0.png") == rest.DziTile("d/a.svs", 0, 0, 0, "png")


def test_encoded_slash_never_makes_a_sub_resource() -> None:
    """A segment sent with %2F is part of the id, whatever it ends with."""
    assert rest.parse("/slides/a%2Fdzi") == rest.SlideInfo("a/dzi")
    assert rest.parse("/slides/a%2Fthumbnail") == rest.SlideInfo("a/thumbnail")
    # A slide named like a sub-resource, alone, is a slide.
    assert rest.parse("/slides/thumbnail") == rest.SlideInfo("thumbnail")


@pytest.mark.parametrize(
    ("requested", "size", "clamped"),
    [("10", 64, True), ("64", 64, False), ("512", 512, False), ("2048", 2048, False), ("99999", 2048, True)],
)
def test_thumbnail_size_is_clamped(requested: str, size: int, clamped: bool) -> None:
    route = rest.parse("/slides/a.svs/thumbnail", f"max_size={requested}")
    assert route == rest.Thumbnail("a.svs", size, int(requested), clamped)


def test_thumbnail_size_must_be_a_number() -> None:
    assert error_of("/slides/a.svs/thumbnail", "max_size=big") == (400, "invalid_max_size")


def test_tiles() -> None:
    assert rest.parse("/tiles/a.svs/0/1/2") == rest.Tile("a.svs", 0, 1, 2, "jpeg", 80)
    assert rest.parse("/tiles/a.svs/0/1/2.jpg") == rest.Tile("a.svs", 0, 1, 2, "jpeg", 80)
    assert rest.parse("/tiles/a.svs/0/1/2.JPEG") == rest.Tile("a.svs", 0, 1, 2, "jpeg", 80)
    assert rest.parse("/tiles/a.svs/3/1/2.png", "quality=95") == rest.Tile("a.svs", 3, 1, 2, "png", 95)
    assert rest.parse("/tiles/a.svs/0/0/0.webp", "quality=1") == rest.Tile("a.svs", 0, 0, 0, "webp", 1)
    assert rest.parse("/tiles/d/e/a.svs/0/0/0.jpg") == rest.Tile("d/e/a.svs", 0, 0, 0)
    assert rest.parse("/tiles/d%2Fa.svs/0/0/0.jpg").slide_id == "d/a.svs"
    # Other parameters (a signature's) are left alone.
    assert rest.parse("/tiles/a.svs/0/0/0.jpg", "quality=80&exp=1&sig=ab") == rest.Tile("a.svs", 0, 0, 0)


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        ("/tiles/a.svs/x/0/0.jpg", "", (400, "invalid_level")),
        ("/tiles/a.svs/-1/0/0.jpg", "", (400, "invalid_level")),
        ("/tiles/a.svs/0/x/0.jpg", "", (400, "invalid_tile")),
        ("/tiles/a.svs/0/0/y.jpg", "", (400, "invalid_tile")),
        ("/tiles/a.svs/0/0/0.gif", "", (400, "invalid_format")),
        ("/tiles/a.svs/0/0/0.", "", (400, "invalid_format")),
        ("/tiles/a.svs/0/0/0.jpg.png", "", (400, "invalid_tile")),
        ("/tiles/a.svs/0/0/0.jpg", "quality=0", (400, "invalid_quality")),
        ("/tiles/a.svs/0/0/0.jpg", "quality=101", (400, "invalid_quality")),
        ("/tiles/a.svs/0/0/0.jpg", "quality=high", (400, "invalid_quality")),
        ("/tiles/a.svs/0/0/0.jpg", "quality=-3", (400, "invalid_quality")),
        ("/slides/a.svs/dzi_files/1/0_0.gif", "", (400, "invalid_format")),
    ],
)
def test_bad_requests(path: str, query: str, expected: tuple[int, str]) -> None:
    assert error_of(path, query) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/tiles",
        "/tiles/",
        "/tiles/a.svs",
        "/tiles/a.svs/0/0",
        "/tiles//0/0/0.jpg",
        "/view",
        "/view/",
        "/slides//a.svs",
        "/slides/a.svs/associated/la%20bel",
        "/slides/a.svs/dzi_files/x/0_0.jpg",
        "/slides/a.svs/dzi_files/1/00.jpg",
    ],
)
def test_unknown_paths_under_claimed_prefixes_are_404(path: str) -> None:
    assert error_of(path) == (404, "not_found")


def test_view_hook_route() -> None:
    assert rest.parse("/view/a/b.svs") == rest.View("a/b.svs")
    assert rest.parse("/view/a%2Fb.svs").slide_id == "a/b.svs"


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=60), st.text(max_size=30))
def test_any_claimed_path_gives_a_route_or_a_client_error(tail: str, query: str) -> None:
    for head in ("/slides/", "/tiles/", "/view/"):
        try:
            route = rest.parse(head + tail, query)
        except (BadRequest, NotFound):
            continue
        # A route about a slide names a non-empty one; the others (a list, an asset) name none.
        assert (route.slide_id is None) == isinstance(route, rest.SlideList | rest.Asset), route
        assert route.slide_id is None or route.slide_id != ""


def test_command_line_root_sets_the_prefix() -> None:
    args = cli.build_parser().parse_args(["--http", ":3000", "slides"])
    assert (args.http, args.root) == (":3000", "slides")
    assert cli.build_parser().parse_args(["--http", "127.0.0.1:3000"]).root is None
    settings, _ = from_environ({})
    assert with_root(settings, "images").filesystem_prefix == "images/"
    assert with_root(settings, "images/").filesystem_prefix == "images/"
    assert with_root(settings, "s3://bucket/prefix").filesystem_prefix == "s3://bucket/prefix"
    assert with_root(settings, None) is settings
