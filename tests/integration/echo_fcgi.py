"""A FastCGI application that answers with its WSGI environ as JSON, served by iipsrv_py's own
pool and flup glue, so a test can see exactly what the shipped nginx configuration passes.

    python echo_fcgi.py HOST:PORT|/path/to.sock [native|flup]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from typing import Any

from iipsrv_py import server


def echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    variables = {name: value for name, value in environ.items() if isinstance(value, str)}
    length = int(environ.get("CONTENT_LENGTH") or 0)
    variables["body"] = environ["wsgi.input"].read(length).decode("latin-1") if length else ""
    body = json.dumps(variables).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


if __name__ == "__main__":
    engine = sys.argv[2] if len(sys.argv) > 2 else "native"
    server.serve_fastcgi(server.listen(sys.argv[1], 16), 1, lambda: echo, engine)
