"""One frozen Settings object, built once from the environment (iipsrv's variable names).

``from_environ`` is a pure function of a mapping: it returns the settings and the list of
warnings about clamped values, and raises ``SettingsError`` naming the variable when a value
cannot be parsed.  Nothing else in the package reads ``os.environ`` while serving.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PROTOCOLS = ("IIP", "IIIF", "DeepZoom", "Zoomify")


class SettingsError(ValueError):
    """A variable whose value cannot be used; the message names it."""


@dataclass(frozen=True)
class Settings:
    verbosity: int = 1
    logfile: str = ""  # "" = stderr; "syslog" = syslog
    max_image_cache_mb: float = 10.0
    max_metadata_cache: int = 1000
    filesystem_prefix: str = ""
    filesystem_suffix: str = ""
    filename_pattern: str = "_pyr_"
    jpeg_quality: int = 75
    png_quality: int = 1
    webp_quality: int = 50
    avif_quality: int = 50
    avif_codec: int = 0
    tiff_compression: int = 2
    tiff_quality: int = 1
    max_cvt: int = 5000  # -1: no limit
    max_layers: int = -1  # -1: all quality layers
    allow_upscaling: bool = True
    interpolation: int = 1
    watermark: str = ""
    watermark_probability: float = 1.0
    watermark_opacity: float = 1.0
    memcached_servers: tuple[tuple[str, int], ...] = ()  # (host, port) of each server, in order
    memcached_timeout: int = 86400
    cors: str = ""
    base_url: str = ""
    uri_map: tuple[tuple[str, str], ...] = ()
    cache_control: str = "max-age=86400"
    max_icc: int = 65536
    embed_icc: bool = True
    codec_passthrough: bool = True
    iiif_version: int = 3
    iiif_delimiter: str = ""
    iiif_extra_info: str = ""
    iiif_extensions: bool = False
    copyright: str = ""
    # New in iipsrv_py.
    workers: int = 0  # 0: one per CPU
    http_bind: str = ""
    deepzoom_overlap: int = 0
    deepzoom_format: str = "jpg"
    # Object storage (FILESYSTEM_PREFIX=s3://bucket/prefix/).
    s3_endpoint: str = ""  # S3-compatible stores; "" = AWS
    s3_region: str = "us-east-1"
    s3_block_size: int = 256 * 1024  # bytes: reads are whole, aligned blocks
    s3_cache_mb: float = 64.0  # S3_CACHE_SIZE: blocks kept per worker
    s3_identity_ttl: float = 5.0  # seconds an object's identity (ETag, size, mtime) is trusted
    s3_connect_timeout: float = 2.0
    s3_read_timeout: float = 5.0
    s3_retries: int = 2
    # Memcached client (MEMCACHED_SERVERS on): how long a request may wait for it, and how long
    # a server that failed is left alone.
    memcached_io_timeout: float = 0.05
    memcached_retry_interval: float = 10.0
    # Signed URLs (auth.py): on when set.  Kept out of repr() so no log line can show it.
    auth_secret: str = dataclasses.field(default="", repr=False)
    # The viewer's npm packages (OpenSeadragon), unpacked by scripts/fetch_npm.py; "" means the
    # default, <python prefix>/share/iipsrv_py/node_modules (viewer.default_assets_dir).
    viewer_assets: str = ""
    # Observability: /metrics, counted across the workers through files in one directory
    # ("" = a private temporary directory per pool).
    metrics: bool = True
    metrics_dir: str = ""
    # Limits that protect the host.  Decoded pixels per request (a request that needs more
    # decodes a smaller level or is refused with 413); the request string's length (414) and one
    # parameter's (400); seconds a request may run (503 past it; a worker stuck in a decoder
    # past it plus a grace is replaced; 0 = no limit).
    max_decoded_pixels: int = 1 << 28
    max_request_length: int = 8192
    max_parameter_length: int = 4096
    request_timeout: float = 30.0

    @functools.cached_property
    def fingerprint(self) -> str:
        """A short digest of every setting that can change a response body.

        It goes into ETags and cache keys, so that restarting with another JPEG_QUALITY
        (say) never lets a browser or memcached keep serving the old rendering.
        """
        fields = dataclasses.asdict(self)
        for name in (
            "verbosity",
            "logfile",
            "workers",
            "http_bind",
            "memcached_servers",
            "memcached_io_timeout",
            "memcached_retry_interval",
            "s3_cache_mb",
            "s3_identity_ttl",
            "s3_connect_timeout",
            "s3_read_timeout",
            "s3_retries",
            "auth_secret",  # decides who is served, never what: signed and open renders are alike
            "viewer_assets",
            "metrics",
            "metrics_dir",
            "max_request_length",
            "max_parameter_length",
            "request_timeout",
        ):
            fields.pop(name)
        return hashlib.blake2b(repr(sorted(fields.items())).encode(), digest_size=6).hexdigest()

    @functools.cached_property
    def iiif_extra(self) -> dict[str, Any]:
        """IIIF_EXTRA_INFO as the object merged into every info.json (validated at start-up)."""
        return json.loads(self.iiif_extra_info) if self.iiif_extra_info else {}

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)


class _Reader:
    """Reads typed values out of an environment mapping, collecting clamp warnings."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.warnings: list[str] = []

    def raw(self, *names: str) -> tuple[str, str] | None:
        for name in names:
            value = self.env.get(name)
            if value is not None and value.strip() != "":
                return name, value.strip()
        return None

    def string(self, name: str, default: str) -> str:
        value = self.env.get(name)
        return default if value is None else value

    def number(self, names: tuple[str, ...], default: float, lo: float, hi: float, kind: type) -> float:
        found = self.raw(*names)
        if found is None:
            return default
        name, text = found
        try:
            value = kind(float(text)) if kind is float else int(text, 10)
        except ValueError:
            raise SettingsError(f"{name}={text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if value < lo or value > hi:
            clamped = min(max(value, lo), hi)
            self.warnings.append(f"{name}={text} is out of range [{lo}, {hi}]; using {clamped}")
            value = clamped
        return value

    def integer(self, name: str, default: int, lo: int, hi: int, *aliases: str) -> int:
        return int(self.number((name, *aliases), default, lo, hi, int))

    def real(self, name: str, default: float, lo: float, hi: float) -> float:
        return float(self.number((name,), default, lo, hi, float))

    def flag(self, name: str, default: bool) -> bool:
        found = self.raw(name)
        if found is None:
            return default
        name, text = found
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name}={text!r} must be 0 or 1")


