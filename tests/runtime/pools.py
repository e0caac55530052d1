"""Worker pools for the tests that drive real workers, on a running fork-server template."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from runtime.pool.launcher import FORK_SERVER
from runtime.pool.workerpool import WorkerPool
from runtime.specs import FunctionSpec


@asynccontextmanager
async def worker_pools(log: logging.Logger) -> AsyncIterator[Callable[..., WorkerPool]]:
    """Yield `make(spec, **pool_options)`; on exit close every pool made and check that
    none left a worker behind."""
    made: list[WorkerPool] = []

    def make(spec: FunctionSpec, **options: Any) -> WorkerPool:
        pool = WorkerPool(spec, log=log, **options)
        made.append(pool)
        return pool

    FORK_SERVER.start()
    yield make
    for pool in made:
        await pool.aclose(grace=1)
        assert pool.live_workers == 0
