"""Concurrent single invocations of one pool, carried to workers in shared batches.

A burst of sync webhooks used to cost one frame, one worker wake-up and one
reply round trip each, with at most `concurrency` in flight: the round trips,
not the handlers, bounded throughput. Calls now wait in one queue, and
whichever of the pool's slots frees first takes its share of what is
queued (an even split over the slots not busy with a batch, at most
`MAX_BATCH`) as one batch.
Each call still gets its own outcome and its own timeout (counted from the
end of the item before it, as for any batch), and a crash is still charged
to exactly the call that was running: the calls after it never started, so
they go back to the front of the queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import anyio

from runtime.events import Event, Outcome

log = logging.getLogger("fnrun.pool")

MAX_BATCH = 32
"""Most calls one batch carries; bounds how long the last one waits behind the others."""

RunBatch = Callable[[Sequence[tuple[Event, int]]], Awaitable[list[Outcome]]]
"""Runs items in one worker while the caller holds a slot; an Outcome per item that ran."""


def fair_share(queued: int, takers: int, most: int) -> int:
    """How many of `queued` items one of `takers` free takers takes: an even split
    (rounded up, so none is left for a taker that is not there), at most `most`,
    at least one. The coalescer's slots and the dispatcher's runners split so."""
    return max(1, min(most, -(-queued // takers)))


class _Call:
    __slots__ = ("item", "outcome", "taken")

    def __init__(self, item: tuple[Event, int], outcome: asyncio.Future[Outcome]) -> None:
        self.item, self.outcome, self.taken = item, outcome, False


class Coalescer:
    """Runs single calls in batches, with at most `runners` batches at once."""

    def __init__(
        self, slots: anyio.Semaphore, run: RunBatch, no_worker: Callable[[], Outcome],
        runners: int,
    ) -> None:
        self._slots = slots
        self._run = run
        self._no_worker = no_worker
        self._max_runners = runners
        self._queue: deque[_Call] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = 0
        """Live runners, counted down inside `_drain` itself: a done callback would
        run a loop turn late, and a call queued meanwhile would find no runner."""
        self._busy = 0
        """Runners with a batch in a worker."""

    async def invoke(self, event: Event, attempt: int) -> Outcome:
        """Run one attempt in the next batch to start."""
        loop = asyncio.get_running_loop()
        call = _Call((event, attempt), loop.create_future())
        self._queue.append(call)
        if self._running < self._max_runners:
            self._running += 1
            task = loop.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            # Cancelling the caller cancels `outcome`; a batch already running it
            # then drops the result (`_resolve` skips a done future).
            return await call.outcome
        finally:
            if not call.taken:
                self._queue.remove(call)  # cancelled while queued: never runs

    async def _drain(self) -> None:
        """Take batches until the queue is empty."""
        try:
            while self._queue:
                async with self._slots:
                    batch = self._take()
                    if batch:
                        self._busy += 1
                        try:
                            await self._settle(batch)
                        finally:
                            self._busy -= 1
        finally:
            self._running -= 1

    def _take(self) -> list[_Call]:
        # An even share per runner not busy with a batch (this one included):
        # a short queue must still use every free slot, but halving it for a
        # busy runner left tails of one-call batches, each a worker round trip.
        share = fair_share(len(self._queue), self._max_runners - self._busy, MAX_BATCH)
        batch: list[_Call] = []
        while self._queue and len(batch) < share:
            call = self._queue.popleft()
            call.taken = True
            batch.append(call)
        return batch

    async def _settle(self, batch: list[_Call]) -> None:
        try:
            outcomes = await self._run([call.item for call in batch])
        except Exception as exc:
            log.exception("a batch of single invocations failed")
            for call in batch:
                _resolve(call, exc)
            return
        except BaseException:
            # Cancelled (the loop is ending): the pool has retired the worker.
            for call in batch:
                _resolve(call, Outcome("crash", time.time(), 0.0, error="invocation interrupted"))
            raise
        if not outcomes:  # no worker could load the handler
            outcomes = [self._no_worker() for _ in batch]
        for call, outcome in zip(batch, outcomes, strict=False):
            _resolve(call, outcome)
        unstarted = batch[len(outcomes):]
        for call in reversed(unstarted):
            call.taken = False
            self._queue.appendleft(call)


def _resolve(call: _Call, result: Outcome | Exception) -> None:
    if call.outcome.done():
        return
    if isinstance(result, Outcome):
        call.outcome.set_result(result)
    else:
        call.outcome.set_exception(result)