def parse_uri_map(text: str) -> tuple[tuple[str, str], ...]:
    """``'iiif=>IIIF deepzoom=>DeepZoom'`` -> ``(('iiif', 'IIIF'), ('deepzoom', 'DeepZoom'))``.

    Entries are separated by commas or whitespace.  Longer prefixes come first so that
    ``iiif/v2`` wins over ``iiif`` when both are mapped.
    """
    entries: list[tuple[str, str]] = []
    for item in text.replace(",", " ").split():
        prefix, sep, protocol = item.partition("=>")
        prefix = prefix.strip("/")
        canonical = next((p for p in PROTOCOLS if p.lower() == protocol.strip().lower()), None)
        if not sep or not prefix or canonical is None:
            raise SettingsError(
                f"URI_MAP entry {item!r} must be prefix=>protocol with protocol one of {', '.join(PROTOCOLS)}"
            )
        entries.append((prefix, canonical))
    entries.sort(key=lambda entry: -len(entry[0]))
    return tuple(entries)


MEMCACHED_PORT = 11211
# A host name (labels of letters, digits, "-" and "_" between dots) or an IPv4 address.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")


def parse_memcached_servers(text: str) -> tuple[tuple[str, int], ...]:
    """``'localhost, 10.0.0.2:11212 [::1]'`` -> ``(('localhost', 11211), ('10.0.0.2', 11212), ('::1', 11211))``.

    iipsrv's syntax: ``host[:port]`` separated by commas or whitespace, port 11211 when absent;
    an IPv6 address is written in brackets when it has a port.  A server named twice counts once
    (the client would hash keys onto it twice as often otherwise).
    """
    servers: list[tuple[str, int]] = []
    for item in text.replace(",", " ").split():
        server = _memcached_server(item)
        if server not in servers:
            servers.append(server)
    return tuple(servers)


