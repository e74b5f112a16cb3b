"""Planning (SPEC section 6): output size, limits, level choice with real downsample factors, tiles.

Examples written from the SPEC first; then properties checked with Hypothesis over all four
protocols at once, each request made by the protocol's own parser and handler translation:
the output never exceeds the limits, the level read is the smallest one that is large enough,
a request that names exactly one stored tile is planned as that tile, and numbers of any size
give a plan or the SPEC's 400/404/413, never anything else.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from iipsrv_py.errors import BadRequest, NotFound, ServerError, TooLarge
from iipsrv_py.handlers import deepzoom, iiif, iiif_info, iip, zoomify
from iipsrv_py.model import ImageInfo, Level
from iipsrv_py.planning import (
    MAX_OUTPUT_PIXELS,
    ImagePlan,
    Region,
    Size,
    StoredTile,
    ViewRequest,
    plan,
)
from iipsrv_py.protocols import iiif as iiif_protocol
from iipsrv_py.settings import Settings


def pyramid(width: int, height: int, sizes: list[tuple[int, int]], tile: tuple[int, int] = (256, 256)) -> ImageInfo:
    levels = [Level(width, height, tile[0], tile[1])] + [
        Level(w, h, tile[0], tile[1], width / w, height / h) for w, h in sizes
    ]
    return ImageInfo(width, height, tuple(levels))


HALVES = pyramid(3000, 2000, [(1500, 1000), (750, 500), (375, 250), (187, 125)])
# A slide-like pyramid stepping by 4 with odd sizes.
SLIDE = pyramid(46001, 32999, [(11500, 8249), (2875, 2062), (718, 515)], tile=(240, 240))
S = Settings()


def cvt(width: int = 0, height: int = 0, region: Region | None = None) -> ViewRequest:
    """An IIP CVT request, as the IIP handler translates WID, HEI and RGN."""
    return ViewRequest(region or Region(), iip.size_rule(width, height))


def iiif_view(path: str, version: int = 3) -> ViewRequest:
    request = iiif_protocol.parse(f"id/{path}", version)
    assert isinstance(request, iiif_protocol.ImageRequest)
    return iiif.view_request(request)


# -- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (500, 0, (500, 333)),  # 500 / 1.5 = 333.3
        (0, 500, (750, 500)),
        (600, 600, (600, 400)),  # fit inside the box, aspect kept
        (600, 100, (150, 100)),
        (0, 0, (3000, 2000)),  # neither: the region at full resolution [fix]
    ],
)
def test_iip_output_size(width: int, height: int, expected: tuple[int, int]) -> None:
    p = plan(cvt(width, height), HALVES, S)
    assert (p.out_width, p.out_height) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("full/max/0/default.jpg", (3000, 2000)),
        ("full/300,/0/default.jpg", (300, 200)),
        ("full/,100/0/default.jpg", (150, 100)),
        ("full/pct:10/0/default.jpg", (300, 200)),
        ("full/400,400/0/default.jpg", (400, 400)),  # exact: distorted
        ("full/!400,400/0/default.jpg", (400, 267)),
        ("0,0,1000,1000/!999,400/0/default.jpg", (400, 400)),
        ("square/200,/0/default.jpg", (200, 200)),
    ],
)
def test_iiif_output_size(path: str, expected: tuple[int, int]) -> None:
    p = plan(iiif_view(path), HALVES, S)
    assert (p.out_width, p.out_height) == expected


def test_iip_clamps_to_max_cvt_and_iiif_refuses() -> None:
    limited = Settings(max_cvt=1000)
    p = plan(cvt(9000), HALVES, limited)
    assert (p.out_width, p.out_height) == (1000, 667)
    with pytest.raises(TooLarge):
        plan(iiif_view("full/1001,/0/default.jpg"), HALVES, limited)
    # "max" means as large as the server allows: shrunk, not refused.
    p = plan(iiif_view("full/max/0/default.jpg"), HALVES, limited)
    assert (p.out_width, p.out_height) == (1000, 667)


def test_iip_caps_upscaling_and_iiif_refuses_it() -> None:
    no_upscaling = Settings(allow_upscaling=False)
    p = plan(cvt(9000), HALVES, no_upscaling)
    assert (p.out_width, p.out_height) == (3000, 2000)
    p = plan(cvt(400, region=Region("fraction", 0, 0, 100 / 3000, 50 / 2000)), HALVES, no_upscaling)
    assert (p.out_width, p.out_height) == (100, 50)
    # IIIF 3: larger than the region only with "^", and then only if the server allows it.
    with pytest.raises(BadRequest):
        plan(iiif_view("0,0,100,50/200,/0/default.jpg"), HALVES, S)
    p = plan(iiif_view("0,0,100,50/^200,/0/default.jpg"), HALVES, S)
    assert (p.out_width, p.out_height) == (200, 100)
    with pytest.raises(BadRequest):
        plan(iiif_view("0,0,100,50/^200,/0/default.jpg"), HALVES, no_upscaling)
    # IIIF 2.1 has no "^": ALLOW_UPSCALING decides.
    assert plan(iiif_view("0,0,100,50/200,/0/default.jpg", 2), HALVES, S).out_width == 200
    with pytest.raises(BadRequest):
        plan(iiif_view("0,0,100,50/200,/0/default.jpg", 2), HALVES, no_upscaling)


def test_numbers_past_any_image_are_refused_or_clamped_never_overflowing() -> None:
    huge = "9" * 400
    with pytest.raises(BadRequest):  # 3.0: larger than the region without "^"
        plan(iiif_view(f"full/{huge},/0/default.jpg"), HALVES, S)
    with pytest.raises(TooLarge):
        plan(iiif_view(f"full/^{huge},/0/default.jpg"), HALVES, S)
    with pytest.raises(TooLarge):
        plan(iiif_view(f"full/{huge},/0/default.jpg", 2), HALVES, S)
    with pytest.raises(TooLarge):
        plan(iiif_view(f"full/^pct:{huge[:300]}/0/default.jpg"), HALVES, S)
    with pytest.raises(BadRequest):  # past the range of a float: not a number the parser reads
        iiif_view(f"full/^pct:{huge}/0/default.jpg")
    with pytest.raises(TooLarge):
        plan(iiif_view(f"full/^!{huge},{huge}/0/default.jpg"), HALVES, S)
    with pytest.raises(BadRequest):  # a region starting past the image
        plan(iiif_view(f"{huge},0,10,10/max/0/default.jpg"), HALVES, S)
    p = plan(iiif_view(f"0,0,{huge[:300]},{huge[:300]}/max/0/default.jpg"), HALVES, S)  # clipped to the image
    assert (p.out_width, p.out_height) == (3000, 2000)
    # IIP clamps to MAX_CVT; with no MAX_CVT the absolute output limit answers 413.
    assert plan(cvt(2**31), HALVES, S).out_width == S.max_cvt
    with pytest.raises(TooLarge):
        plan(cvt(2**31), HALVES, Settings(max_cvt=-1))


def test_each_format_is_limited_to_the_sides_it_can_hold() -> None:
    unlimited = Settings(max_cvt=-1)
    with pytest.raises(TooLarge):
        plan(ViewRequest(size=Size("width", width=16384), encoding="webp"), HALVES, unlimited)
    assert plan(ViewRequest(size=Size("width", width=16383), encoding="webp"), HALVES, unlimited).out_width == 16383


# -- regions -------------------------------------------------------------------------------------


def test_region_is_clipped_at_the_image_edge() -> None:
    p = plan(iiif_view("2900,1900,500,500/max/0/default.jpg"), HALVES, S)
    assert (p.x, p.y, p.w, p.h) == (2900, 1900, 100, 100)
    assert (p.out_width, p.out_height) == (100, 100)
    assert p.region == (2900, 1900, 100, 100)


def test_iiif_region_outside_the_image_is_400_and_iip_region_is_clamped() -> None:
    with pytest.raises(BadRequest):
        plan(iiif_view("3000,0,10,10/max/0/default.jpg"), HALVES, S)
    with pytest.raises(BadRequest):
        plan(iiif_view("pct:100,0,10,10/max/0/default.jpg"), HALVES, S)
    # IIP: fractions clamped into the image, never empty.
    p = plan(cvt(region=Region("fraction", 1.0, 1.0, 0.5, 0.5)), HALVES, S)
    assert (p.out_width, p.out_height) == (1, 1)
    assert p.region == (2999, 1999, 1, 1)


def test_square_region_is_centred() -> None:
    p = plan(iiif_view("square/max/0/default.jpg"), HALVES, S)
    assert p.region == (500, 0, 2000, 2000)


# -- levels --------------------------------------------------------------------------------------


def test_smallest_sufficient_level_is_chosen() -> None:
    assert plan(cvt(375), HALVES, S).level == 3  # 375x250 exactly
    assert plan(cvt(376), HALVES, S).level == 3  # one pixel short is close enough
    assert plan(cvt(377), HALVES, S).level == 2  # needs the 750 level
    assert plan(cvt(100), HALVES, S).level == 4
    # A region 750 px wide shown at 200 px: level 2 would give it 187.5 px, too few.
    region = Region("fraction", 0.5, 0.5, 0.25, 0.25)
    p = plan(cvt(200, region=region), HALVES, S)
    assert p.level == 1 and (p.x, p.y, p.w, p.h) == (750, 500, 375, 250)
    p = plan(cvt(186, region=region), HALVES, S)
    assert p.level == 2 and (p.x, p.y, p.w, p.h) == (375, 250, 188, 125)


def test_levels_stepping_by_four_use_real_factors() -> None:
    p = plan(cvt(1000), SLIDE, S)
    assert p.level == 2  # 2875 wide is the smallest >= 1000
    assert (p.w, p.h) == (2875, 2062)
    assert plan(cvt(718), SLIDE, S).level == 3


# -- tiles ---------------------------------------------------------------------------------------


def test_region_matching_a_tile_takes_the_tile_path() -> None:
    p = plan(iiif_view("512,256,256,256/max/0/default.jpg"), HALVES, S)
    assert p.tile == (2, 1) and p.level == 0
    p = plan(iiif_view("512,256,256,256/128,/0/default.jpg"), HALVES, S)
    assert p.tile is None and p.level == 1 and (p.x, p.y, p.w, p.h) == (256, 128, 128, 128)
    # A level whose real factor (46001 / 11500 = 4.00009) is not the announced one (4): the
    # tiles a viewer asks for with factor 4 are still the stored tiles, to the last full column
    # (with the real factor the drift reaches half a pixel there).
    col = SLIDE.levels[1].tiles_x - 2
    p = plan(iiif_view(f"{col * 960},960,960,960/240,/0/default.jpg"), SLIDE, S)
    assert (p.level, p.tile) == (1, (col, 1))


def test_stored_tiles_are_bounds_checked_with_iip_numbering() -> None:
    smallest = HALVES.levels[4]
    assert plan(ViewRequest(StoredTile(0, 0)), HALVES, S).tile == (0, 0)
    assert plan(ViewRequest(StoredTile(0, 0)), HALVES, S).level == 4
    with pytest.raises(NotFound):
        plan(ViewRequest(StoredTile(0, smallest.tiles_x * smallest.tiles_y)), HALVES, S)
    with pytest.raises(NotFound):
        plan(ViewRequest(StoredTile(5, 0)), HALVES, S)
    with pytest.raises(NotFound):
        plan(ViewRequest(StoredTile(-1, 0)), HALVES, S)
    with pytest.raises(NotFound):
        plan(ViewRequest(StoredTile(4, -1)), HALVES, S)


def test_edge_tiles_are_cropped() -> None:
    # 3000 = 11*256 + 184, 2000 = 7*256 + 208; tile 95 = row 7, column 11 of 12.
    p = plan(ViewRequest(StoredTile(4, 95)), HALVES, S)
    assert (p.level, p.tile) == (0, (11, 7))
    assert (p.w, p.h, p.out_width, p.out_height) == (184, 208, 184, 208)


def test_deepzoom_tiles_of_missing_levels_come_from_the_next_larger_level() -> None:
    # DeepZoom level 11 of 3000x2000 is 1500x1000, stored as level 1: its tiles are stored tiles.
    p = plan(deepzoom.tile_request(HALVES, 11, 1, 2, 0, "jpeg"), HALVES, S)
    assert (p.level, p.tile) == (1, (1, 2))
    # Level 8 (188x125) is stored one pixel short (187x125): close enough, stretched.
    p = plan(deepzoom.tile_request(HALVES, 8, 0, 0, 0, "jpeg"), HALVES, S)
    assert (p.level, p.w, p.out_width, p.out_height, p.tile) == (4, 187, 188, 125, None)
    # Level 9 (375x250) is stored as level 3; level 10 (750x500) read from level 2 in tiles.
    p = plan(deepzoom.tile_request(HALVES, 10, 2, 1, 0, "jpeg"), HALVES, S)
    assert (p.level, p.tile, p.out_width, p.out_height) == (2, (2, 1), 238, 244)
    with pytest.raises(NotFound):
        plan(deepzoom.tile_request(HALVES, 11, 6, 0, 0, "jpeg"), HALVES, S)
    with pytest.raises(NotFound):
        deepzoom.tile_request(HALVES, 13, 0, 0, 0, "jpeg")


# -- properties over all four protocols ------------------------------------------------------------


@st.composite
def pyramids(draw: st.DrawFn) -> ImageInfo:
    """Pyramids as writers make them: levels step by 2 or 4, sizes rounded down or up."""
    width, height = draw(st.integers(1, 60000)), draw(st.integers(1, 60000))
    assume(width * height > 1)
    step = draw(st.sampled_from([2, 4]))
    rounding = draw(st.sampled_from([math.floor, math.ceil]))
    tw, th = draw(st.sampled_from([(256, 256), (240, 240), (512, 512), (256, 128), (128, 256)]))
    sizes = []
    factor = step
    while len(sizes) < 8:
        w, h = max(1, rounding(width / factor)), max(1, rounding(height / factor))
        if (w, h) == (sizes[-1] if sizes else (width, height)) or max(w, h) < 16:
            break
        sizes.append((w, h))
        factor *= step
    return pyramid(width, height, sizes, (tw, th))


SETTINGS = st.builds(
    Settings,
    max_cvt=st.sampled_from([-1, 1, 100, 1000, 5000]),
    allow_upscaling=st.booleans(),
)
NUMBERS = st.one_of(st.integers(0, 70000), st.integers(0, 10**40))


@st.composite
def iiif_paths(draw: st.DrawFn) -> tuple[str, int]:
    version = draw(st.sampled_from([2, 3]))
    region = draw(
        st.one_of(
            st.just("full"),
            st.just("square"),
            st.builds("{},{},{},{}".format, NUMBERS, NUMBERS, st.integers(1, 70000), st.integers(1, 70000)),
            st.builds("pct:{},{},{},{}".format, *([st.integers(0, 100)] * 2), *([st.integers(1, 100)] * 2)),
        )
    )
    caret = draw(st.sampled_from(["", "^"])) if version == 3 else ""
    size = draw(
        st.one_of(
            st.just("max"),
            st.builds("{},".format, st.integers(1, 10**30)),
            st.builds(",{}".format, st.integers(1, 70000)),
            st.builds("pct:{}".format, st.integers(1, 100 if not caret else 10**30)),
            st.builds("{},{}".format, st.integers(1, 70000), st.integers(1, 70000)),
            st.builds("!{},{}".format, st.integers(1, 70000), NUMBERS.filter(bool)),
        )
    )
    return f"{region}/{caret}{size}/0/default.jpg", version


@st.composite
def requests(draw: st.DrawFn, info: ImageInfo) -> tuple[str, ViewRequest]:
    """A request of any of the four protocols, as its handler hands it to the planner."""
    protocol = draw(st.sampled_from(["IIP", "IIIF", "DeepZoom", "Zoomify"]))
    if protocol == "IIP":
        fractions = st.floats(0, 1)
        region = draw(
            st.one_of(
                st.just(Region()),
                st.builds(Region, st.just("fraction"), fractions, fractions, fractions, fractions),
            )
        )
        width, height = draw(st.integers(0, 2**31)), draw(st.integers(0, 2**31))
        return protocol, cvt(width, height, region)
    if protocol == "IIIF":
        path, version = draw(iiif_paths())
        return protocol, iiif_view(path, version)
    if protocol == "DeepZoom":
        level = draw(st.integers(0, deepzoom.max_level(info)))
        w, h = deepzoom.level_size(info, level)
        size = deepzoom.tile_size(info)
        x, y = draw(st.integers(0, (w - 1) // size)), draw(st.integers(0, (h - 1) // size))
        return protocol, deepzoom.tile_request(info, level, x, y, draw(st.sampled_from([0, 1, 8])), "jpeg")
    sizes = zoomify.level_sizes(info, info.levels[0].tile_width)
    level = draw(st.integers(0, len(sizes) - 1))
    size = info.levels[0].tile_width
    w, h = sizes[level]
    x, y = draw(st.integers(0, (w - 1) // size)), draw(st.integers(0, (h - 1) // size))
    return protocol, zoomify.tile_request(info, level, x, y, "jpeg")


def _pixels_for(p: ImagePlan, info: ImageInfo, index: int) -> tuple[float, float]:
    """How many pixels level ``index`` has for the plan's full-size region."""
    level = info.levels[index]
    return p.region[2] / level.downsample_x, p.region[3] / level.downsample_y


