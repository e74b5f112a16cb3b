"""What an operator sees of a running pool: /metrics summed across pre-forked workers and read
back with prometheus_client's own parser, the access line of every request, the start-up
summary, and the supervisor replacing a worker stuck past REQUEST_TIMEOUT."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.memcached_server import ACCESS_LINE, fastcgi_get
from tests.integration.servers import free_port, http_session, nginx_stack, running, wait_until

IMAGE = "tif-rgb-3000x2000-5lvl-256tile-deflate.tif"
SLIDE = "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs"


def _fixture_exists(name: str) -> str:
    from tests import helpers

    path = helpers.fixture(name)
    assert os.path.exists(path), f"{name} is missing: run scripts/make_test_images.py"
    return name


def scrape(address: tuple[str, int]) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """/metrics straight from the pool over FastCGI, parsed by prometheus_client: sample name ->
    {sorted labels: value}."""
    response = fastcgi_get(address, "", path="/metrics")
    assert response.status == 200, response.stdout[:300]
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name`` over the series whose labels include ``labels``."""
    want = set(labels.items())
    return sum(value for key, value in samples.get(name, {}).items() if want <= set(key))


def test_metrics_add_up_across_workers_and_match_the_access_lines(tmp_path) -> None:
    image = _fixture_exists(IMAGE)
    slide = _fixture_exists(SLIDE)
    # The known mix, each sent through nginx from several threads so both workers answer.
    mix: list[tuple[str, str, str, int]] = []  # (path, query, protocol, expected status)
    for col in range(40):
        mix.append(("/fcgi-bin/iipsrv.fcgi", f"FIF={image}&JTL=4,{col}", "IIP", 200))
    for _ in range(20):
        mix.append(("/fcgi-bin/iipsrv.fcgi", f"FIF={image}&JTL=4,0", "IIP", 200))  # repeats: caches answer
    for width in range(100, 130):
        mix.append(("/fcgi-bin/iipsrv.fcgi", f"IIIF=/{image}/full/{width},/0/default.jpg", "IIIF", 200))
    for n in range(10):
        mix.append(("/fcgi-bin/iipsrv.fcgi", f"IIIF=/no-such-{n}.tif/info.json", "IIIF", 404))
    for n in range(7):
        mix.append(("/fcgi-bin/iipsrv.fcgi", f"FIF={image}&JTL=4,{n}&CVT=bogus{n}&ROT=x", "IIP", 400))
    for _ in range(5):
        mix.append((f"/slides/{slide}", "", "REST", 200))
    expected = Counter((protocol, status) for _, _, protocol, status in mix)

    port = free_port()
    env = {"VERBOSITY": "2", "MAX_IMAGE_CACHE_SIZE": "64"}
    with nginx_stack(str(tmp_path), ("127.0.0.1", port), workers=2, env=env) as stack:
        base = stack.nginx.base_url

        def send(item: tuple[str, str, str, int]) -> tuple[int, int, str]:
            path, query, _, _ = item
            with http_session() as session:
                answer = session.get(base + path + (f"?{query}" if query else ""), timeout=30)
            return answer.status_code, len(answer.content), answer.headers.get("Content-Type", "")

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(send, mix))
        assert [status for status, _, _ in results] == [status for *_, status in mix]
        sent_bytes = Counter()
        for (_, _, protocol, _), (_, size, _) in zip(mix, results, strict=True):
            sent_bytes[protocol] += size

        time.sleep(1.6)  # the workers write their tallies every second
        samples = scrape(("127.0.0.1", port))
        log = stack.server.log()

    # Requests by protocol and status: exactly the mix (the scrape itself is counted after).
    counted = {
        (dict(key)["protocol"], int(dict(key)["status"])): value
        for key, value in samples["iipsrv_requests_total"].items()
    }
    assert counted == dict(expected)
    # Latency histograms: one observation per request, cumulative buckets, +Inf = count.
    for protocol in ("IIP", "IIIF", "REST"):
        n = sum(count for (p, _), count in expected.items() if p == protocol)
        assert total(samples, "iipsrv_request_duration_seconds_count", protocol=protocol) == n
        inf = total(samples, "iipsrv_request_duration_seconds_bucket", protocol=protocol, le="+Inf")
        assert inf == n
        buckets = sorted(
            (float(dict(key)["le"]), value)
            for key, value in samples["iipsrv_request_duration_seconds_bucket"].items()
            if dict(key)["protocol"] == protocol
        )
        assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets))
        assert 0 < total(samples, "iipsrv_request_duration_seconds_sum", protocol=protocol) < n * 30
        # Bytes: what the client received, protocol by protocol.
        assert total(samples, "iipsrv_response_bytes_total", protocol=protocol) == sent_bytes[protocol]

    # Both workers answered part of the mix, and their counts were summed.
    access = [(line, m) for line in log.splitlines() if (m := ACCESS_LINE.search(line)) and m["protocol"] != "metrics"]
    lines = [m for _, m in access]
    pids = Counter(re.search(r"iipsrv-py\[(\d+)\]", line).group(1) for line, _ in access)
    assert len(pids) == 2, f"one worker answered everything: {pids}"
    # One access line per request: protocol, status and bytes as the client saw them.
    assert len(lines) == len(mix)
    logged = Counter((m["protocol"], int(m["status"])) for m in lines)
    assert logged == expected
    assert sum(int(m["bytes"]) for m in lines) == sum(sent_bytes.values())
    layers = Counter(m["layer"] for m in lines if m["status"] == "200")
    # Every successful line names its answerer: each distinct tile, view and the slide once
    # rendered at least; the 20 repeated tiles and 4 repeated slide documents mostly by a cache.
    assert sum(layers.values()) == 95 and set(layers) <= {"rendered", "shortcut", "worker"}
    assert layers["rendered"] >= 40 + 30 + 1
    assert layers["shortcut"] + layers["worker"] >= 18  # a repeat may race its first rendering

    # Cache lookups per layer: the repeats are hits of the request-text shortcut layer, and
    # hits and misses add up with what the access lines say was rendered.
    shortcut_hits = total(samples, "iipsrv_cache_lookups_total", layer="shortcut", result="hit")
    assert shortcut_hits == layers["shortcut"]
    assert total(samples, "iipsrv_cache_lookups_total", layer="metadata", result="hit") > 0
    assert total(samples, "iipsrv_cache_lookups_total", layer="metadata", result="miss") >= 2  # image and slide
    assert total(samples, "iipsrv_cache_lookups_total", layer="pixels", result="miss") > 0
    # No restarts, no S3 in this pool.
    assert total(samples, "iipsrv_worker_restarts_total") == 0
    assert total(samples, "iipsrv_s3_requests_total") == 0


