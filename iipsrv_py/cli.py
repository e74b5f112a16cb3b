"""Command line: ``iipsrv-py [--bind ADDR | --http HOST:PORT | --debug] [--workers N] ... [ROOT]``,
and the subcommands ``iipsrv-py check ...`` (``check.py``) and ``iipsrv-py sign ...``
(``sign.py``).  ROOT, a directory or ``s3://bucket/prefix``, is the image root
(FILESYSTEM_PREFIX): ``iipsrv-py --http :3000 /slides`` serves a directory with one command."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import resource
import sys

from . import __version__, metrics
from . import log as logsetup
from .settings import Settings, SettingsError, from_environ, summary, with_root

log = logging.getLogger("iipsrv_py")

GC_YOUNG_THRESHOLD = 10_000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iipsrv-py",
        description="IIPImage-compatible image server (IIP, IIIF, DeepZoom, Zoomify). "
        "Configured by iipsrv's environment variables; see the README. "
        "`iipsrv-py check [ROOT] [--list-slides] [--test-slide ID]` checks the image storage; "
        "`iipsrv-py sign --path P [--ttl S] [--param K=V ...]` prints a signed URL.",
    )
    front = parser.add_mutually_exclusive_group()
    front.add_argument(
        "--bind",
        metavar="ADDR",
        help="serve FastCGI on HOST:PORT, :PORT (all interfaces) or a unix socket path. "
        "Without --bind, --http or --debug, fd 0 must be a listening socket (spawn-fcgi, mod_fcgid)",
    )
    front.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve plain HTTP with gunicorn instead of FastCGI (default from HTTP_BIND)",
    )
    front.add_argument(
        "--debug",
        action="store_true",
        help="read one request string per line of stdin, write each response body to ./iipsrv.debug",
    )
    parser.add_argument("--backlog", type=int, default=2048, metavar="N", help="listen backlog (default 2048)")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes (default: WORKERS, else one per CPU; 1 when started on fd 0)",
    )
    parser.add_argument(
        "--engine",
        choices=("native", "flup"),
        default="native",
        help="FastCGI protocol code: native (default; keeps connections alive, several per worker) "
        "or flup (one connection at a time per worker)",
    )
    parser.add_argument("--version", action="version", version=f"iipsrv-py {__version__}")
    parser.add_argument(
        "root",
        nargs="?",
        metavar="ROOT",
        help="the images to serve: a directory or s3://bucket/prefix (sets FILESYSTEM_PREFIX)",
    )
    return parser


def _raise_file_limit() -> None:
    # Each cached image keeps its file open; the default soft limit of 1024 is too low for
    # MAX_METADATA_CACHE_SIZE=1000 plus sockets.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def load_settings() -> Settings:
    try:
        settings, warnings = from_environ(os.environ)
    except SettingsError as exc:
        print(f"iipsrv-py: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logsetup.setup(settings)
    for warning in warnings:
        log.warning("configuration: %s", warning)
    if settings.auth_secret:
        log.info("signed URLs required (AUTH_SECRET set)")
    return settings


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        from . import check

        return check.main(argv[1:], load_settings())
    if argv[:1] == ["sign"]:
        from . import sign

        return sign.main(argv[1:])
    args = build_parser().parse_args(argv)
    settings = with_root(load_settings(), args.root)
    _raise_file_limit()
    # A request allocates a few hundred objects and frees them again; with CPython's default
    # (a young-generation collection every 700 allocations) collections over the opened images'
    # structures took a fifth of a warm request.  The server makes no reference cycles of
    # note, so collecting every 10000 allocations costs memory that is never seen.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    from . import server
    from .app import Application
    from .warmup import WarmUp

    def make_app() -> Application:
        return Application(settings)

    if args.workers is not None and args.workers < 1:
        print("iipsrv-py: --workers must be at least 1", file=sys.stderr)
        return 2
    workers = args.workers or settings.worker_count

    log.warning("effective settings: %s", summary(settings))
    if args.debug:
        failures = server.run_debug(make_app(), sys.stdin)  # type: ignore[arg-type]
        return 1 if failures else 0
    # Before any worker forks, and before anything imports prometheus_client.
    metrics.setup(settings)

    http_bind = args.http or (settings.http_bind if not args.bind else "")
    if http_bind:
        log.warning("iipsrv-py %s serving HTTP on %s with %d workers", __version__, http_bind, workers)
        server.serve_http(http_bind, workers, make_app, settings.verbosity, settings.request_timeout)
        return 0

    if args.bind:
        try:
            sock = server.listen(args.bind, args.backlog)
        except (OSError, ValueError) as exc:
            print(f"iipsrv-py: cannot listen on {args.bind}: {exc}", file=sys.stderr)
            return 2
        log.warning("iipsrv-py %s serving FastCGI on %s", __version__, args.bind)
    else:
        inherited = server.inherited_socket()
        if inherited is None:
            print(
                "iipsrv-py: no --bind, --http or --debug given and fd 0 is not a listening socket.\n"
                "Start it with --bind HOST:PORT, --http HOST:PORT, or from spawn-fcgi / mod_fcgid.",
                file=sys.stderr,
            )
            return 2
        sock = inherited
        # The process manager decides how many of us run: one worker each unless told.
        workers = args.workers or settings.workers or 1
        log.warning("iipsrv-py %s serving FastCGI on the inherited socket", __version__)
    server.serve_fastcgi(
        sock, workers, make_app, args.engine, WarmUp(Application, settings), settings.request_timeout, bool(args.bind)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
