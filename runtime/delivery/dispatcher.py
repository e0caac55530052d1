"""Runs one function's deliveries: claim from the store, invoke in the pool, settle.

Three kinds of task share a buffer:
- the claimer tops the buffer up from the store (`Store.claim`), sized to
  what the runners can start soon, so claims are batched without hoarding
  work another node could take;
- `concurrency` runners each take a batch of deliveries sized to last a few
  milliseconds (`batch_size`), run it in one worker (`WorkerPool.invoke_many`)
  and queue the outcomes for settling without waiting, so the worker slot is
  free at once. Items of a batch that never started (the worker crashed or
  timed out before them) go back to the front of the buffer: their claim and
  attempt are still valid;
- `SETTLERS` settlers, started with the dispatcher, write success (with
  emits) or failure (retry or dead letter). A runner queues ONE message per
  batch (`Ran`: all its outcomes), so a batch is never split between
  settlers; a settler takes one message and whatever else is waiting, and
  writes their successes in one store call, while the other settler's write
  waits for its commit: the store group-commits them. The queue is bounded
  (`MAX_SETTLING` batches): runners wait when the store falls behind.

The dispatcher is attached to the store as its function's `Consumer`: once
a claim comes back short (nothing else is due) it is caught up, and fresh
deliveries then arrive already claimed in the publish's own write, skipping a
claim round trip (`runtime/store/handoff.py` owns that hand-off). Older work
(a backlog, retries falling due) is thus still claimed first, in order.

A delivery is acknowledged only by `Store.succeed`; anything that dies before
that stays `running` in the store and is recovered (SPEC 5.2, 5.3).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runtime.clock import Clock
from runtime.delivery.retry import next_delay
from runtime.errors import StoreError, StoreUnavailable
from runtime.events import Event, Outcome
from runtime.flow.lane import FlowLane
from runtime.metrics import Metrics
from runtime.pool.coalescer import fair_share
from runtime.specs import RetryPolicy
from runtime.store.base import Delivery, Inlet, Store, Targets
from runtime.store.polling import idle_poll
from runtime.store.runs import RUNS_LOG, announce

Route = Callable[[Sequence[Event], Delivery], list[tuple[Event, Targets]]]
"""Fan-out of the events a delivery's handler emitted: each event (traced as the
delivery's, see `runtime.tracing.context.emitted`) with the functions it goes to."""

MAX_PREFETCH = 512
PREFETCH_HORIZON = 0.05
"""Claim roughly what the runners can start within this many seconds."""
MAX_BATCH = 64
BATCH_SPAN = 0.005
"""Size batches to run about this long, so that a batch costs little latency."""
MAX_SETTLING = 64
"""Bound on batches whose outcomes wait for their store write (at most 64 outcomes each)."""
SETTLERS = 2
"""Settlers per dispatcher: one gathers what ran while the other's write commits. More
buy nothing, since each writes everything waiting at once, and cost memory per function."""
SETTLE_BATCH = 256
"""Outcomes past which a settler stops gathering more messages for one store call."""
STORE_BACKOFF, MAX_STORE_BACKOFF = 0.25, 5.0
"""Waits (s) between attempts while the store is unavailable: doubling, capped."""
SETTLE_PATIENCE = 60.0
"""Seconds an outcome's write is tried again while the store is unavailable; after
that the delivery stays `running` in the store and runs again after a restart."""


def backoff(failures: int) -> float:
    """The wait after the `failures`-th failed attempt in a row to reach the store."""
    return min(MAX_STORE_BACKOFF, STORE_BACKOFF * 2.0 ** min(failures - 1, 16))


def batch_size(mean_duration: float, buffered: int, runners: int, pipelined: bool = False
               ) -> int:
    """How many buffered deliveries one runner takes: about `BATCH_SPAN` of work
    (`MAX_BATCH` for a pipelined executor, whose items wait together rather than
    one after another), at most its fair share of the buffer among the `runners`
    free to take some (itself included), at least one."""
    span = MAX_BATCH if pipelined else int(BATCH_SPAN / max(mean_duration, 1e-6))
    return fair_share(buffered, runners, min(MAX_BATCH, span))


Settling = tuple[Delivery, Outcome]
Ran = list[Settling]
"""One message to the settlers: every delivery of a batch that ran, with its outcome."""


class Subscriber(Protocol):
    """What the dispatcher reads of a function (or of a sink, SPEC 10)."""

    @property
    def name(self) -> str: ...

    @property
    def concurrency(self) -> int: ...

    @property
    def retry(self) -> RetryPolicy: ...


