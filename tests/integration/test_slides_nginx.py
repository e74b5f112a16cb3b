"""The slide REST API, the viewer and signed URLs behind the shipped nginx location (FastCGI),
answering what the application answers in-process for the same requests."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest

from iipsrv_py.auth import signed_query
from tests import helpers
from tests.browser.test_openseadragon import NODE_MODULES
from tests.integration import servers

pytestmark = pytest.mark.integration

SVS = "svs-rgb-4097x2999-3lvl-step4-256tile-jpeg-label-macro-mpp.svs"
SECRET = "nginx-secret"


def test_rest_routes_and_the_viewer_through_nginx(tmp_path, fixtures) -> None:
    app = helpers.make_app()
    paths = [
        "/health",
        "/slides?limit=3",
        f"/slides/{SVS}",
        f"/slides/{quote(SVS)}/thumbnail?max_size=200",
        f"/slides/{SVS}/associated/label",
        f"/slides/{SVS}/dzi",
        f"/slides/{SVS}/dzi_files/10/1_1.jpeg",
        f"/tiles/{SVS}/0/2/1.jpg?quality=70",
    ]
    with servers.nginx_stack(str(tmp_path), env={"VIEWER_ASSETS": NODE_MODULES}) as stack:
        base = stack.nginx.base_url
        for path in paths:
            through = stack.session.get(base + path, timeout=servers.HTTP_TIMEOUT)
            route, _, query = path.partition("?")
            direct = helpers.call(app, query, path=route)
            assert through.status_code == direct.status == 200, (path, through.status_code, through.text[:200])
            if through.headers["Content-Type"].startswith("application/json"):
                assert json.loads(through.content) == json.loads(direct.body), path
            else:
                assert through.content == direct.body, path
        page = stack.session.get(f"{base}/view/{quote(SVS, safe='')}", timeout=servers.HTTP_TIMEOUT)
        assert page.status_code == 200 and "openseadragon.min.js" in page.text
        script = stack.session.get(
            f"{base}/view/_assets/npm/openseadragon/build/openseadragon/openseadragon.min.js",
            timeout=servers.HTTP_TIMEOUT,
        )
        assert script.status_code == 200 and script.headers["Content-Type"].startswith("text/javascript")
        missing = stack.session.get(f"{base}/slides/no-such.svs", timeout=servers.HTTP_TIMEOUT)
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_signed_urls_through_nginx(tmp_path, fixtures) -> None:
    with servers.nginx_stack(str(tmp_path), env={"AUTH_SECRET": SECRET}) as stack:
        base = stack.nginx.base_url
        path = f"/tiles/{SVS}/0/0/0.jpg"
        assert stack.session.get(base + path, timeout=servers.HTTP_TIMEOUT).status_code == 401
        query = signed_query(SECRET, path, [], int(time.time()) + 300)[0]
        assert stack.session.get(f"{base}{path}?{query}", timeout=servers.HTTP_TIMEOUT).status_code == 200
        iip = "/fcgi-bin/iipsrv.fcgi"
        params = [("FIF", SVS), ("JTL", "0,0")]
        assert stack.get("FIF=" + SVS + "&JTL=0,0").status_code == 401
        signed = signed_query(SECRET, iip, params, int(time.time()) + 300)[0]
        assert stack.get(signed).status_code == 200
        assert stack.session.get(base + "/health", timeout=servers.HTTP_TIMEOUT).status_code == 200
