"""The IIIF Image API validator (``iiif-validate.py`` from the ``iiif-validator`` package) run
through a real nginx (the shipped conf/nginx/iipsrv_py.conf) against ``iipsrv-py --bind``,
for API versions 2.0 and 3.0 at compliance levels 0, 1 and 2 (SPEC section 8).

The validator checks pixels against its own test image (a 10 x 10 grid of coloured squares).
That image ships in the ``iiif-validator-ng`` wheel; the fixture downloads the wheel once
(pip, into tests/.fixtures), extracts the PNG and stores it as a tiled pyramidal TIFF under the
identifier the validator is given.  The validator cannot choose a version by Accept header,
so each version gets a server started with its IIIF_VERSION.

A warning is reported by the validator as a failed test ("Is Warning?: True"), so "0 failures"
also means "0 warnings"; both are asserted on the output.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator

import pytest
import pyvips
import requests

from tests import helpers
from tests.integration import servers

pytestmark = pytest.mark.integration

VALIDATOR = os.path.join(sys.prefix, "bin", "iiif-validate.py")
# The identifier used by the validator's own documentation; its "-" characters let the
# "escaped characters" test (id_escaped: "-" sent as "%2D") mean something.
IDENTIFIER = "67352ccc-d1b0-11e1-89ae-279075081939"
WHEEL_CACHE = os.path.join(helpers.FIXTURES, "iiif-validator-ng")
IMAGE_MEMBER = "iiif_validator/validation_image.png"
URI_MAP = "iiif=>IIIF deepzoom=>DeepZoom zoomify=>Zoomify"

DOWNLOAD_TIMEOUT = 120  # seconds for pip to fetch the wheel (first run only)
VALIDATOR_TIMEOUT = 90  # seconds for one validator run (each request has its own 5 s timeout)
TEST_TIME_LIMIT = VALIDATOR_TIMEOUT + 15

DONE = re.compile(r"^Done \((\d+) tests, (\d+) failures\)$", re.MULTILINE)
VERDICT = re.compile(r"^\[(\d+)\] test (\S+) (PASS|FAIL)$", re.MULTILINE)


@pytest.fixture(autouse=True)
def _time_limit() -> Iterator[None]:
    """Replaces the package's 30 s limit: a level-2 run makes a few hundred requests.  The
    subprocess timeout below bounds the run; this bounds everything around it."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"validator test ran longer than {TEST_TIME_LIMIT}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIME_LIMIT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _unavailable(message: str) -> None:
    if helpers.IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def validation_png() -> bytes:
    """The validator's test image, from the iiif-validator-ng wheel (downloaded once)."""
    wheels = sorted(glob.glob(os.path.join(WHEEL_CACHE, "iiif_validator_ng-*.whl")))
    if not wheels:
        os.makedirs(WHEEL_CACHE, exist_ok=True)
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        argv += ["--disable-pip-version-check", "-d", WHEEL_CACHE, "iiif-validator-ng"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT)
        except subprocess.TimeoutExpired:
            _unavailable(f"pip download iiif-validator-ng took longer than {DOWNLOAD_TIMEOUT}s")
        if done.returncode != 0:
            _unavailable(f"pip download iiif-validator-ng failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        wheels = sorted(glob.glob(os.path.join(WHEEL_CACHE, "iiif_validator_ng-*.whl")))
        if not wheels:
            _unavailable("pip download iiif-validator-ng produced no wheel")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        return wheel.read(IMAGE_MEMBER)


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A FILESYSTEM_PREFIX holding the validation image as a tiled pyramid named IDENTIFIER."""
    if not os.access(VALIDATOR, os.X_OK):
        _unavailable(f"{VALIDATOR} is missing: install the project with `pip install -e .[test]`")
    image = pyvips.Image.new_from_buffer(validation_png(), "")
    # The validator's tests sample 100-px squares of a 1000 x 1000 image.
    assert (image.width, image.height) == (1000, 1000), "unexpected validation image"
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    root = str(tmp_path_factory.mktemp("validator-images"))
    target = os.path.join(root, IDENTIFIER)
    image.tiffsave(target + ".tmp.tif", tile=True, tile_width=256, tile_height=256, pyramid=True, compression="deflate")
    os.rename(target + ".tmp.tif", target)
    return root


@pytest.fixture(scope="module", params=["2.0", "3.0"])
def served(request: pytest.FixtureRequest, image_root: str, tmp_path_factory: pytest.TempPathFactory):
    """``(version, stack)``: nginx -> iipsrv-py speaking that IIIF version by default."""
    version = request.param
    workdir = str(tmp_path_factory.mktemp(f"validator-v{version[0]}"))
    env = {
        "FILESYSTEM_PREFIX": image_root + "/",
        "URI_MAP": URI_MAP,
        "CORS": "*",
        "IIIF_VERSION": version[0],
        "VERBOSITY": "1",
    }
    with servers.nginx_stack(workdir, workers=2, env=env) as front:
        yield version, front


def expected_tests(version: str, level: int) -> list[str]:
    """The validator's own list of tests for a version up to a level (what it will run)."""
    from iiif_validator.validator import TestSuite, ValidationInfo

    listed = TestSuite(ValidationInfo()).list_tests(version)
    return sorted(name for name, test in listed.items() if test["level"] <= level)


def validate(stack: servers.Stack, version: str, options: list[str], expected: list[str]) -> None:
    """Run the validator with ``options``; every test of ``expected`` must run and pass."""
    assert expected, "the validator lists no tests to run"
    argv = [VALIDATOR, "-s", f"127.0.0.1:{stack.nginx.port}", "-p", "iiif", "-i", IDENTIFIER]
    argv += [f"--version={version}", *options]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=VALIDATOR_TIMEOUT, env=servers.base_env())
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the validator ran longer than {VALIDATOR_TIMEOUT}s") from exc
    output = done.stdout + done.stderr
    context = f"$ {' '.join(argv)}\n{output[-8000:]}\n--- server log ---\n{stack.server.log()[-3000:]}"

    assert DONE.findall(output) == [(str(len(expected)), "0")], context
    verdicts = {name: verdict for _, name, verdict in VERDICT.findall(output)}
    assert sorted(verdicts) == sorted(expected), context
    assert set(verdicts.values()) == {"PASS"}, context
    assert "Is Warning?: True" not in output, context
    assert done.returncode == 0, context
    assert stack.server.alive(), "the server died during the validation"


