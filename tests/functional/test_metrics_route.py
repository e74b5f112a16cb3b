"""``GET /metrics`` of one application in-process (no pool: the values live in this process),
read back with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests import helpers

IMAGE = "tif-rgb-3000x2000-5lvl-256tile-deflate.tif"


def scrape(app: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    result = helpers.call(app, path="/metrics")
    assert result.status == 200
    assert result.header("content-type") == "text/plain; version=0.0.4; charset=utf-8"
    assert result.header("cache-control") == "no-store"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(result.body.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_by_protocol_status_and_bytes() -> None:
    app = helpers.make_app()
    before = scrape(app)
    sizes = []
    for col in range(3):
        result = helpers.call(app, f"FIF={IMAGE}&JTL=2,{col}")
        assert result.status == 200
        sizes.append(len(result.body))
    assert helpers.call(app, "IIIF=/missing.tif/info.json").status == 404
    head = helpers.call(app, f"FIF={IMAGE}&JTL=2,0", method="HEAD")
    assert head.status == 200 and head.body == b""
    after = scrape(app)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("iipsrv_requests_total", protocol="IIP", status="200") == 4
    assert grew("iipsrv_requests_total", protocol="IIIF", status="404") == 1
    # The first scrape is counted once it was answered.
    assert grew("iipsrv_requests_total", protocol="metrics", status="200") == 1
    # Bytes are what was sent: a HEAD sends none.
    assert grew("iipsrv_response_bytes_total", protocol="IIP") == sum(sizes)
    assert grew("iipsrv_request_duration_seconds_count", protocol="IIP") == 4
    # The HEAD repeated a tile: answered by the shortcut layer, counted as its hit.
    assert grew("iipsrv_cache_lookups_total", layer="shortcut", result="hit") == 1


def test_metrics_need_no_signature_and_can_be_turned_off() -> None:
    signed = helpers.make_app(AUTH_SECRET="k" * 32)
    assert helpers.call(signed, f"FIF={IMAGE}&OBJ=Max-size").status == 401
    assert "iipsrv_requests_total" in helpers.call(signed, path="/metrics").body.decode()
    off = helpers.make_app(METRICS="0")
    assert helpers.call(off, path="/metrics").status == 404
