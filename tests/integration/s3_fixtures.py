"""Session fixtures of the S3 tests: one moto server on loopback holding every test image, and a
counting proxy in front of it.  Test modules import the fixtures they use from here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests import s3_store

BUCKET = "iip-test-images"
PREFIX = "slides/"


@dataclass
class S3Images:
    store: s3_store.MotoServer
    bucket: str
    prefix: str
    local: dict[str, str]  # name -> the local file uploaded under prefix + name

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@pytest.fixture(scope="session")
def s3_images(tmp_path_factory: pytest.TempPathFactory, fixtures: str, downloads: str) -> Iterator[S3Images]:
    """Every generated fixture and every downloaded slide, under ``slides/<name>``."""
    s3_store.use_dummy_credentials()
    store = s3_store.MotoServer(str(tmp_path_factory.mktemp("moto")))
    try:
        local = {}
        for directory in (fixtures, downloads):
            for name in sorted(os.listdir(directory)):
                path = os.path.join(directory, name)
                if os.path.isfile(path) and not name.startswith(".") and not name.endswith(".tar.gz"):
                    local[name] = path
        s3_store.upload(store, BUCKET, {PREFIX + name: path for name, path in local.items()})
        yield S3Images(store, BUCKET, PREFIX, local)
    finally:
        store.stop()


@pytest.fixture(scope="session")
def s3_proxy(s3_images: S3Images) -> Iterator[s3_store.CountingProxy]:
    proxy = s3_store.CountingProxy(s3_images.store.port)
    yield proxy
    proxy.close()
