"""``iipsrv-py sign --path P [--ttl S] [--base-url U] [--param k=v ...] [--format url|json|signature]
[--secret S]``: print a signed URL (``auth.py``), its last line of output.

The secret is ``--secret``, else AUTH_SECRET (or the file AUTH_SECRET_FILE names).  Exits 2 on a
usage error or when there is no secret.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TextIO

from .auth import signed_query
from .settings import SettingsError, read_auth_secret

DEFAULT_TTL = 3600


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iipsrv-py sign",
        description="Print a signed URL (exp and sig added) for a server with AUTH_SECRET set.",
    )
    parser.add_argument(
        "--path",
        required=True,
        help="the request path exactly as it will be sent, percent-encoding included "
        "(e.g. /fcgi-bin/iipsrv.fcgi, /iiif/a%%2Fb.tif/full/max/0/default.jpg)",
    )
    parser.add_argument("--ttl", type=int, default=DEFAULT_TTL, metavar="S", help="seconds of validity (default 3600)")
    parser.add_argument("--base-url", default="", metavar="U", help="scheme://host[:port] put before the path")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="K=V",
        help="a query parameter (unencoded value), kept in this order; repeat for several",
    )
    parser.add_argument("--format", choices=("url", "json", "signature"), default="url", help="what to print")
    parser.add_argument("--secret", help="the shared secret (default: AUTH_SECRET or AUTH_SECRET_FILE)")
    return parser


def main(argv: list[str], env: dict[str, str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        secret = args.secret or read_auth_secret(os.environ if env is None else env)
    except SettingsError as exc:
        print(f"iipsrv-py sign: {exc}", file=sys.stderr)
        return 2
    if not secret:
        print("iipsrv-py sign: no secret: give --secret or set AUTH_SECRET", file=sys.stderr)
        return 2
    if not args.path.startswith("/"):
        parser.error("--path must start with /")
    if args.ttl < 1:
        parser.error("--ttl must be at least 1")
    params: list[tuple[str, str]] = []
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--param {item!r} must be NAME=VALUE")
        if name in ("exp", "sig"):
            parser.error(f"--param {name} is added by the command")
        params.append((name, value))
    exp = int(time.time()) + args.ttl
    query, sig = signed_query(secret, args.path, params, exp)
    url = f"{args.base_url.rstrip('/')}{args.path}?{query}"
    if args.format == "json":
        print(json.dumps({"url": url, "path": args.path, "exp": exp, "sig": sig}), file=out)
    elif args.format == "signature":
        print(sig, file=out)
    else:
        print(url, file=out)
    return 0
