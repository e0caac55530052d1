"""The `store` fixture: one opened, empty store per adapter, for the contract suite."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import NoReturn

import pytest
import redis

from runtime.store.base import Store
from tests.services import redis_url

REDIS_URL = redis_url(15)
"""DB 15 only: the tests flush it, and must never touch anyone's DB 0."""

Missing = Callable[[str], NoReturn]


def _flush_redis(missing: Missing) -> None:
    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1) as client:
            client.flushdb()
    except redis.RedisError as exc:
        missing(f"Redis is not reachable at {REDIS_URL}: {exc}")


def _redis_store(missing: Missing) -> Store:
    try:
        module = importlib.import_module("runtime.store.redis")
    except ModuleNotFoundError as exc:
        if exc.name != "runtime.store.redis":
            raise
        missing("runtime.store.redis does not exist yet")
    _flush_redis(missing)
    return module.RedisStore(REDIS_URL)  # type: ignore[no-any-return]


@pytest.fixture(params=["sqlite", "redis"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, service_missing: Missing
) -> AsyncIterator[Store]:
    """An opened store, empty; closed (and for Redis, flushed) afterwards."""
    if request.param == "sqlite":
        from runtime.store.sqlite import SqliteStore

        opened: Store = SqliteStore(f"sqlite:///{tmp_path / 'state.db'}")
    else:
        opened = _redis_store(service_missing)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
        if request.param == "redis":
            _flush_redis(service_missing)
