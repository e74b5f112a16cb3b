"""Limits that protect the host: request and parameter lengths, decoded pixels per request, the
per-request time limit, and the start-up summary that must not show secrets."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from iipsrv_py import deadline
from iipsrv_py.settings import from_environ, summary
from tests.helpers import call, make_app

IMAGE = "tif-grey-2000x1500-4lvl-256tile-none.tif"


def test_new_limits_are_read_and_clamped() -> None:
    settings, warnings = from_environ(
        {
            "MAX_DECODED_PIXELS": "1000000",
            "MAX_REQUEST_LENGTH": "10",  # below the floor: clamped, with a warning
            "MAX_PARAMETER_LENGTH": "512",
            "REQUEST_TIMEOUT": "2.5",
            "METRICS": "0",
            "METRICS_DIR": "/var/lib/iipsrv/metrics",
        }
    )
    assert settings.max_decoded_pixels == 1_000_000
    assert settings.max_request_length == 256
    assert any("MAX_REQUEST_LENGTH" in w for w in warnings)
    assert settings.max_parameter_length == 512
    assert settings.request_timeout == 2.5
    assert settings.metrics is False
    assert settings.metrics_dir == "/var/lib/iipsrv/metrics"
    defaults, _ = from_environ({})
    assert (defaults.max_request_length, defaults.max_parameter_length) == (8192, 4096)
    assert defaults.request_timeout == 30.0 and defaults.metrics is True
    # Prometheus' own variable names the directory when METRICS_DIR does not.
    assert from_environ({"PROMETHEUS_MULTIPROC_DIR": "/run/m"})[0].metrics_dir == "/run/m"


def test_a_request_string_over_the_limit_is_414_and_the_next_request_is_served() -> None:
    app = make_app(MAX_REQUEST_LENGTH="300")
    query = f"FIF={IMAGE}&OBJ=Max-size" + "&OBJ=IIP,1.0" * 40
    assert len(query) + len("/fcgi-bin/iipsrv.fcgi") > 300
    result = call(app, query)
    assert result.status == 414
    assert b"/" not in result.body.replace(b"text/plain", b"")  # no server path in the body
    ok = call(app, f"FIF={IMAGE}&OBJ=Max-size")
    assert ok.status == 200 and ok.body == b"Max-size:2000 1500\r\n"
    # IIIF paths count too (their request is the path).
    long_id = "a" * 400
    assert call(app, path=f"/iiif/{long_id}/info.json").status == 414


def test_one_parameter_over_its_limit_is_400_while_many_short_ones_pass() -> None:
    app = make_app(MAX_PARAMETER_LENGTH="100", MAX_REQUEST_LENGTH="4000")
    kernel = ",".join(["1"] * 60)  # CNV custom kernel: 119 characters
    assert call(app, f"FIF={IMAGE}&WID=64&CNV={kernel}&CVT=jpeg").status == 400
    many = f"FIF={IMAGE}" + "&OBJ=Max-size" * 20
    assert len(many) > 100
    result = call(app, many)
    assert result.status == 200 and result.body == b"Max-size:2000 1500\r\n" * 20
    # A POSTed form is judged the same way.
    posted = call(app, method="POST", body=f"FIF={IMAGE}&WID=64&CNV={kernel}&CVT=jpeg".encode())
    assert posted.status == 400


def test_max_decoded_pixels_reads_a_smaller_level_or_refuses() -> None:
    # The whole 2000x1500 image at full size needs 3,000,000 decoded pixels.
    plenty = make_app()
    tight = make_app(MAX_DECODED_PIXELS="1000000")
    full = call(plenty, f"FIF={IMAGE}&WID=2000&CVT=png")
    assert full.status == 200
    # 1,000,000 pixels: level 1 (1000x750) is read and upscaled, rather than level 0.
    smaller = call(tight, f"FIF={IMAGE}&WID=2000&CVT=png")
    assert smaller.status == 200
    a = np.asarray(Image.open(io.BytesIO(full.body)), dtype=np.int16)
    b = np.asarray(Image.open(io.BytesIO(smaller.body)), dtype=np.int16)
    assert a.shape == b.shape == (1500, 2000)
    assert not np.array_equal(a, b), "the tight server must have decoded another level"
    # An image with one level of 600x400 = 240,000 pixels: a view of all of it cannot be made
    # within 65,536 decoded pixels, a quarter of it can.
    tiny = make_app(MAX_DECODED_PIXELS="65536")
    single = "tif-grey-600x400-1lvl-256tile-deflate-miniswhite.tif"
    assert call(tiny, f"FIF={single}&WID=100&CVT=jpeg").status == 413
    assert call(tiny, f"IIIF=/{single}/full/100,/0/default.jpg").status == 413
    quarter = call(tiny, f"IIIF=/{single}/0,0,300,200/100,/0/default.jpg")
    assert quarter.status == 200 and Image.open(io.BytesIO(quarter.body)).size == (100, 67)


def test_request_timeout_fails_the_slow_request_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(REQUEST_TIMEOUT="5")
    # A clock that jumps 10 s at the first tile decode: the next check must stop the request.
    real = time.monotonic
    jumped = {"on": False}

    def clock() -> float:
        return real() + (10.0 if jumped["on"] else 0.0)

    monkeypatch.setattr(deadline.time, "monotonic", clock)
    from iipsrv_py import pipeline

    original = pipeline.Pipeline.tile

    def slow_tile(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        jumped["on"] = True
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pipeline.Pipeline, "tile", slow_tile)
    result = call(app, f"FIF={IMAGE}&WID=900&CVT=jpeg")
    assert result.status == 503
    assert b"took too long" in result.body
    # The next request starts its own clock and is served; caches hold nothing half-made.
    jumped["on"] = False
    monkeypatch.setattr(pipeline.Pipeline, "tile", original)
    again = call(app, f"FIF={IMAGE}&WID=900&CVT=jpeg")
    assert again.status == 200
    assert Image.open(io.BytesIO(again.body)).size == (900, 675)


def test_the_board_reports_how_long_a_worker_has_been_in_its_request() -> None:
    board = deadline.Board(3)
    board.attach(1)
    try:
        assert board.running_for(1, time.monotonic()) == 0.0
        deadline.start(5.0)
        later = time.monotonic() + 7.0
        assert 6.9 < board.running_for(1, later) < 7.5
        assert board.running_for(0, later) == 0.0 and board.running_for(2, later) == 0.0
        deadline.finish()
        assert board.running_for(1, later) == 0.0
    finally:
        deadline._board = None
    assert deadline.hard_limit(30) == 60 and deadline.hard_limit(0.2) == pytest.approx(1.2)


def test_the_start_up_summary_masks_secrets() -> None:
    settings, _ = from_environ(
        {
            "AUTH_SECRET": "s3cr3t-value-42",
            "S3_ENDPOINT": "http://user:pa55word@127.0.0.1:9000",
            "JPEG_QUALITY": "88",
        }
    )
    text = summary(settings)
    assert "s3cr3t-value-42" not in text and "pa55word" not in text and "user:" not in text
    assert "auth_secret=(set)" in text
    assert "jpeg_quality=88" in text and "127.0.0.1:9000" in text
    assert "auth_secret=(unset)" in summary(from_environ({})[0])
