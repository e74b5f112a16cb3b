"""IIP processing commands (SPEC section 4) against references computed here in plain numpy.

Every request asks for PNG (lossless) of a lossless source at exactly one stored level, so no
resize stands between the formula and the answer: the float stage quantises once, and the
reference does the same arithmetic in float64 -- the answers agree within one grey level
(float32 against float64 rounding).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageFilter

from tests import helpers
from tests.functional import reference as ref

RGB = ref.DEFLATE  # 3000 x 2000, 5 levels; level 3 is 375 x 250
LEVEL = 3
WID = 375
GREY16 = "tif-grey16-600x400-2lvl-256tile-deflate.tif"
RGB16 = "tif-rgb16-600x400-1lvl-256tile-zstd-sminmax.tif"
RGB16_MIN = np.array([1000.0, 2000.0, 3000.0])
RGB16_MAX = np.array([60000.0, 50000.0, 40000.0])


@pytest.fixture(scope="module")
def app(fixtures: str):
    return helpers.make_app()


def view(app, query: str, image: str = RGB) -> np.ndarray:
    result = helpers.call(app, f"FIF={image}&{query}")
    assert result.status == 200, (query, result.body[:200])
    return ref.decode(result.body)


def unit(name: str = RGB, level: int = LEVEL) -> np.ndarray:
    """The level's samples normalised to 0..1 by their type's range, in float64."""
    pixels = ref.pixels(name, level)
    return pixels.astype(np.float64) / np.iinfo(pixels.dtype).max


def to8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values * 255), 0, 255).astype(np.int64)


def assert_close(actual: np.ndarray, expected: np.ndarray, tolerance: int = 1) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    difference = np.abs(actual.astype(np.int64) - expected.astype(np.int64))
    assert difference.max() <= tolerance, f"max difference {difference.max()}"


def hot(v: np.ndarray) -> np.ndarray:
    """The 'hot' colour map from its definition: black -> red -> yellow -> white in thirds."""
    return np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)


# -- single commands -------------------------------------------------------------------------


def test_no_processing_is_the_level_itself(app) -> None:
    # The premise of every test below: this view is level 3, unresampled.
    assert_close(view(app, f"WID={WID}&CVT=png"), ref.pixels(RGB, LEVEL), 0)


@pytest.mark.parametrize("gamma", [0.5, 2.2])
def test_gamma(app, gamma: float) -> None:
    assert_close(view(app, f"WID={WID}&GAM={gamma}&CVT=png"), to8(unit() ** gamma))


def test_gamma_log(app) -> None:
    expected = to8(np.log1p(255 * unit()) / np.log(256))
    assert_close(view(app, f"WID={WID}&GAM=log&CVT=png"), expected)


def test_invert(app) -> None:
    assert_close(view(app, f"WID={WID}&INV=1&CVT=png"), 255 - ref.pixels(RGB, LEVEL).astype(np.int64))


@pytest.mark.parametrize("factor", [0.5, 1.7])
def test_contrast_factor(app, factor: float) -> None:
    assert_close(view(app, f"WID={WID}&CNT={factor}&CVT=png"), to8(unit() * factor))


def test_contrast_stretch(app) -> None:
    source = ref.pixels(RGB, LEVEL).astype(np.float64)
    low, high = source.min(axis=(0, 1)), source.max(axis=(0, 1))
    expected = to8((source - low) / (high - low))
    assert_close(view(app, f"WID={WID}&CNT=st&CVT=png"), expected)


def test_contrast_equalisation_flattens_the_histogram(app) -> None:
    grey = view(app, f"WID={WID}&COL=grey&CNT=eq&CVT=png")[:, :, 0]
    # An equalised band uses the whole range and its cumulative histogram is close to a line.
    assert grey.min() == 0 and grey.max() == 255
    cdf = np.cumsum(np.bincount(grey.ravel(), minlength=256)) / grey.size
    assert np.abs(cdf - np.arange(1, 257) / 256).max() < 0.1


def test_colour_twist(app) -> None:
    matrix = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    text = ";".join(",".join(f"{w:g}" for w in row) for row in matrix)
    assert_close(view(app, f"WID={WID}&CTW=[{text}]&CVT=png"), to8(unit() @ matrix.T))


def test_colour_twist_to_one_band(app) -> None:
    out = view(app, f"WID={WID}&CTW=[0.25,0.25,0.5]&CVT=png")
    assert_close(out, to8(unit() @ np.array([[0.25, 0.25, 0.5]]).T))


@pytest.mark.parametrize("name", ["hot", "red", "green", "blue"])
def test_colour_maps(app, name: str) -> None:
    v = unit()[:, :, 0]
    expected = hot(v) if name == "hot" else np.zeros((*v.shape, 3))
    if name != "hot":
        expected[:, :, ["red", "green", "blue"].index(name)] = v
    assert_close(view(app, f"WID={WID}&CMP={name}&CVT=png"), to8(expected))


def test_colour_maps_cold_and_jet_end_points(tmp_path) -> None:
    # A synthetic ramp: CMP's defining colours at its ends and thirds/eighths.
    app = helpers.make_app(FILESYSTEM_PREFIX=f"{tmp_path}/")
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :], 8, axis=0)
    tifffile.imwrite(tmp_path / "ramp-256x8-grey.tif", ramp, photometric="minisblack", compression="zlib")
    cold = view(app, "CMP=cold&CVT=png", image="ramp-256x8-grey.tif")[0]
    jet = view(app, "CMP=jet&CVT=png", image="ramp-256x8-grey.tif")[0]
    assert cold[0].tolist() == [0, 0, 0] and cold[255].tolist() == [255, 255, 255]
    assert cold[85].tolist() == [0, 0, 255]  # one third: full blue
    assert cold[170].tolist() == [0, 255, 255]  # two thirds: cyan
    assert jet[0].tolist() == [0, 0, 128]  # dark blue
    # The middle: full green, red rising as blue falls.
    assert jet[128][1] == 255 and abs(int(jet[128][0]) + int(jet[128][2]) - 255) <= 1
    assert jet[255].tolist() == [128, 0, 0]  # dark red


def correlate(values: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Plain correlation with edge replication, written out."""
    size = kernel.shape[0]
    pad = size // 2
    padded = np.pad(values, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    height, width = values.shape[:2]
    out = np.zeros_like(values)
    for dy in range(size):
        for dx in range(size):
            out += kernel[dy, dx] * padded[dy : dy + height, dx : dx + width]
    return out


def test_convolution_named_kernel(app) -> None:
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
    assert_close(view(app, f"WID={WID}&CNV=sobel&CVT=png"), to8(correlate(unit(), sobel)))


def test_convolution_custom_kernel_is_divided_by_its_sum(app) -> None:
    kernel = np.arange(1, 26, dtype=np.float64).reshape(5, 5)
    text = ",".join(f"{k:g}" for k in kernel.ravel())
    assert_close(view(app, f"WID={WID}&CNV=[{text}]&CVT=png"), to8(correlate(unit(), kernel / kernel.sum())))


def test_convolution_agrees_with_pillow_inside(app) -> None:
    # An independent implementation: Pillow's 3x3 kernel filter (8-bit, borders untouched).
    out = view(app, f"WID={WID}&CNV=gaussian&CVT=png")
    kernel = [1, 2, 1, 2, 4, 2, 1, 2, 1]
    pillow = np.asarray(Image.fromarray(ref.pixels(RGB, LEVEL)).filter(ImageFilter.Kernel((3, 3), kernel)))
    assert_close(out[1:-1, 1:-1], pillow[1:-1, 1:-1])


def test_hill_shading(app) -> None:
    horizontal, vertical = 30, 40
    a = np.radians(horizontal)
    light = np.array([np.sin(a), np.cos(a), -np.sin(np.radians(vertical))])
    light /= np.linalg.norm(light)
    normals = -(unit() - 0.5) * 2
    expected = np.clip(0.5 * (normals @ light), 0, 1)[:, :, None]
    assert_close(view(app, f"WID={WID}&SHD={horizontal},{vertical}&CVT=png"), to8(expected))


def luminance(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[:, :, i].astype(np.int64) for i in range(3))
    return (1254097 * r + 2462056 * g + 478151 * b) >> 22


@pytest.mark.parametrize("word", ["grey", "gray"])
def test_colour_grey(app, word: str) -> None:
    out = view(app, f"WID={WID}&COL={word}&CVT=png")
    assert_close(out, luminance(ref.pixels(RGB, LEVEL))[:, :, None], 0)


def otsu(values: np.ndarray) -> int:
    """Otsu's threshold from its definition: the split maximising between-class variance."""
    histogram = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    best, threshold = -1.0, 0
    for t in range(256):
        w0, w1 = histogram[: t + 1].sum(), histogram[t + 1 :].sum()
        if w0 == 0 or w1 == 0:
            continue
        m0 = (histogram[: t + 1] * np.arange(t + 1)).sum() / w0
        m1 = (histogram[t + 1 :] * np.arange(t + 1, 256)).sum() / w1
        between = w0 * w1 * (m0 - m1) ** 2
        if between > best:
            best, threshold = between, t
    return threshold


def test_colour_binary(app) -> None:
    out = view(app, f"WID={WID}&COL=binary&CVT=png")[:, :, 0]
    grey = luminance(ref.pixels(RGB, LEVEL))
    expected = np.where(grey > otsu(grey), 255, 0)
    assert set(np.unique(out).tolist()) <= {0, 255}
    assert (out == expected).mean() > 0.999


@pytest.mark.parametrize(("argument", "turns", "flip"), [("90", -1, False), ("180", 2, False), ("!90", -1, True)])
def test_rotation_and_mirror(app, argument: str, turns: int, flip: bool) -> None:
    source = ref.pixels(RGB, LEVEL)
    expected = np.rot90(source[:, ::-1] if flip else source, turns)
    assert_close(view(app, f"WID={WID}&ROT={argument}&CVT=png"), expected, 0)


def test_rotation_any_angle(app) -> None:
    out = view(app, f"WID={WID}&ROT=30&CVT=png")
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    assert abs(out.shape[1] - (WID * c + 250 * s)) <= 2 and abs(out.shape[0] - (WID * s + 250 * c)) <= 2
    assert out.shape[2] == 4 and out[0, 0, 3] == 0 and out[out.shape[0] // 2, out.shape[1] // 2, 3] == 255
    jpeg = view(app, f"WID={WID}&ROT=30&CVT=jpeg")
    assert (jpeg[:3, :3] > 240).all()  # white corners where the format has no alpha


# -- the order of the float stage ------------------------------------------------------------


def test_gamma_invert_rotate_in_order(app) -> None:
    expected = np.rot90(to8(1 - unit() ** 0.5), -1)
    assert_close(view(app, f"WID={WID}&GAM=0.5&INV=1&ROT=90&CVT=png"), expected)
    # The other order (invert, then gamma) is a different image: the test can tell them apart.
    assert np.abs(expected - np.rot90(to8((1 - unit()) ** 0.5), -1)).max() > 20


def test_twist_then_colour_map(app) -> None:
    twisted = unit() @ np.array([0.1, 0.2, 0.7])
    expected = to8(hot(twisted))
    assert_close(view(app, f"WID={WID}&CTW=[0.1,0.2,0.7]&CMP=hot&CVT=png"), expected)
    assert np.abs(expected - to8(hot(unit()[:, :, 0]))).max() > 20  # colour map first differs


def test_command_order_in_the_url_does_not_matter(app) -> None:
    a = helpers.call(app, f"FIF={RGB}&WID={WID}&INV=1&GAM=2&CNT=1.2&CVT=png").body
    b = helpers.call(app, f"FIF={RGB}&CNT=1.2&GAM=2&WID={WID}&INV=1&CVT=png").body
    assert a == b
    expected = to8((1 - unit() ** 2) * 1.2)
    assert_close(ref.decode(a), expected)


# -- deeper sources: normalisation, MINMAX, 16-bit output -------------------------------------


def test_minmax_on_a_16_bit_source(app) -> None:
    samples = ref.pixels(GREY16, 0).astype(np.float64)
    expected = to8((samples - 1000) / (30000 - 1000))
    assert_close(view(app, "MINMAX=1:1000,30000&CVT=png", image=GREY16), expected)
    # MINMAX for all channels with '-'; then gamma on the normalised values.
    expected = to8(np.clip((samples - 5000) / 40000, 0, None) ** 2)
    assert_close(view(app, "MINMAX=-:5000,45000&GAM=2&CVT=png", image=GREY16), expected)


def test_sample_range_tags_normalise_processing(app) -> None:
    samples = ref.pixels(RGB16, 0).astype(np.float64)
    normalised = (samples - RGB16_MIN) / (RGB16_MAX - RGB16_MIN)
    assert_close(view(app, "INV=1&CVT=png", image=RGB16), to8(1 - normalised))
    # MINMAX replaces one channel's range (channels count from 1).
    normalised[:, :, 1] = samples[:, :, 1] / 65535
    assert_close(view(app, "MINMAX=2:0,65535&INV=1&CVT=png", image=RGB16), to8(1 - normalised))


def decode16(body: bytes) -> np.ndarray:
    if body[:4] in (b"II*\x00", b"MM\x00*"):
        array = tifffile.imread(io.BytesIO(body))
    else:
        import imagecodecs

        array = imagecodecs.png_decode(body)
    return array if array.ndim == 3 else array[:, :, None]


def test_16_bit_png_output(app) -> None:
    samples = ref.pixels(GREY16, 0)
    body = helpers.call(app, f"FIF={GREY16}&BIT=16&CVT=png").body
    out = decode16(body)
    assert out.dtype == np.uint16
    assert_close(out, samples, 0)  # the image's range is its type's: samples as stored
    # Processing at 16 bits: inverted with 65535 steps, not 255.
    out = decode16(helpers.call(app, f"FIF={GREY16}&BIT=16&INV=1&CVT=png").body)
    assert_close(out, 65535 - samples.astype(np.int64), 1)


def test_16_bit_tiff_output_uses_the_sample_range(app) -> None:
    samples = ref.pixels(RGB16, 0).astype(np.float64)
    expected = np.clip(np.rint((samples - RGB16_MIN) / (RGB16_MAX - RGB16_MIN) * 65535), 0, 65535)
    out = decode16(helpers.call(app, f"FIF={RGB16}&BIT=16&CVT=tiff").body)
    assert out.dtype == np.uint16
    assert_close(out, expected, 1)


def test_16_bits_only_where_the_format_and_source_have_them(app) -> None:
    # JPEG has no 16-bit form, an 8-bit source has no more to give: both stay 8-bit.
    jpeg = helpers.call(app, f"FIF={GREY16}&BIT=16&CVT=jpeg")
    assert jpeg.status == 200 and ref.decode(jpeg.body).dtype == np.uint8
    png = decode16(helpers.call(app, f"FIF={RGB}&WID={WID}&BIT=16&CVT=png").body)
    assert png.dtype == np.uint8
    assert_close(png, ref.pixels(RGB, LEVEL), 0)
    # The default output of a 16-bit source is 8-bit.
    assert decode16(helpers.call(app, f"FIF={GREY16}&CVT=png").body).dtype == np.uint8


# -- tile commands, IIIF qualities ------------------------------------------------------------


@pytest.mark.parametrize("command", ["PTL", "JTL", "WTL", "TTL"])
def test_processing_applies_to_tile_commands(app, command: str) -> None:
    # IIP resolution 1 of 5 is stored level 3 (375 x 250); its tile 1 is x 256..375.
    result = helpers.call(app, f"FIF={RGB}&GAM=2&INV=1&{command}=1,1")
    assert result.status == 200
    tile = ref.decode(result.body) if command != "TTL" else decode16(result.body)
    expected = to8(1 - unit()[:, 256:] ** 2)
    if command in ("PTL", "TTL"):
        assert_close(tile, expected, 0)
    else:  # lossy: close on average, and far from the unprocessed tile
        assert tile.shape == expected.shape
        assert ref.mean_abs_diff(tile, expected) < 8
        assert ref.mean_abs_diff(tile, ref.pixels(RGB, LEVEL)[:, 256:]) > 30


def test_tile_with_colour_map_and_rotation(app) -> None:
    tile = view(app, "CMP=red&ROT=90&PTL=1,0")
    v = unit()[:, :256, 0]
    expected = np.zeros((*v.shape, 3))
    expected[:, :, 0] = v
    assert_close(tile, np.rot90(to8(expected), -1))


def test_iiif_qualities_map_onto_the_same_transforms(fixtures: str) -> None:
    app = helpers.make_app(IIIF_EXTENSIONS="1")
    base = f"IIIF=/{RGB}/full/{WID},/0"
    for quality, expected in (
        ("negative", 255 - ref.pixels(RGB, LEVEL).astype(np.int64)),
        ("log", to8(np.log1p(255 * unit()) / np.log(256))),
        ("gray", luminance(ref.pixels(RGB, LEVEL))[:, :, None]),
    ):
        result = helpers.call(app, f"{base}/{quality}.png")
        assert result.status == 200, quality
        assert_close(ref.decode(result.body), expected)
    iip = helpers.call(app, f"FIF={RGB}&WID={WID}&INV=1&CVT=png").body
    assert ref.decode(helpers.call(app, f"{base}/negative.png").body).tolist() == ref.decode(iip).tolist()


# -- hostile arguments ------------------------------------------------------------------------

HOSTILE = [
    "CTW=[[[[",
    "CTW=[1,2;3]",
    "CTW=[1,2,3;4,5,6]",
    "CTW=[nan,1,1]",
    "CNV=[1,2]",
    "CNV=[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]",
    "CNV=blur",
    "CNV=[inf,0,0,0,0,0,0,0,0]",
    "GAM=nan",
    "GAM=-1",
    "GAM=0",
    "GAM=1e400",
    "ROT=1e309",
    "ROT=nan",
    "ROT=!",
    "CNT=-2",
    "CNT=inf",
    "CNT=wide",
    "MINMAX=0:1,2",
    "MINMAX=1:5",
    "MINMAX=x:1,2",
    "MINMAX=1:nan,2",
    "CMP=purple",
    "COL=sepia",
    "SHD=1",
    "SHD=a,b",
    "SHD=1e999,0",
    "BIT=12",
]


@pytest.mark.parametrize("argument", HOSTILE)
def test_hostile_arguments_are_iip_errors(app, argument: str) -> None:
    result = helpers.call(app, f"FIF={RGB}&{argument}&WID=64&CVT=png")
    assert result.status == 400, result.body[:200]
    assert ref.iip_error(result).startswith("2 1"), ref.iip_error(result)
    # The worker goes on serving.
    assert_close(view(app, f"WID={WID}&INV=1&CVT=png"), 255 - ref.pixels(RGB, LEVEL).astype(np.int64))


def test_16_bit_output_is_resized_at_16_bits(app) -> None:
    out = decode16(helpers.call(app, f"FIF={GREY16}&BIT=16&WID=250&CVT=png").body)
    assert out.dtype == np.uint16 and out.shape[:2] == (167, 250)
    # Reference: Pillow's float resize of the full-size samples (a different resampler: the
    # averages agree, edges differ a little).
    full = Image.fromarray(ref.pixels(GREY16, 0)[:, :, 0].astype(np.float32), mode="F")
    expected = np.asarray(full.resize((250, 167), Image.Resampling.LANCZOS))[:, :, None]
    assert np.abs(out.astype(np.float64) - expected).mean() < 0.01 * 65535
    # Not 8-bit values stretched: the low byte carries information.
    assert len(np.unique(out % 257)) > 100


POINTWISE = ["GAM=0.7", "GAM=log", "INV=1", "CNT=1.3", "CMP=cold", "CTW=[0,1,0;1,0,0;0,0,1]", "SHD=100,20", "COL=grey"]


@pytest.mark.parametrize("command", POINTWISE)
def test_every_pointwise_command_gives_a_tile_equal_to_the_view_cut(app, command: str) -> None:
    # IIP resolution 1 is stored level 3, the level the 375-wide view shows: its tile 1 is the
    # view's columns 256..375, whatever the command does to each pixel.
    whole = view(app, f"WID={WID}&{command}&CVT=png")
    tile = view(app, f"{command}&PTL=1,1")
    assert_close(tile, whole[:, 256:], 0)
    assert ref.mean_abs_diff(whole[:, :, :1], ref.pixels(RGB, LEVEL)[:, :, :1]) > 5  # it did something


@pytest.mark.parametrize(("quality", "command"), [("stretch", "CNT=st"), ("equalization", "CNT=eq")])
def test_iiif_extension_qualities_are_the_iip_commands(fixtures: str, quality: str, command: str) -> None:
    app = helpers.make_app(IIIF_EXTENSIONS="1")
    iiif = helpers.call(app, f"IIIF=/{RGB}/full/{WID},/0/{quality}.png")
    iip = helpers.call(app, f"FIF={RGB}&WID={WID}&{command}&CVT=png")
    assert iiif.status == iip.status == 200
    assert np.array_equal(ref.decode(iiif.body), ref.decode(iip.body))
    assert not np.array_equal(ref.decode(iip.body), ref.pixels(RGB, LEVEL))
