"""Shared fixtures for the whole suite: keep this small."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.e2e.harness import RedisServer, free_port


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (`pytest.mark.anyio`) run on asyncio, the backend fnrun ships on."""
    return "asyncio"


def _service_missing(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: required services must be present)")
    pytest.skip(reason)


@pytest.fixture
def service_missing() -> Callable[[str], NoReturn]:
    """Call with a reason to skip a test whose service (Redis, ...) is absent; fails under CI."""
    return _service_missing


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free port, for tests that kill and restart it."""
    if shutil.which("redis-server") is None:
        _service_missing("redis-server is not installed")
    server = RedisServer(tmp_path / "redis", free_port())
    server.start()
    yield server
    server.kill()
