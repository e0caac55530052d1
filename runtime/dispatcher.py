"""Runs one function's deliveries: claim from the store, invoke in the pool, settle.

Three kinds of task share a buffer:
- the claimer tops the buffer up from the store (`Store.claim`), sized to
  what the runners can start soon, so claims are batched without hoarding
  work another node could take;
- `concurrency` runners each take a delivery, invoke it, and hand the outcome
  to a settle task without waiting for it, so the worker slot is free at once;
- settle tasks write success (with emits) or failure (retry or dead letter).
  Many settle at once, which is what lets the store group-commit them.

A delivery is acknowledged only by `Store.succeed`; anything that dies before
that stays `running` in the store and is recovered (SPEC 5.2, 5.3).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Sequence

import anyio

from runtime.clock import Clock
from runtime.events import Event, Outcome
from runtime.metrics import Metrics
from runtime.pool import WorkerPool
from runtime.retry import next_delay
from runtime.specs import FunctionSpec
from runtime.store.base import Delivery, Store, Targets

Route = Callable[[Sequence[Event]], list[tuple[Event, Targets]]]
"""Fan-out of emitted events: each event with the functions it goes to."""

MAX_PREFETCH = 256
PREFETCH_HORIZON = 0.05
"""Claim roughly what the runners can start within this many seconds."""
MAX_SETTLING = 4096
"""Bound on outcomes waiting for their store write."""


class Dispatcher:
    """The delivery loop of one function on this node."""

    def __init__(
        self,
        spec: FunctionSpec,
        pool: WorkerPool,
        store: Store,
        *,
        clock: Clock,
        metrics: Metrics,
        route: Route,
        log: logging.Logger,
        poll: float = 1.0,
    ) -> None:
        self.spec = spec
        self.pool = pool
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.route = route
        self.log = log
        self.poll = poll
        self._buffer: deque[Delivery] = deque()
        self._buffer_changed = anyio.Event()
        self._settling = anyio.Semaphore(MAX_SETTLING)
        self._stopping = False
        self._mean_duration = 0.01
        self.broken = False

    def stop(self) -> None:
        """Stop taking work: runners finish their current invocation and return."""
        self._stopping = True
        self.store.notify(self.spec.name)
        self._signal()

    def _signal(self) -> None:
        self._buffer_changed.set()
        self._buffer_changed = anyio.Event()

    async def run(self) -> None:
        """Deliver until `stop()`; then release unstarted claims and wait for settles."""
        try:
            async with anyio.create_task_group() as settles:
                async with anyio.create_task_group() as loops:
                    loops.start_soon(self._claim_loop)
                    for _ in range(self.spec.concurrency):
                        loops.start_soon(self._run_loop, settles)
        finally:
            with anyio.CancelScope(shield=True):
                await self._release_buffer()

    def _prefetch(self) -> int:
        per_slot = max(1, math.floor(PREFETCH_HORIZON / max(self._mean_duration, 1e-4)))
        return min(MAX_PREFETCH, self.spec.concurrency * per_slot)

    async def _claim_loop(self) -> None:
        name = self.spec.name
        while not self._stopping:
            room = self._prefetch() - len(self._buffer)
            if room <= 0:
                await self._buffer_changed.wait()
                continue
            claimed = await self.store.claim(name, room, self.clock.now())
            if claimed:
                self._buffer.extend(claimed)
                self._signal()
                continue
            due = await self.store.next_due(name)
            wait = self.poll if due is None else min(self.poll, due - self.clock.now())
            if wait > 0:
                await self.store.wait_for_work(name, wait)

    async def _run_loop(self, settles: anyio.abc.TaskGroup) -> None:
        while not self._stopping:
            if not self._buffer:
                await self._buffer_changed.wait()
                continue
            delivery = self._buffer.popleft()
            self._signal()
            outcome = await self.pool.invoke(delivery.event, delivery.attempt)
            if self.pool.load_error is not None:
                await self._pause(delivery)
                return
            self._mean_duration = 0.9 * self._mean_duration + 0.1 * outcome.duration
            await self._settling.acquire()
            settles.start_soon(self._settle, delivery, outcome)

    async def _pause(self, delivery: Delivery) -> None:
        """Bad code must not burn attempts: stop, and let the deliveries wait (SPEC 5.5).

        The function stays down until a reload brings a version that loads.
        """
        if not self._stopping:
            self.log.error(
                "cannot load %s, its deliveries wait for a fixed version: %s",
                self.spec.handler, self.pool.load_error,
            )
        self.broken = True
        self.stop()
        with anyio.CancelScope(shield=True):
            await self.store.release([delivery])

    async def _settle(self, delivery: Delivery, outcome: Outcome) -> None:
        name = self.spec.name
        try:
            with anyio.CancelScope(shield=True):
                self.metrics.invocation(name, outcome.status, outcome.duration, delivery.attempt)
                if outcome.ok:
                    await self.store.succeed(delivery, outcome, self.route(outcome.emits))
                    return
                delay = next_delay(self.spec.retry, delivery.attempt)
                retry_at = None if delay is None else self.clock.now() + delay
                await self.store.fail(delivery, outcome, retry_at)
                self._log_failure(delivery, outcome, retry_at)
                self.store.notify(name)
        except Exception:
            # The delivery stays `running` and is recovered on the next start.
            self.log.exception("could not record the outcome of %s", delivery.event.id)
        finally:
            self._settling.release()

    def _log_failure(self, delivery: Delivery, outcome: Outcome, retry_at: float | None) -> None:
        event_id, attempt = delivery.event.id, delivery.attempt
        if retry_at is None:
            self.metrics.dead_letter(self.spec.name)
            self.log.warning(
                "event %s: attempt %d failed (%s), dead-lettered: %s",
                event_id, attempt, outcome.status, outcome.error,
            )
        else:
            self.log.warning(
                "event %s: attempt %d failed (%s), retry in %.1fs: %s",
                event_id, attempt, outcome.status, retry_at - self.clock.now(), outcome.error,
            )

    async def _release_buffer(self) -> None:
        """Give back claimed deliveries that never started."""
        if self._buffer:
            unstarted = list(self._buffer)
            self._buffer.clear()
            await self.store.release(unstarted)
