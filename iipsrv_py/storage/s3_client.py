"""The S3 requests iipsrv_py makes (HEAD, ranged GET, LIST) and what their failures mean.

boto3 is configured with bounded connect and read timeouts and a bounded number of attempts
(S3_CONNECT_TIMEOUT, S3_READ_TIMEOUT, S3_RETRIES; botocore's "standard" retry mode, whose
backoff is at most 1 s, then 2 s, ...), so that a store that is down or stuck becomes an error
response within seconds, never a hang.  Every botocore exception is translated here, at the
storage boundary, into the server's own errors: a missing key is 404; a store that cannot be
reached or answers with an error is 502, one that does not answer in time 504, one that asks
to slow down 503.  The client sees only those short messages; bucket, key and the store's own
words go to the log (``log_detail``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .. import metrics
from ..errors import NotFound, ServerError, StorageBusy, StorageTimeout, StorageUnavailable
from ..settings import Settings

log = logging.getLogger(__name__)

NOT_FOUND = "image not found"
UNAVAILABLE = "image storage unavailable"
TIMED_OUT = "image storage timed out"
MISSING_KEY_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
BUSY_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503"})
CHANGED_CODES = frozenset({"PreconditionFailed", "412"})


@dataclass(frozen=True)
class Head:
    """What a HEAD says about an object: what its identity is made of."""

    size: int
    mtime: float  # Last-Modified, seconds since the epoch
    etag: str


def parse_url(url: str) -> tuple[str, str]:
    """``(bucket, key prefix)`` of ``s3://bucket/prefix``; ValueError when there is no bucket."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r}")
    return bucket, prefix


def translate(exc: BaseException, what: str) -> ServerError:
    """The server error a botocore exception means; ``what`` (bucket and key) is for the log."""
    from botocore import exceptions as boto

    detail = f"{what}: {type(exc).__name__}: {exc}"
    if isinstance(exc, boto.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == "NoSuchBucket":
            return StorageUnavailable(UNAVAILABLE, detail)
        if code in MISSING_KEY_CODES or status == 404:
            return NotFound(NOT_FOUND, detail)
        if code in CHANGED_CODES or status == 412:
            return StorageBusy("image changed while it was read; try again", detail)
        if code in BUSY_CODES or status in (429, 503):
            return StorageBusy("image storage busy", detail)
        return StorageUnavailable(UNAVAILABLE, detail)
    if isinstance(exc, (boto.ReadTimeoutError, boto.ConnectTimeoutError)):
        return StorageTimeout(TIMED_OUT, detail)
    return StorageUnavailable(UNAVAILABLE, detail)


class S3Client:
    """One boto3 client per process (boto3 clients and their connection pools must not cross
    a fork), made on first use."""

    # The connection pool: more threads than this reading at once wait for a connection.
    MAX_CONNECTIONS = 32

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    def _make(self) -> Any:
        import boto3
        from botocore.config import Config

        s = self.settings
        options: dict[str, Any] = {
            "connect_timeout": s.s3_connect_timeout,
            "read_timeout": s.s3_read_timeout,
            "retries": {"total_max_attempts": s.s3_retries + 1, "mode": "standard"},
            "max_pool_connections": self.MAX_CONNECTIONS,
        }
        if s.s3_endpoint:
            # S3-compatible stores (MinIO, Ceph, moto) are addressed by path, not by bucket host name.
            options["s3"] = {"addressing_style": "path"}
        # Whole-object checksums cannot be checked on ranged reads; do not ask for them.
        for name in ("request_checksum_calculation", "response_checksum_validation"):
            if name in Config.OPTION_DEFAULTS:
                options[name] = "when_required"
        session = boto3.session.Session()
        return session.client(
            "s3", endpoint_url=s.s3_endpoint or None, region_name=s.s3_region, config=Config(**options)
        )

    @property
    def client(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    self._client = self._make()
                    self._pid = os.getpid()
        return self._client

    def head(self, bucket: str, key: str) -> Head:
        try:
            metrics.count("iipsrv_s3_requests", ("HEAD",))
            answer = self.client.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise translate(exc, f"HEAD s3://{bucket}/{key}") from exc
        modified = answer.get("LastModified")
        return Head(
            size=int(answer["ContentLength"]),
            mtime=modified.timestamp() if modified is not None else 0.0,
            etag=str(answer.get("ETag", "")),
        )

    def get_range(self, bucket: str, key: str, start: int, end: int, etag: str) -> bytes:
        """Bytes ``[start, end)`` of the object, only while its ETag is ``etag`` (a replaced
        object answers 412 instead of mixing bytes of two versions)."""
        what = f"GET s3://{bucket}/{key} bytes={start}-{end - 1}"
        try:
            metrics.count("iipsrv_s3_requests", ("GET",))
            answer = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}", IfMatch=etag)
            body = answer["Body"]
            try:
                data = bytes(body.read())
                metrics.count("iipsrv_s3_received_bytes", (), len(data))
                return data
            finally:
                body.close()
        except Exception as exc:
            raise translate(exc, what) from exc

    def list_keys(self, bucket: str, prefix: str, limit: int) -> Iterator[str]:
        """The keys of the objects whose keys start with ``prefix``, at most ``limit``."""
        paginator = self.client.get_paginator("list_objects_v2")
        count = 0
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                metrics.count("iipsrv_s3_requests", ("LIST",))
                for item in page.get("Contents", ()):
                    yield str(item["Key"])
                    count += 1
                    if count >= limit:
                        return
        except Exception as exc:
            raise translate(exc, f"LIST s3://{bucket}/{prefix}") from exc
