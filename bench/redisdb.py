"""The benchmark's Redis database (12 by default): flushed before each case, never another."""

from __future__ import annotations

import redis


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def flush(url: str) -> None:
    """Empty the benchmark's own database (FLUSHDB, never FLUSHALL)."""
    client(url).flushdb()


def commands_processed(conn: redis.Redis) -> int:
    """Commands the whole server has processed so far (INFO commandstats, summed)."""
    stats = conn.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())