def _memcached_server(item: str) -> tuple[str, int]:
    problem = f"MEMCACHED_SERVERS entry {item!r} must be host[:port] (an IPv6 address as [addr] or [addr]:port)"
    if item.startswith("["):
        address, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise SettingsError(problem)
        host, port_text = address, rest[1:] if rest else None
        if not _is_ipv6(host):
            raise SettingsError(problem)
    elif item.count(":") > 1:  # an IPv6 address without a port
        host, port_text = item, None
        if not _is_ipv6(host):
            raise SettingsError(problem)
    else:
        host, colon, port_text_or_empty = item.partition(":")
        port_text = port_text_or_empty if colon else None
        if not _HOST_NAME.fullmatch(host):
            raise SettingsError(problem)
    if port_text is None:
        return host, MEMCACHED_PORT
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 1 <= int(port_text) <= 65535:
        raise SettingsError(f"MEMCACHED_SERVERS entry {item!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def _deepzoom_format(text: str) -> str:
    value = text.strip().lower() or "jpg"
    if value not in ("jpg", "jpeg", "png", "webp"):
        raise SettingsError(f"DEEPZOOM_FORMAT={text!r} must be jpg, png or webp")
    return "jpg" if value == "jpeg" else value


def _json_object(name: str, text: str) -> str:
    """A JSON object, or its members without the braces, as normalised JSON text ("" if unset)."""
    text = text.strip()
    if not text:
        return ""
    for candidate in (text, "{" + text + "}"):
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return json.dumps(value, ensure_ascii=False, sort_keys=True)
    raise SettingsError(f"{name}={text[:80]!r} is not a JSON object (nor its members without the braces)")


def read_auth_secret(env: Mapping[str, str]) -> str:
    """AUTH_SECRET, or the contents of the file AUTH_SECRET_FILE names (without the line end);
    "" when neither is set.  Both set, an unreadable file or an empty one stop start-up."""
    secret = env.get("AUTH_SECRET", "")
    path = env.get("AUTH_SECRET_FILE", "").strip()
    if not path:
        return secret
    if secret:
        raise SettingsError("AUTH_SECRET and AUTH_SECRET_FILE are both set; set one of them")
    try:
        with open(path, encoding="utf-8") as file:
            secret = file.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"AUTH_SECRET_FILE cannot be read ({exc.__class__.__name__})") from None
    if not secret:
        raise SettingsError("AUTH_SECRET_FILE names an empty file")
    return secret


