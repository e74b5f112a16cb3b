"""The built-in slide viewer: the pages ``/view/{id}`` and ``/`` and the files they load.

The pages are plain HTML written here; the viewer's behaviour is ``static/viewer.js`` and its
look ``static/viewer.css`` (package data).  OpenSeadragon is not in the package: it comes from
its pinned npm package (``npm-lock.json`` here), unpacked by ``scripts/fetch_npm.py`` into
``VIEWER_ASSETS`` -- the server never fetches anything, and pages work with no internet.

Everything a request brings into a page (slide ids, the signed query) goes in as JSON inside a
``<script type="application/json">`` element with ``<``, ``>`` and ``&`` escaped, or through
``html.escape``: no request data reaches the page unescaped.
"""

from __future__ import annotations

import html
import json
import os
import sys
from collections.abc import Mapping
from urllib.parse import quote

from ..protocols.rest import ASSETS

HERE = os.path.dirname(os.path.abspath(__file__))
STATIC = os.path.join(HERE, "static")
LOCK = os.path.join(HERE, "npm-lock.json")
# Where the viewer's files are served from: /view/_assets/<file> for ours, and
# /view/_assets/npm/<package>/<path> for the npm packages in VIEWER_ASSETS.  A slide whose id
# starts with "_assets/" cannot be viewed (its API routes still work).
ASSETS_PATH = ASSETS
OPENSEADRAGON = "npm/openseadragon/build/openseadragon/"


# The types of the files a viewer loads (mimetypes' answers vary between Python versions).
MIME_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


def default_assets_dir() -> str:
    """VIEWER_ASSETS when unset: beside the installed package's Python environment."""
    return os.path.join(sys.prefix, "share", "iipsrv_py", "node_modules")


def _json_for_html(value: object) -> str:
    """JSON safe inside a <script> element: no "</script>", no comment or entity openers."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def slide_path(slide_id: str) -> str:
    """A slide id in a route: every character but unreserved ones percent-encoded, "/" as %2F
    (one path segment, whatever the id holds)."""
    return quote(slide_id, safe="")


def _page(title: str, body: str, config: Mapping[str, object]) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{html.escape(title)}</title>"
        '<link rel="icon" href="data:,">'
        f'<link rel="stylesheet" href="{ASSETS_PATH}viewer.css">'
        "</head><body>"
        f'<script type="application/json" id="config">{_json_for_html(config)}</script>'
        f"{body}</body></html>\n"
    )


def view_page(slide_id: str, query: str) -> str:
    """``/view/{id}``: OpenSeadragon on the slide's DZI, with navigator, rotation, full screen,
    keyboard shortcuts, a scale bar from its MPP, a metadata panel and its label and macro.
    ``query`` ("" or "?vt=...&exp=...") is appended to every request the page makes."""
    base = "/slides/" + slide_path(slide_id)
    config = {
        "slide": slide_id,
        "info": base,
        "dzi": base + "/dzi",
        "associated": base + "/associated/",
        "query": query,
        "openseadragon": ASSETS_PATH + OPENSEADRAGON,
    }
    body = (
        '<header class="bar"><a class="home" href="/" title="All slides">&#8962;</a>'
        f'<h1 id="title">{html.escape(slide_id)}</h1>'
        '<button id="toggle-panel" type="button" aria-expanded="true" title="Details (i)">i</button></header>'
        '<main><div id="viewer" tabindex="0" aria-label="slide viewer"></div>'
        '<div id="scalebar" aria-live="polite" hidden><div class="bar-line"></div><span class="bar-label"></span></div>'
        '<aside id="panel"><section id="pictures"></section><dl id="metadata"></dl>'
        '<p class="keys">Keys: <kbd>+</kbd>/<kbd>-</kbd> zoom, <kbd>w a s d</kbd> or arrows pan, '
        "<kbd>0</kbd> home, <kbd>r</kbd>/<kbd>R</kbd> rotate, <kbd>f</kbd> full screen, <kbd>i</kbd> details</p>"
        '</aside></main><p id="message" role="alert" hidden></p>'
        f'<script src="{ASSETS_PATH}{OPENSEADRAGON}openseadragon.min.js"></script>'
        f'<script src="{ASSETS_PATH}viewer.js"></script>'
    )
    return _page(slide_id, body, config)


def index_page(slides: list[tuple[str, str]], more: bool) -> str:
    """``/``: the slides, each a link to its viewer (``(id, href)`` pairs; hrefs signed when
    auth is on), filtered as one types."""
    items = "".join(
        f'<li><a href="{html.escape(href, quote=True)}">{html.escape(slide_id)}</a></li>' for slide_id, href in slides
    )
    note = '<p class="more">More slides than shown: use the <code>/slides</code> API to page through them.</p>'
    body = (
        '<header class="bar"><h1>Slides</h1>'
        '<input id="filter" type="search" placeholder="Filter" aria-label="Filter slides"></header>'
        f'<main class="list"><ul id="slides">{items}</ul>{note if more else ""}'
        f"{'' if slides else '<p>No slides under the root.</p>'}</main>"
        f'<script src="{ASSETS_PATH}index.js"></script>'
    )
    return _page("Slides", body, {})


def view_href(slide_id: str) -> str:
    return "/view/" + slide_path(slide_id)


def asset(relative: str, assets_dir: str) -> tuple[bytes, str] | None:
    """The file ``/view/_assets/<relative>`` names, with its MIME type: the viewer's own files,
    or ``npm/<package>/...`` from ``assets_dir``; None when there is no such file or the path
    would leave its directory."""
    if relative.startswith("npm/"):
        root, inner = assets_dir, relative[len("npm/") :]
    else:
        root, inner = STATIC, relative
    parts = inner.split("/")
    if not inner or any(part in ("", ".", "..") or "\\" in part or "\0" in part for part in parts):
        return None
    path = os.path.join(root, *parts)
    real_root = os.path.realpath(root)
    if not os.path.realpath(path).startswith(real_root + os.sep) or not os.path.isfile(path):
        return None
    with open(path, "rb") as handle:
        data = handle.read()
    return data, MIME_TYPES.get(os.path.splitext(path)[1].lower(), "application/octet-stream")