def test_start_up_summary_names_every_setting_and_hides_secrets(tmp_path) -> None:
    env = {"AUTH_SECRET": "hush-0123456789", "JPEG_QUALITY": "81", "S3_ENDPOINT": "http://ak:sk-hidden@127.0.0.1:1"}
    with nginx_stack(str(tmp_path), workers=1, env=env) as stack:
        log = stack.server.log()
    line = next(line for line in log.splitlines() if "effective settings:" in line)
    assert "hush-0123456789" not in log and "sk-hidden" not in log
    assert "auth_secret=(set)" in line and "jpeg_quality=81" in line and "request_timeout=30.0" in line
    assert "max_decoded_pixels=268435456" in line and "metrics=True" in line


def test_a_worker_stuck_past_the_time_limit_is_replaced_and_counted(tmp_path) -> None:
    """A store that accepts connections and never answers: the request sits in a socket read
    far longer than REQUEST_TIMEOUT (S3_READ_TIMEOUT is 60 s), so only the supervisor can end
    it.  The worker is killed after the hard limit, replaced, and the pool goes on."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # never accepted: the kernel completes the handshakes, nobody answers
    port = free_port()
    env = {
        "FILESYSTEM_PREFIX": "s3://bucket/",
        "S3_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}",
        "S3_READ_TIMEOUT": "60",
        "S3_RETRIES": "0",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "REQUEST_TIMEOUT": "1",
    }
    try:
        with nginx_stack(str(tmp_path), ("127.0.0.1", port), workers=2, env=env) as stack:
            before = set(stack.server.workers())
            started = time.monotonic()
            with http_session() as session:
                answer = session.get(stack.nginx.url("IIIF=/slide.tif/info.json"), timeout=30)
            elapsed = time.monotonic() - started
            # nginx answers 502 for the connection the killed worker dropped: after the hard
            # limit (2 s) and the supervisor's next look (at most a second later).
            assert answer.status_code == 502
            assert 1.9 < elapsed < 6.0, elapsed
            wait_until(lambda: len(stack.server.workers()) == 2, 10, "the pool to have two workers again")
            after = set(stack.server.workers())
            assert len(before - after) == 1, "exactly one worker was replaced"
            assert all(running(pid) for pid in after)
            # The pool serves what does not need the store, on either worker.
            with http_session() as session:
                for _ in range(6):
                    health = session.get(stack.nginx.base_url + "/health", timeout=10)
                    assert health.status_code == 200 and health.json()["status"] == "healthy"
            samples = scrape(("127.0.0.1", port))
            log = stack.server.log()
    finally:
        silent.close()
    assert total(samples, "iipsrv_worker_restarts_total", reason="timeout") == 1
    assert total(samples, "iipsrv_worker_restarts_total", reason="exited") == 0
    assert re.search(r"has been in one request for [0-9.]+s \(REQUEST_TIMEOUT=1s\); killing it", log)


def test_killed_workers_are_counted_as_restarts(tmp_path) -> None:
    port = free_port()
    with nginx_stack(str(tmp_path), ("127.0.0.1", port), workers=2) as stack:
        for pid in stack.server.workers():
            os.kill(pid, signal.SIGKILL)
            wait_until(
                lambda pid=pid: pid not in stack.server.workers() and len(stack.server.workers()) == 2,
                10,
                "a replacement",
            )
        image = _fixture_exists(IMAGE)
        assert stack.get(f"FIF={image}&OBJ=Max-size").text == "Max-size:3000 2000\r\n"
        samples = scrape(("127.0.0.1", port))
    assert total(samples, "iipsrv_worker_restarts_total", reason="exited") == 2


def test_metrics_off_is_a_404(tmp_path) -> None:
    port = free_port()
    with nginx_stack(str(tmp_path), ("127.0.0.1", port), workers=1, env={"METRICS": "0"}):
        response = fastcgi_get(("127.0.0.1", port), "", path="/metrics")
    assert response.status == 404
