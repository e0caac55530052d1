"""Shared fixtures for the whole suite: keep this small."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.e2e.harness import RedisServer, free_port

_worker_redis: subprocess.Popen[bytes] | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, every worker but the first gets a redis-server of its own.

    The suite flushes the Redis databases it uses (tests/services.py); two workers on one
    server would flush each other's. Runs before any test module imports tests.services.
    """
    global _worker_redis
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    if worker == "gw0" or shutil.which("redis-server") is None:
        return
    port = free_port()
    folder = tempfile.mkdtemp(prefix=f"fnrun-redis-{worker}-")
    _worker_redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.environ["FNRUN_TEST_REDIS_PORT"] = str(port)
    RedisServer.wait_ready(port)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _worker_redis is not None:
        _worker_redis.kill()
        _worker_redis.wait()
        shutil.rmtree(_worker_redis.args[6], ignore_errors=True)


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
