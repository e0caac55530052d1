"""Several RedisStore instances on one Redis, as separate cluster nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from runtime.store.redis import RedisStore


@asynccontextmanager
async def redis_nodes(url: str, count: int) -> AsyncIterator[list[RedisStore]]:
    """`count` opened stores on the Redis at `url`, closed on exit."""
    stores = [RedisStore(url) for _ in range(count)]
    try:
        for store in stores:
            await store.open()
        yield stores
    finally:
        for store in stores:
            await store.close()
