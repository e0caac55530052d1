from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import redis

from tests.e2e.harness import Project
from tests.services import redis_url

REDIS_URL = redis_url(11)
"""The e2e suite's own Redis database (the contract suite uses 15, test_redis 14)."""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    proj = Project(tmp_path / "proj")
    proj.functions.mkdir(parents=True)
    yield proj
    proj.close()


@pytest.fixture(params=["sqlite", "redis"])
def project_on_each_store(
    request: pytest.FixtureRequest, tmp_path: Path, service_missing: Callable[[str], NoReturn]
) -> Iterator[Project]:
    """A project whose test runs once on SQLite and once on Redis (SPEC 9)."""
    proj = Project(tmp_path / "proj")
    proj.functions.mkdir(parents=True)
    client = None
    if request.param == "redis":
        client = redis.Redis.from_url(REDIS_URL)
        try:
            client.flushdb()
        except redis.ConnectionError:
            service_missing(f"Redis is not running at {REDIS_URL}")
        proj.write("fnrun.yaml", f"store: {REDIS_URL}\n")
    yield proj
    proj.close()
    if client is not None:
        client.flushdb()
        client.close()


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """None for the project's own SQLite store, else a private Redis's URL (`own_redis`):
    for tests that need their Redis to themselves, as timing tests do."""
    if request.param == "sqlite":
        return None
    own_redis = request.getfixturevalue("own_redis")
    return str(own_redis.url)