@pytest.mark.parametrize("level", [0, 1, 2])
def test_iiif_validator_levels(served: tuple[str, servers.Stack], level: int) -> None:
    """Every test the validator has for the version up to ``level``: 0 failures, 0 warnings."""
    version, stack = served
    validate(stack, version, ["--level", str(level)], expected_tests(version, level))


# The validator's optional tests ("level 3") for what info.json announces beyond level 2:
# extraFormats tif, the canonical and profile Link headers, rotationArbitrary, mirroring and
# sizeUpscaling.  Its format_webp test cannot run on Python 3 (it calls urllib.urlopen), so WebP
# is checked by the functional tests instead; GIF, JP2 and PDF are neither served nor announced.
ANNOUNCED_EXTRAS = [
    "format_tif",
    "linkheader_canonical",
    "linkheader_profile",
    "rot_full_non90",
    "rot_mirror",
    "rot_mirror_180",
    "rot_region_non90",
    "size_up",
]


def test_iiif_validator_announced_extras(served: tuple[str, servers.Stack]) -> None:
    version, stack = served
    listed = expected_tests(version, 3)
    assert set(ANNOUNCED_EXTRAS) <= set(listed), "the validator no longer has one of these tests"
    validate(stack, version, [option for name in ANNOUNCED_EXTRAS for option in ("--test", name)], ANNOUNCED_EXTRAS)


def test_shipped_nginx_location_serves_every_protocol(served: tuple[str, servers.Stack]) -> None:
    """conf/nginx/iipsrv_py.conf passes the classic address and /iiif/, /deepzoom/ and
    /zoomify/ (URI_MAP as its comment says) through its one location."""
    version, stack = served
    session, base = stack.session, stack.nginx.base_url

    def get(path: str) -> requests.Response:
        return session.get(base + path, timeout=servers.HTTP_TIMEOUT, allow_redirects=False)

    classic = get(f"{servers.FCGI_PATH}?FIF={IDENTIFIER}&OBJ=Max-size")
    assert classic.status_code == 200 and classic.text == "Max-size:1000 1000\r\n"
    query_form = get(f"{servers.FCGI_PATH}?IIIF=/{IDENTIFIER}/info.json")
    assert query_form.status_code == 200 and query_form.json()["width"] == 1000
    info = get(f"/iiif/{IDENTIFIER}/info.json")
    assert info.status_code == 200
    assert info.json()["id" if version == "3.0" else "@id"] == f"{base}/iiif/{IDENTIFIER}"
    redirect = get(f"/iiif/{IDENTIFIER}")
    assert redirect.status_code == 303 and redirect.headers["Location"] == f"{base}/iiif/{IDENTIFIER}/info.json"
    dzi = get(f"/deepzoom/{IDENTIFIER}.dzi")
    assert dzi.status_code == 200 and 'Width="1000" Height="1000"' in dzi.text
    assert get(f"/deepzoom/{IDENTIFIER}_files/0/0_0.jpg").headers["Content-Type"] == "image/jpeg"
    zoomify = get(f"/zoomify/{IDENTIFIER}/ImageProperties.xml")
    assert zoomify.status_code == 200 and 'WIDTH="1000" HEIGHT="1000"' in zoomify.text
    assert get(f"/zoomify/{IDENTIFIER}/TileGroup0/0-0-0.jpg").headers["Content-Type"] == "image/jpeg"
    assert get("/elsewhere/x").status_code == 404  # nginx's own: not passed to the server
