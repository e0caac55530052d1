"""Where the suite finds the shared services it tests against.

`FNRUN_TEST_REDIS_PORT` (default 6379) moves every Redis database the suite flushes to
another redis-server, so two runs of the suite on one machine never flush each other's data.
"""

from __future__ import annotations

import os

REDIS_PORT = int(os.environ.get("FNRUN_TEST_REDIS_PORT", "6379"))


def redis_url(db: int) -> str:
    """The URL of test database `db` (never 0: the suite flushes what it uses)."""
    return f"redis://127.0.0.1:{REDIS_PORT}/{db}"
