from __future__ import annotations

import pytest

from tests import helpers


@pytest.fixture(scope="session")
def fixtures() -> str:
    """Directory of generated test images (built once, reused between runs)."""
    return helpers.fixture_dir()


@pytest.fixture
def app(fixtures: str):
    return helpers.make_app()