def from_environ(env: Mapping[str, str]) -> tuple[Settings, list[str]]:
    r = _Reader(env)
    max_cvt = r.integer("MAX_CVT", 5000, -1, 1_000_000)
    if max_cvt == 0:
        r.warnings.append("MAX_CVT=0 would forbid every output; using 1")
        max_cvt = 1
    logfile = r.string("LOGFILE", "").strip()
    settings = Settings(
        verbosity=r.integer("VERBOSITY", 1, 0, 6),
        logfile=logfile,
        max_image_cache_mb=r.real("MAX_IMAGE_CACHE_SIZE", 10.0, 0.0, 1_000_000.0),
        max_metadata_cache=r.integer("MAX_METADATA_CACHE_SIZE", 1000, 0, 1_000_000, "MAX_IMAGE_METADATA_CACHE_SIZE"),
        filesystem_prefix=r.string("FILESYSTEM_PREFIX", ""),
        filesystem_suffix=r.string("FILESYSTEM_SUFFIX", ""),
        filename_pattern=r.string("FILENAME_PATTERN", "_pyr_"),
        jpeg_quality=r.integer("JPEG_QUALITY", 75, 1, 100),
        png_quality=r.integer("PNG_QUALITY", 1, 0, 9),
        webp_quality=r.integer("WEBP_QUALITY", 50, -1, 100),
        avif_quality=r.integer("AVIF_QUALITY", 50, -1, 100),
        avif_codec=r.integer("AVIF_CODEC", 0, 0, 2),
        tiff_compression=r.integer("TIFF_COMPRESSION", 2, 0, 5),
        tiff_quality=r.integer("TIFF_QUALITY", 1, 0, 100),
        max_cvt=max_cvt,
        max_layers=r.integer("MAX_LAYERS", -1, -1, 1000),
        allow_upscaling=r.flag("ALLOW_UPSCALING", True),
        interpolation=r.integer("INTERPOLATION", 1, 0, 1),
        watermark=r.string("WATERMARK", ""),
        watermark_probability=r.real("WATERMARK_PROBABILITY", 1.0, 0.0, 1.0),
        watermark_opacity=r.real("WATERMARK_OPACITY", 1.0, 0.0, 1.0),
        memcached_servers=parse_memcached_servers(r.string("MEMCACHED_SERVERS", "")),
        memcached_timeout=r.integer("MEMCACHED_TIMEOUT", 86400, 0, 60 * 60 * 24 * 30),
        cors=r.string("CORS", "").strip(),
        base_url=r.string("BASE_URL", "").strip(),
        uri_map=parse_uri_map(r.string("URI_MAP", "")),
        cache_control=r.string("CACHE_CONTROL", "max-age=86400").strip(),
        max_icc=r.integer("MAX_ICC", 65536, -1, 1 << 30),
        embed_icc=r.flag("EMBED_ICC", True),
        codec_passthrough=r.flag("CODEC_PASSTHROUGH", True),
        iiif_version=r.integer("IIIF_VERSION", 3, 2, 3),
        iiif_delimiter=r.string("IIIF_DELIMITER", ""),
        iiif_extra_info=_json_object("IIIF_EXTRA_INFO", r.string("IIIF_EXTRA_INFO", "")),
        iiif_extensions=r.flag("IIIF_EXTENSIONS", False),
        copyright=r.string("COPYRIGHT", ""),
        workers=r.integer("WORKERS", 0, 0, 1024),
        http_bind=r.string("HTTP_BIND", "").strip(),
        deepzoom_overlap=r.integer("DEEPZOOM_OVERLAP", 0, 0, 64),
        deepzoom_format=_deepzoom_format(r.string("DEEPZOOM_FORMAT", "jpg")),
        s3_endpoint=r.string("S3_ENDPOINT", "").strip(),
        s3_region=r.string("S3_REGION", "").strip() or "us-east-1",
        s3_block_size=r.integer("S3_BLOCK_SIZE", 256 * 1024, 4096, 64 * 1024 * 1024),
        s3_cache_mb=r.real("S3_CACHE_SIZE", 64.0, 0.0, 1_000_000.0),
        s3_identity_ttl=r.real("S3_IDENTITY_TTL", 5.0, 0.0, 3600.0),
        s3_connect_timeout=r.real("S3_CONNECT_TIMEOUT", 2.0, 0.1, 60.0),
        s3_read_timeout=r.real("S3_READ_TIMEOUT", 5.0, 0.1, 300.0),
        s3_retries=r.integer("S3_RETRIES", 2, 0, 10),
        memcached_io_timeout=r.real("MEMCACHED_IO_TIMEOUT", 0.05, 0.001, 10.0),
        memcached_retry_interval=r.real("MEMCACHED_RETRY_INTERVAL", 10.0, 0.0, 3600.0),
        auth_secret=read_auth_secret(env),
        viewer_assets=r.string("VIEWER_ASSETS", "").strip(),
        metrics=r.flag("METRICS", True),
        # Prometheus' own variable names the same directory when METRICS_DIR does not.
        metrics_dir=(r.string("METRICS_DIR", "") or r.string("PROMETHEUS_MULTIPROC_DIR", "")).strip(),
        max_decoded_pixels=r.integer("MAX_DECODED_PIXELS", 1 << 28, 1 << 16, 1 << 40),
        max_request_length=r.integer("MAX_REQUEST_LENGTH", 8192, 256, 1 << 20),
        max_parameter_length=r.integer("MAX_PARAMETER_LENGTH", 4096, 64, 1 << 20),
        request_timeout=r.real("REQUEST_TIMEOUT", 30.0, 0.0, 86400.0),
    )
    return settings, r.warnings


# Settings whose values no log line may show.
SECRET_FIELDS = frozenset({"auth_secret"})
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def summary(settings: Settings) -> str:
    """Every effective setting as ``name=value``, for the start-up log: secrets only say
    whether they are set, and credentials written into a URL are masked."""
    parts = []
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.name in SECRET_FIELDS:
            shown = "(set)" if value else "(unset)"
        else:
            shown = _URL_CREDENTIALS.sub("***@", repr(value))
        parts.append(f"{field.name}={shown}")
    return " ".join(parts)


def with_root(settings: Settings, root: str | None) -> Settings:
    """The settings with FILESYSTEM_PREFIX replaced by ``root`` (the command line's ROOT: a
    directory, which gets its trailing "/", or ``s3://bucket/prefix``)."""
    if not root:
        return settings
    if not root.startswith("s3://") and not root.endswith("/"):
        root += "/"
    return dataclasses.replace(settings, filesystem_prefix=root)
