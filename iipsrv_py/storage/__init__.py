"""Byte access to images: local files (and object stores) behind one small interface."""

from __future__ import annotations

from ..cache.shared import SharedCache
from ..settings import Settings
from .base import Storage


def make_storage(settings: Settings, shared: SharedCache) -> Storage:
    """The storage FILESYSTEM_PREFIX names: an object store for ``s3://bucket/prefix/``, else
    the local filesystem."""
    if settings.filesystem_prefix.startswith("s3://"):
        from .s3 import S3Storage  # boto3 is only imported where it is used

        return S3Storage(settings, shared)
    from .local import LocalStorage

    return LocalStorage(settings.filesystem_prefix, settings.filesystem_suffix)