@settings(max_examples=400, deadline=None)
@given(data=st.data(), info=pyramids(), config=SETTINGS)
def test_every_protocol_plans_within_limits_from_the_smallest_sufficient_level(
    data: st.DataObject, info: ImageInfo, config: Settings
) -> None:
    protocol, request = data.draw(requests(info))
    try:
        p = plan(request, info, config)
    except (BadRequest, TooLarge, NotFound):
        return  # the SPEC's answers for requests past the limits or outside the image
    level = info.levels[p.level]
    # The rectangle lies inside its level and the output is at least a pixel.
    assert p.x >= 0 and p.y >= 0 and p.w >= 1 and p.h >= 1
    assert p.x + p.w <= level.width and p.y + p.h <= level.height
    assert p.out_width >= 1 and p.out_height >= 1
    assert p.out_width * p.out_height <= MAX_OUTPUT_PIXELS
    if protocol in ("IIP", "IIIF") and config.max_cvt > 0:
        assert max(p.out_width, p.out_height) <= config.max_cvt
    if not config.allow_upscaling and protocol in ("IIP", "IIIF"):
        assert p.out_width <= max(1, round(p.region[2])) and p.out_height <= max(1, round(p.region[3]))
    # The level read is the smallest that is large enough (one pixel of slack, an eighth of
    # the output below 8 pixels): it has enough pixels unless it is the full size, and the
    # next smaller one has not, unless reading enough would mean too many pixels.
    slack_w, slack_h = min(1.0, p.out_width / 8), min(1.0, p.out_height / 8)
    pw, ph = _pixels_for(p, info, p.level)
    big_enough = pw >= p.out_width - slack_w - 1e-6 and ph >= p.out_height - slack_h - 1e-6
    too_many = p.level + 1 < len(info.levels) and _level_rect_pixels(p, info, p.level - 1) > config.max_decoded_pixels
    assert big_enough or p.level == 0 or too_many
    if p.level + 1 < len(info.levels) and not too_many:
        nw, nh = _pixels_for(p, info, p.level + 1)
        assert nw < p.out_width - slack_w - 1e-6 or nh < p.out_height - slack_h - 1e-6


