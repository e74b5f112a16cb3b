from __future__ import annotations

import os

import pytest

from tests import helpers

# The S3 tests' session fixtures (a moto server holding the test images, a counting proxy).
pytest_plugins = ["tests.integration.s3_fixtures"]


@pytest.fixture(scope="session")
def fixtures() -> str:
    """Directory of generated test images (built once, reused between runs)."""
    return helpers.fixture_dir()


@pytest.fixture(scope="session")
def downloads() -> str:
    """Directory of the real slide files scripts/fetch_test_data.py takes from other projects'
    published packages.  Missing: a failure under CI=true, else a skip."""
    import fetch_test_data  # scripts/, on the path through tests.helpers

    directory = fetch_test_data.DEFAULT_DIRECTORY
    missing = [name for name in fetch_test_data.FILES if not os.path.exists(os.path.join(directory, name))]
    if missing:
        message = f"test slides not downloaded ({', '.join(missing)}): run scripts/fetch_test_data.py"
        if helpers.IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return directory


@pytest.fixture
def app(fixtures: str):
    return helpers.make_app()
