"""The invocation history of sync webhook calls, written in the background in batches.

A sync call has no delivery to settle, and its caller waits for the answer,
not for a history row. So the supervisor queues one row per call here and a
background task writes what is queued in one store write every
`FLUSH_EVERY` seconds. The rows are not durable: a crash of the supervisor
loses at most the last interval's rows, never an event or an answer. The
queue is bounded; if the store stays down, the oldest rows are dropped and
counted in the log.

Every failed call is kept. Successful ones are kept up to `OK_PER_FLUSH` per
interval (500 a second): a burst of thousands of calls a second would
otherwise cost about a third of the supervisor's time per call in history
writes (measured under wrk), and would push every queued delivery's record
out of the bounded history within seconds.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

import anyio

from runtime.errors import StoreError
from runtime.events import Event, Outcome
from runtime.store.base import Call, Store
from runtime.store.runs import announce

FLUSH_EVERY = 0.1
MAX_QUEUED = 10_000
MAX_WRITE = 1_000
"""Most rows in one store write."""
OK_PER_FLUSH = 50
"""Most successful calls kept per `FLUSH_EVERY`; failures are always kept."""


class CallHistory:
    """Queues finished sync calls and writes them to the store's history."""

    def __init__(self, store: Store, log: logging.Logger) -> None:
        self.store = store
        self.log = log
        self._queue: deque[Call] = deque(maxlen=MAX_QUEUED)
        self._dropped = 0
        self._ok_left = OK_PER_FLUSH
        self._failing = False

    def add(self, function: str, event: Event, outcome: Outcome) -> None:
        # Announced now, not after the write: the call's answer never waited for it,
        # and successes over the budget are not written at all.
        announce(function, event, 1, outcome)
        if outcome.ok:
            if not self._ok_left:
                return  # over this interval's budget (see the module docstring)
            self._ok_left -= 1
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
        self._ok_left = OK_PER_FLUSH
        while self._queue:
            batch: Sequence[Call] = [
                self._queue.popleft() for _ in range(min(MAX_WRITE, len(self._queue)))
            ]
            try:
                await self.store.record(batch)
            except Exception as exc:
                self._queue.extendleft(reversed(batch))  # the next flush tries again
                if not self._failing:  # once per outage, not every FLUSH_EVERY
                    # An outage is one line; anything else (a bug) shows its traceback.
                    self.log.warning("could not write the history of %d sync calls: %s",
                                     len(batch), exc, exc_info=not isinstance(exc, StoreError))
                self._failing = True
                return
            self._failing = False
        if self._dropped:
            self.log.warning("history of %d sync calls dropped (store unavailable)",
                             self._dropped)
            self._dropped = 0