class Executor(Protocol):
    """Runs a batch of deliveries: a function's worker pool, or a sink's publisher."""

    async def invoke_many(self, items: Sequence[tuple[Event, int]]) -> list[Outcome]:
        """One outcome per item that ran, in order; fewer when the rest never started
        (none: the executor cannot run anything now)."""
        ...


class Bell:
    """Wakes every task waiting for a change of a dispatcher's buffer.

    An anyio.Event costs more than the rest of a small batch, so a ring with
    nobody waiting costs a comparison, and a fresh event is made per wait after
    a ring, not per ring: those woken stay counted until they run, so the
    rings of one hand-over after the first (one per published event) find the
    event set already and cost nothing.
    """

    __slots__ = ("_event", "_waiting")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._waiting = 0

    def ring(self) -> None:
        if self._waiting and not self._event.is_set():
            self._event.set()

    async def wait(self) -> None:
        """Until the next ring."""
        if self._event.is_set():
            self._event = anyio.Event()
        self._waiting += 1
        try:
            await self._event.wait()
        finally:
            self._waiting -= 1


class Dispatcher:
    """The delivery loop of one function on this node."""

    def __init__(
        self,
        spec: Subscriber,
        pool: Executor,
        store: Store | FlowLane,
        *,
        clock: Clock,
        metrics: Metrics,
        route: Route,
        log: logging.Logger,
        poll: float = 1.0,
        pipelined: bool = False,
    ) -> None:
        """Args:
            pipelined: `pool` runs a batch's items at once, each waiting on I/O (a
                sink's publishes): it takes full batches, not `BATCH_SPAN`'s worth.
        """
        self.spec = spec
        self.pipelined = pipelined
        self.pool = pool
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.route = route
        self.log = log
        self.poll = idle_poll(poll)
        """Longest idle wait without a wake-up; `FNRUN_IDLE_POLL` overrides it (tests)."""
        self._buffer: deque[Delivery] = deque()
        self._changed = Bell()
        """Rung when the buffer changed or the dispatcher stops."""
        self._waiting_runners = 0
        """Runners waiting for work, or woken and not yet run: they share the buffer."""
        self._stopping = False
        self._idle = anyio.CancelScope()
        self._mean_duration = 0.01
        self._inlet = Inlet(self)
        """Its side of the hand-off, attached to the store while it runs."""
        self.broken = False
        self.store_error: str | None = None
        """Why claims fail while the store is unavailable (shown by /_/health), else None."""

    def stop(self) -> None:
        """Stop taking work: runners finish their current batch and return."""
        self._stopping = True
        self._idle.cancel()  # an idle wait that began before this call
        self._signal()

    def room(self) -> int:
        """`Consumer`: how many fresh deliveries it can start soon; none once stopping."""
        return 0 if self._stopping else self._prefetch() - len(self._buffer)

    def accept(self, deliveries: Sequence[Delivery]) -> None:
        """`Consumer`: queue handed deliveries (a stopped dispatcher releases its buffer)."""
        self._buffer.extend(deliveries)
        self._signal()

    def _signal(self) -> None:
        """The buffer changed: wake the tasks waiting for that."""
        self._changed.ring()

    async def run(self) -> None:
        """Deliver until `stop()`; then release unstarted claims and settle what ran."""
        send, receive = anyio.create_memory_object_stream[Ran](MAX_SETTLING)
        self._inlet = self.store.attach(self.spec.name, self)
        try:
            async with anyio.create_task_group() as settlers:
                for _ in range(SETTLERS):
                    settlers.start_soon(self._settle_loop, receive)
                with send:
                    async with anyio.create_task_group() as loops:
                        loops.start_soon(self._claim_loop)
                        for _ in range(self.spec.concurrency):
                            loops.start_soon(self._run_loop, send)
                # `send` is closed: the settlers drain the queue and return.
        finally:
            self._stopping = True
            self.store.detach(self.spec.name, self._inlet)  # later hand-overs are refused
            with anyio.CancelScope(shield=True):
                await self._release_buffer()
                await self._settle_leftovers(receive)

    def _prefetch(self) -> int:
        per_slot = max(1, math.floor(PREFETCH_HORIZON / max(self._mean_duration, 1e-4)))
        if self.pipelined:  # each of those runs is a batch, its items all waiting at once
            per_slot *= MAX_BATCH
        return min(MAX_PREFETCH, self.spec.concurrency * per_slot)

    async def _claim_loop(self) -> None:
        failures = 0
        try:
            while not self._stopping:
                try:
                    await self._claim()
                except StoreError as exc:
                    # The store is down or another process holds its lock: the
                    # deliveries wait in it, and so does this loop, rather than
                    # take the supervisor down (the webhooks meanwhile answer 503).
                    if not failures:
                        self.log.error("cannot claim deliveries, trying again until the store "
                                       "answers: %s", exc)
                    self.store_error = str(exc)
                    failures += 1
                    await self._wait_idle(anyio.sleep, backoff(failures))
                    continue
                if failures:
                    self.log.info("claiming deliveries again (%d attempts failed)", failures)
                    failures, self.store_error = 0, None
        finally:
            self.store_error = None

    async def _claim(self) -> None:
        """Top the buffer up once; wait for room, or for work when caught up."""
        name = self.spec.name
        room = self._prefetch() - len(self._buffer)
        if room <= 0:
            await self._changed.wait()
            return
        claimed = await self.store.claim(name, room, self.clock.now())
        caught_up = self._inlet.caught_up = len(claimed) < room
        if claimed:
            self._buffer.extend(claimed)
            self._signal()
        if not caught_up:
            return
        due = await self.store.next_due(name)
        wait = self.poll if due is None else min(self.poll, due - self.clock.now())
        if wait > 0:
            await self._wait_idle(self.store.wait_for_work, name, wait)

    async def _wait_idle(self, wait: Callable[..., Awaitable[None]], *args: Any) -> None:
        """`wait(*args)` in a scope that stop() cancels: a store wake-up sent before
        this wait began would be missed, and the wait can last `poll` (30 s)."""
        if not self._stopping:
            with anyio.CancelScope() as self._idle:
                await wait(*args)

    async def _run_loop(self, send: MemoryObjectSendStream[Ran]) -> None:
        """One runner: take a batch, run it, queue its outcomes for the settlers."""
        while not self._stopping:
            if not self._buffer:
                self._waiting_runners += 1
                try:
                    await self._changed.wait()
                finally:
                    self._waiting_runners -= 1
                continue
            batch = await self._take()
            if not batch:
                continue  # another runner took them
            ran = await self._run(batch)
            if ran is None:  # no worker could load the handler: nothing ran
                await self._pause(batch)
                return
            await self._queue(send, ran)

    async def _take(self) -> list[Delivery]:
        """The batching step: the deliveries this runner runs next, from a buffer
        that is not empty (`BatchDispatcher` may wait for more first)."""
        buffer = self._buffer
        # Shared with the runners that are free, not with those still busy
        # with a batch: halving the buffer for a busy runner left a tail of
        # one-item batches, each costing a worker round trip.
        size = batch_size(self._mean_duration, len(buffer), self._waiting_runners + 1,
                          self.pipelined)
        batch = [buffer.popleft() for _ in range(size)]
        self._signal()
        return batch

    async def _run(self, batch: list[Delivery]) -> Ran | None:
        """Run `batch` in one worker: each delivery that ran with its outcome, or None
        when nothing could run. Those that never started go back to the buffer."""
        outcomes = await self.pool.invoke_many([(d.event, d.attempt) for d in batch])
        if not outcomes:
            return None
        mean = sum(o.duration for o in outcomes) / len(outcomes)
        self._mean_duration = 0.9 * self._mean_duration + 0.1 * mean
        unstarted = batch[len(outcomes) :]
        if unstarted:
            self._buffer.extendleft(reversed(unstarted))
            self._signal()
        return list(zip(batch, outcomes, strict=False))

    @staticmethod
    async def _queue(send: MemoryObjectSendStream[Ran], ran: Ran) -> None:
        """Hand a batch's outcomes to the settlers, waiting only while the queue is full."""
        try:
            send.send_nowait(ran)
        except anyio.WouldBlock:
            await send.send(ran)  # the store is behind: wait for room

    async def _pause(self, deliveries: Sequence[Delivery]) -> None:
        """Bad code must not burn attempts: stop, and let the deliveries wait (SPEC 5.5).

        The function stays down until a reload brings a version that loads.
        Nothing is logged here: the pool has logged the load error, with the
        function and the handler, once per failure and for every caller.
        """
        self.broken = True
        self.stop()
        with anyio.CancelScope(shield=True):
            await self.store.release(deliveries)

    async def _settle_loop(self, receive: MemoryObjectReceiveStream[Ran]) -> None:
        """Write outcomes until the queue is closed and empty, all queued ones at once."""
        while True:
            try:
                batch = receive.receive_nowait()
            except anyio.WouldBlock:
                try:
                    batch = await receive.receive()
                except anyio.EndOfStream:
                    return
            except anyio.EndOfStream:
                return
            while len(batch) < SETTLE_BATCH:
                try:
                    batch += receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            with anyio.CancelScope(shield=True):
                await self._settle_batch(batch)

    async def _settle_batch(self, batch: Sequence[Settling]) -> None:
        """Successes in one store write (each still atomic with its emits); failures each
        in its own write."""
        name = self.spec.name
        failures = []
        for delivery, outcome in batch:
            self.metrics.invocation(name, outcome.status, outcome.duration, delivery.attempt)
            if not outcome.ok:
                failures.append((delivery, outcome))
        if failures:
            await self._record_failures(failures)
        successes = [(d, o, self.route(o.emits, d)) for d, o in batch if o.ok]
        if not successes:
            return
        try:
            await self._patiently(self.store.succeed_many, successes)
        except StoreUnavailable as exc:
            self._unrecorded(f"{len(successes)} outcomes", exc)
        except Exception:
            # One bad item must not hold back the others: write them one by one.
            self.log.warning("batch write of %d outcomes failed; writing each", len(successes),
                             exc_info=True)
            for success in successes:
                await self._record_success(*success)
        else:
            if RUNS_LOG.isEnabledFor(logging.INFO):  # once a batch: `fnrun run` logs none
                for delivery, outcome, _ in successes:
                    announce(name, delivery.event, delivery.attempt, outcome)

    async def _settle_leftovers(self, receive: MemoryObjectReceiveStream[Ran]) -> None:
        """Settle outcomes still queued when the settlers were cancelled."""
        leftovers: Ran = []
        while True:
            try:
                leftovers += receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
        receive.close()
        if leftovers:
            await self._settle_batch(leftovers)

    async def _record_success(
        self, delivery: Delivery, outcome: Outcome, emits: Sequence[tuple[Event, Targets]]
    ) -> None:
        try:
            await self._patiently(self.store.succeed, delivery, outcome, emits)
            announce(self.spec.name, delivery.event, delivery.attempt, outcome)
        except StoreError as exc:
            self._unrecorded(f"the outcome of {delivery.event.id}", exc)
        except Exception:
            self.log.exception("could not record the outcome of %s", delivery.event.id)

    async def _record_failures(self, failures: Sequence[Settling]) -> None:
        """Each failure in its own write, all at once: a batch that failed whole must
        not wait for one commit per delivery, one after the other."""
        if len(failures) == 1:
            await self._record_failure(*failures[0])
            return
        async with anyio.create_task_group() as tg:
            for delivery, outcome in failures:
                tg.start_soon(self._record_failure, delivery, outcome)

    async def _record_failure(self, delivery: Delivery, outcome: Outcome) -> None:
        """Schedule the retry, or dead-letter the delivery once its attempts are used up."""
        try:
            delay = next_delay(self.spec.retry, delivery.attempt)
            retry_at = None if delay is None else self.clock.now() + delay
            await self._patiently(self.store.fail, delivery, outcome, retry_at)
            announce(self.spec.name, delivery.event, delivery.attempt, outcome)
            self._log_failure(delivery, outcome, retry_at)
            self.store.notify(self.spec.name)
        except StoreError as exc:
            self._unrecorded(f"the outcome of {delivery.event.id}", exc)
        except Exception:
            self.log.exception("could not record the outcome of %s", delivery.event.id)

    async def _patiently(self, write: Callable[..., Awaitable[None]], *args: Any) -> None:
        """`write(*args)`, tried again while the store is unavailable, for up to
        `SETTLE_PATIENCE` seconds, and not at all once stopping."""
        failures, deadline = 0, math.inf  # no clock read while the store answers
        while True:
            try:
                return await write(*args)
            except StoreUnavailable:
                failures += 1
                now = anyio.current_time()
                deadline = min(deadline, now + SETTLE_PATIENCE)
                if self._stopping or now + backoff(failures) > deadline:
                    raise
            await anyio.sleep(backoff(failures))

    def _unrecorded(self, what: str, exc: StoreError) -> None:
        # Not lost: the delivery stays `running` in the store, and runs again
        # once this node restarts (or, on Redis, once its lease is taken over).
        self.log.error("could not record %s; the delivery runs again after a restart: %s",
                       what, exc)

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
