"""Planning (SPEC section 6): output size, level choice with real downsample factors, tiles."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iipsrv_py.errors import NotFound
from iipsrv_py.model import ImageInfo, Level
from iipsrv_py.planning import MAX_REGION_PIXELS, Region, TileView, View, plan
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


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (500, None, (500, 333)),  # 500 / 1.5 = 333.3
        (None, 500, (750, 500)),
        (600, 600, (600, 400)),  # fit inside the box, aspect kept
        (600, 100, (150, 100)),
        (None, None, (3000, 2000)),  # neither: the region at full resolution [fix]
    ],
)
def test_output_size(width: int | None, height: int | None, expected: tuple[int, int]) -> None:
    p = plan(View(width=width, height=height), HALVES, S)
    assert (p.out_width, p.out_height) == expected


def test_max_cvt_caps_the_larger_side() -> None:
    p = plan(View(width=9000), HALVES, Settings(max_cvt=1000))
    assert (p.out_width, p.out_height) == (1000, 667)


def test_no_upscaling_caps_at_region_size() -> None:
    p = plan(View(width=9000), HALVES, Settings(allow_upscaling=False))
    assert (p.out_width, p.out_height) == (3000, 2000)
    region = Region("pixels", 0, 0, 100, 50)
    p = plan(View(region=region, width=400), HALVES, Settings(allow_upscaling=False))
    assert (p.out_width, p.out_height) == (100, 50)


def test_smallest_sufficient_level_is_chosen() -> None:
    assert plan(View(width=375), HALVES, S).level == 3  # 375x250 exactly
    assert plan(View(width=376), HALVES, S).level == 3  # one pixel short is close enough
    assert plan(View(width=377), HALVES, S).level == 2  # needs the 750 level
    assert plan(View(width=100), HALVES, S).level == 4
    # A region 750 px wide shown at 200 px: level 2 would give it 187.5 px, too few.
    region = Region("fraction", 0.5, 0.5, 0.25, 0.25)
    p = plan(View(region=region, width=200), HALVES, S)
    assert p.level == 1 and (p.x, p.y, p.w, p.h) == (750, 500, 375, 250)
    p = plan(View(region=region, width=186), HALVES, S)
    assert p.level == 2 and (p.x, p.y, p.w, p.h) == (375, 250, 188, 125)


def test_levels_stepping_by_four_use_real_factors() -> None:
    p = plan(View(width=1000), SLIDE, S)
    assert p.level == 2  # 2875 wide is the smallest >= 1000
    assert (p.w, p.h) == (2875, 2062)
    p = plan(View(width=718), SLIDE, S)
    assert p.level == 3


def test_region_is_clipped_at_the_image_edge() -> None:
    p = plan(View(region=Region("pixels", 2900, 1900, 500, 500)), HALVES, S)
    assert (p.x, p.y, p.w, p.h) == (2900, 1900, 100, 100)
    assert (p.out_width, p.out_height) == (100, 100)


def test_region_matching_a_tile_takes_the_tile_path() -> None:
    p = plan(View(region=Region("pixels", 512, 256, 256, 256)), HALVES, S)
    assert p.tile == (2, 1) and p.level == 0
    p = plan(View(region=Region("pixels", 512, 256, 256, 256), width=128), HALVES, S)
    assert p.tile is None or p.level != 0


def test_tiles_are_bounds_checked() -> None:
    level = HALVES.levels[4]
    assert plan(TileView(4, 0, 0), HALVES, S).tile == (0, 0)
    with pytest.raises(NotFound):
        plan(TileView(4, level.tiles_x, 0), HALVES, S)
    with pytest.raises(NotFound):
        plan(TileView(5, 0, 0), HALVES, S)
    with pytest.raises(NotFound):
        plan(TileView(-1, 0, 0), HALVES, S)


def test_edge_tiles_are_cropped() -> None:
    p = plan(TileView(0, 11, 7), HALVES, S)  # 3000 = 11*256 + 184, 2000 = 7*256 + 208
    assert (p.w, p.h, p.out_width, p.out_height) == (184, 208, 184, 208)


@given(
    x=st.floats(0, 1),
    y=st.floats(0, 1),
    w=st.floats(0.0001, 1),
    h=st.floats(0.0001, 1),
    width=st.integers(1, 6000),
)
def test_any_region_gives_a_plan_inside_its_level(x: float, y: float, w: float, h: float, width: int) -> None:
    p = plan(View(region=Region("fraction", x, y, w, h), width=width), SLIDE, S)
    level = SLIDE.levels[p.level]
    assert p.x >= 0 and p.y >= 0 and p.w >= 1 and p.h >= 1
    assert p.x + p.w <= level.width and p.y + p.h <= level.height
    assert 1 <= p.out_width <= S.max_cvt and 1 <= p.out_height <= S.max_cvt
    # The chosen level has at least the pixels the output needs, unless it is full size or
    # the next larger level would need more pixels than a worker may decode.
    if p.level > 0 and not (math.ceil(p.w) >= p.out_width - 1 and math.ceil(p.h) >= p.out_height - 1):
        larger = SLIDE.levels[p.level - 1]
        # How many times larger the next level is, per axis.
        scale = SLIDE.levels[p.level].downsample_x / larger.downsample_x
        assert p.w * p.h * scale * scale > MAX_REGION_PIXELS
