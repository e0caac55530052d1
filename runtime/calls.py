"""The invocation history of sync webhook calls, written in the background in batches.

A sync call has no delivery to settle, and its caller waits for the answer,
not for a history row. So the supervisor queues one row per call here and a
background task writes what is queued in one store write every
`FLUSH_EVERY` seconds. The rows are not durable: a crash of the supervisor
loses at most the last interval's rows, never an event or an answer. The
queue is bounded; if the store stays down, the oldest rows are dropped and
counted in the log.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

import anyio

from runtime.events import Event, Outcome
from runtime.store.base import Call, Store

FLUSH_EVERY = 0.1
MAX_QUEUED = 10_000
MAX_WRITE = 1_000
"""Most rows in one store write."""


class CallHistory:
    """Queues finished sync calls and writes them to the store's history."""

    def __init__(self, store: Store, log: logging.Logger) -> None:
        self.store = store
        self.log = log
        self._queue: deque[Call] = deque(maxlen=MAX_QUEUED)
        self._dropped = 0

    def add(self, function: str, event: Event, outcome: Outcome) -> None:
        if len(self._queue) == MAX_QUEUED:
            self._dropped += 1
        self._queue.append((function, event, outcome))

    async def run(self) -> None:
        """Write every `FLUSH_EVERY` until cancelled; what is queued then is written too."""
        try:
            while True:
                await anyio.sleep(FLUSH_EVERY)
                await self.flush()
        finally:
            with anyio.CancelScope(shield=True):
                await self.flush()

    async def flush(self) -> None:
        while self._queue:
            batch: Sequence[Call] = [
                self._queue.popleft() for _ in range(min(MAX_WRITE, len(self._queue)))
            ]
            try:
                await self.store.record(batch)
            except Exception as exc:
                self._queue.extendleft(reversed(batch))  # the next flush tries again
                self.log.warning("could not write the history of %d sync calls: %s",
                                 len(batch), exc)
                return
        if self._dropped:
            self.log.warning("history of %d sync calls dropped (store unavailable)",
                             self._dropped)
            self._dropped = 0
