"""`batch: {max_size, max_wait}` (SPEC 12): a handler that takes a list of events.

A `BatchDispatcher` is a `Dispatcher` whose runners wait until `max_size`
deliveries are buffered or the first has waited `max_wait`, then run them as
one invocation: the worker gets one item whose event is the list
(`EventBatch`). The one outcome becomes one per delivery (`split`): a raised
exception, a timeout or a crash fails them all; a return value
`{"failed": [event ids]}` (Lambda's partial batch response, as plain ids)
fails only those, which are retried alone; anything else succeeds them all.
Emits go with the first delivery that succeeded (its commit), so a batch
emits at most once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

import anyio

from runtime.delivery.dispatcher import Dispatcher, Ran
from runtime.events import Event, Outcome
from runtime.flow.lane import FlowLane
from runtime.pool.workerpool import WorkerPool
from runtime.specs import FunctionSpec
from runtime.store.base import Delivery, Store


class EventBatch:
    """Events that travel to a worker as one invocation's event (a list of envelopes)."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = list(events)
        self.id = self.events[0].id

    def to_dict(self) -> list[dict[str, Any]]:  # what the pool sends as the item's event
        return [event.to_dict() for event in self.events]


def failed_ids(outcome: Outcome) -> tuple[set[str] | None, str | None]:
    """The ids a successful batch reported failed, else None; and what is wrong with them."""
    result = outcome.result
    value = result.get("json") if isinstance(result, dict) else None
    if not isinstance(value, dict) or "failed" not in value:
        return None, None
    failed = value["failed"]
    if not isinstance(failed, list) or not all(isinstance(i, str) for i in failed):
        return None, "a batch handler's 'failed' must be a list of event ids"
    return set(failed), None


def split(outcome: Outcome, batch: Sequence[Delivery]) -> list[Outcome]:
    """One outcome per delivery of a batch run (see the module docstring)."""
    if outcome.ok:
        failed, problem = failed_ids(outcome)
        if problem is not None:
            outcome = replace(outcome, status="error", error=problem, emits=())
    # The deliveries' invocation ids, drawn at once: a getrandom call for
    # each cost more than the rest of a delivery's split on a loaded host.
    ids = iter(_invocation_ids(len(batch)))
    if not outcome.ok:
        return [outcome] + [_sibling(outcome, next(ids), emits=()) for _ in batch[1:]]
    failed = failed or set()
    out: list[Outcome] = []
    emitted = False
    for delivery in batch:
        if delivery.event.id in failed:
            out.append(_sibling(outcome, next(ids), status="error", emits=(), result=None,
                                error="the batch handler reported this event failed"))
        elif emitted:
            out.append(_sibling(outcome, next(ids), emits=()))
        else:
            out.append(outcome if not out else _sibling(outcome, next(ids), logs=outcome.logs,
                                                         emits=outcome.emits))
            emitted = True
    return out


def _invocation_ids(count: int) -> list[str]:
    """`count` fresh invocation ids (12 hex digits, as the pool's), from one random draw."""
    pool = os.urandom(6 * count).hex()
    return [pool[i:i + 12] for i in range(0, 12 * count, 12)]


def _sibling(outcome: Outcome, invocation: str, **changes: Any) -> Outcome:
    """The outcome of another delivery of the same run: its own invocation id, no logs."""
    return replace(outcome, **{"invocation": invocation, "logs": (), **changes})


class BatchDispatcher(Dispatcher):
    """A `Dispatcher` that runs up to `max_size` deliveries per invocation: the
    dispatcher's run loop, with its own batching step (`_take`) and run (`_run`)."""

    def __init__(self, *args: Any, max_size: int, max_wait: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_size = max_size
        self.max_wait = max_wait
        self._since: float | None = None

    def _prefetch(self) -> int:
        return max(super()._prefetch(), self.max_size * self.spec.concurrency)

    def _signal(self) -> None:
        # The buffer changed: note when it last went from empty to not, the arrival
        # of its oldest delivery, from which `max_wait` counts.
        if not self._buffer:
            self._since = None
        elif self._since is None:
            self._since = anyio.current_time()
        super()._signal()

    async def _fill(self) -> None:
        """Wait until a batch is full or its oldest delivery waited `max_wait`."""
        while len(self._buffer) < self.max_size and not self._stopping:
            since = self._since
            if since is None:
                return
            left = since + self.max_wait - anyio.current_time()
            if left <= 0:
                return
            with anyio.move_on_after(left):
                await self._changed.wait()

    async def _take(self) -> list[Delivery]:
        """Up to `max_size` deliveries, once a batch is full or its oldest waited `max_wait`."""
        await self._fill()
        buffer = self._buffer
        batch = [buffer.popleft() for _ in range(min(self.max_size, len(buffer)))]
        if batch:
            self._signal()
        return batch

    async def _run(self, batch: list[Delivery]) -> Ran | None:
        """`batch` as one invocation; its one outcome split into one per delivery."""
        attempt = max(d.attempt for d in batch)
        events = cast(Event, EventBatch([d.event for d in batch]))
        outcomes = await self.pool.invoke_many([(events, attempt)])
        if not outcomes:
            return None
        return list(zip(batch, split(outcomes[0], batch), strict=True))


def flow_dispatcher(
    spec: FunctionSpec, pool: WorkerPool, store: Store, **kwargs: Any
) -> Dispatcher:
    """The dispatcher of `spec`: the plain one for a function without flow rules (its
    claim path untouched), else one through a `FlowLane` and/or batching."""
    rules = spec.flow
    if rules is None:
        return Dispatcher(spec, pool, store, **kwargs)
    lane: Store | FlowLane = FlowLane(store, spec.name, rules, kwargs["clock"]) \
        if rules.by_key else store
    if rules.batch is None:
        return Dispatcher(spec, pool, lane, **kwargs)
    return BatchDispatcher(spec, pool, lane, max_size=rules.batch.max_size,
                           max_wait=rules.batch.max_wait, **kwargs)