def _level_rect_pixels(p: ImagePlan, info: ImageInfo, index: int) -> float:
    if index < 0:
        return 0
    pw, ph = _pixels_for(p, info, index)
    return (pw + 2) * (ph + 2)


@settings(max_examples=300, deadline=None)
@given(info=pyramids(), data=st.data())
def test_a_request_naming_one_stored_tile_is_planned_as_that_tile(info: ImageInfo, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(info.levels) - 1))
    level = info.levels[index]
    col, row = data.draw(st.integers(0, level.tiles_x - 1)), data.draw(st.integers(0, level.tiles_y - 1))
    x, y, w, h = level.tile_rect(col, row)
    # IIP: the stored tile by its own numbering.
    resolution = len(info.levels) - 1 - index
    p = plan(ViewRequest(StoredTile(resolution, row * level.tiles_x + col)), info, S)
    assert (p.level, p.tile, p.out_width, p.out_height) == (index, (col, row), w, h)
    # IIIF: the region a viewer computes from info.json's scale factor and the tile's size
    # (which exists when the factor maps the full image onto the level to a pixel).
    factor = max(1, round(level.downsample_x))
    announced = [f for entry in iiif_info.tiles(info) for f in entry["scaleFactors"]]
    if factor in announced and all(
        abs(full / factor - size) < 1 for full, size in ((info.width, level.width), (info.height, level.height))
    ):
        fx, fy = x * factor, y * factor
        fw, fh = min(w * factor, info.width - fx), min(h * factor, info.height - fy)
        if (math.ceil(fw / factor), math.ceil(fh / factor)) == (w, h) or (w, h) == (
            level.tile_width,
            level.tile_height,
        ):
            for version in (2, 3):
                p = plan(iiif_view(f"{fx},{fy},{fw},{fh}/{w},{h}/0/default.jpg", version), info, S)
                assert (p.level, p.tile) == (index, (col, row)), version
    # DeepZoom and Zoomify: where the protocol's level is this stored level, its tiles are the
    # stored tiles (same tile size, no overlap).
    if level.tile_width == level.tile_height == info.levels[0].tile_width:
        top = deepzoom.max_level(info)
        for dz_level in range(top + 1):
            if deepzoom.level_size(info, dz_level) == (level.width, level.height):
                p = plan(deepzoom.tile_request(info, dz_level, col, row, 0, "jpeg"), info, S)
                assert (p.level, p.tile) == (index, (col, row))
        sizes = zoomify.level_sizes(info, level.tile_width)
        if (level.width, level.height) in sizes:
            z = sizes.index((level.width, level.height))
            p = plan(zoomify.tile_request(info, z, col, row, "jpeg"), info, S)
            assert (p.level, p.tile) == (index, (col, row))


@settings(max_examples=300, deadline=None)
@given(info=pyramids(), path=iiif_paths(), config=SETTINGS)
def test_any_iiif_numbers_give_a_plan_or_a_spec_status(
    info: ImageInfo, path: tuple[str, int], config: Settings
) -> None:
    try:
        plan(iiif_view(*path), info, config)
    except ServerError as exc:
        assert exc.status in (400, 413)
