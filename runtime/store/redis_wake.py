"""Cross-node wake-ups for the Redis store: block on one small stream instead of polling.

Every script that makes deliveries pending adds one entry to `fnrun:wake`
naming the functions concerned (see `redis_lua.wake`). Each node keeps one
dedicated connection in `XREAD BLOCK` on that stream and wakes the
dispatchers of the functions named, so work published by another process
starts at once, and an idle node costs one command per `BLOCK_MS` instead
of a claim per function every poll. A stream rather than pub/sub because a
stream lives in the store's database (pub/sub channels are server-wide) and
a listener that reconnects can read what it missed from its last id.
Polling stays, rarer, as the safety net. A lost connection is logged once,
and its recovery once (`failing.FailureLog`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio import Redis

from runtime.store.failing import FailureLog

WAKE_KEY = "fnrun:wake"
BLOCK_MS = 5000
"""Longest single XREAD BLOCK; the read timeout of the connection is above it."""
RECONNECT = 0.5
"""Pause (s) before the listener reconnects after Redis went away."""


class WakeListener:
    """Reads `fnrun:wake` on its own connection and calls `wake` with the functions named."""

    def __init__(self, url: str, wake: Callable[[Iterable[str]], None]) -> None:
        self.url = url
        self.wake = wake
        self.reads = 0
        self._stopped = False
        self._last_id: str | None = None
        self.trouble = FailureLog(
            "the Redis wake-up listener",
            "work published by other processes starts only at the next poll")
        self._client: Any = Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=2.0,
            socket_timeout=BLOCK_MS / 1000 + 5.0,
        )

    async def start(self) -> None:
        """Mark where listening begins: wake-ups from now on are not missed."""
        self._last_id = await self._tail()

    async def run(self) -> None:
        """Listen until `stop`; after a lost connection, reconnect and wake everyone."""
        while not self._stopped:
            try:
                await self._listen()
            except Exception as exc:  # noqa: BLE001 - logged by self.trouble
                # A closed connection shows as RedisError, OSError or worse
                # (redis-py writing to a transport `stop` closed): all end
                # here. Entries may have been missed (or lost with Redis):
                # wake everyone once, as a poll would, then read again.
                if self._stopped:
                    return
                self.trouble.failed(exc)
                await asyncio.sleep(RECONNECT)
                self._last_id = None
                self.wake(())

    async def stop(self) -> None:
        """End `run` by closing its connection.

        Cancelling alone is not enough: a cancel that lands while redis-py
        sets up the blocking read can be swallowed, and the task would then
        wait out the whole read.
        """
        self._stopped = True
        await self._client.aclose()

    async def _tail(self) -> str:
        last = await self._client.xrevrange(WAKE_KEY, "+", "-", count=1)
        return str(last[0][0]) if last else "0-0"

    async def _listen(self) -> None:
        client = self._client
        last_id = self._last_id or await self._tail()
        self.trouble.worked()  # connected and answered
        while not self._stopped:
            reply = await client.xread({WAKE_KEY: last_id}, count=1000, block=BLOCK_MS)
            self.reads += 1
            if not reply:
                continue
            entries = reply[0][1]
            last_id = self._last_id = entries[-1][0]
            names = {name for _, fields in entries for name in fields.get("f", "").split()}
            self.wake(names)
