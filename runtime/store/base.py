"""The store interface: durable events, deliveries, history, dead letters, schedules.

Every adapter (`sqlite.py`, `redis.py`) implements `Store`; the core only ever
sees this interface, chosen by URL through `runtime.plugins.STORES`. One
parametrised contract suite (tests/runtime/store/test_contract.py) runs against
each adapter.

Model. `publish` stores an event plus one *delivery* per target function
(fan-out happens before the store: the caller passes the targets). A
delivery is `pending` until `claim` hands it to this node (`running`), then
either `succeed` (gone, with its emits published in the same atomic write),
`fail` with a retry time (pending again, due later) or `fail` without one
(dead letter). `recover` makes deliveries left `running` by a dead node
pending again. Attempts are counted by `claim`, so a killed attempt counts.

Every write that acknowledges something to a producer (publish, succeed,
fail, fire_tick) returns only after the write is durable. Adapters batch
concurrent writes into one commit (group commit).

Hand-off. A dispatcher of this process that has nothing left to claim can
`attach` itself as its function's `Consumer`; an adapter may then store its
fresh deliveries already claimed in the publish's own write and hand them
over, skipping the claim. `runtime/store/handoff.py` owns all of it, with its
one invariant.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from runtime.errors import StoreError
from runtime.events import JSON, Event, LogLine, Outcome
from runtime.store.delivery import Delivery, Targets
from runtime.store.handoff import Consumer, Handoff, Inlet
from runtime.store.runs import RunRecord
from runtime.store.wakeups import WakeUps

if TYPE_CHECKING:
    from runtime.flow.rules import FlowRules

__all__ = [
    "Call", "Consumer", "Counts", "DeadLetter", "Delivery", "HistoryRecord", "Inlet", "LogLine",
    "RunRecord", "Store", "StoreOutage", "Success", "Targets",
]


Call = tuple[str, Event, Outcome]
"""A sync call to record in history: function, event, outcome (always attempt 1)."""

Success = tuple[Delivery, Outcome, Sequence[tuple[Event, Targets]]]
"""A successful attempt to record: the delivery, its outcome, its routed emits."""


@dataclass(frozen=True)
class HistoryRecord:
    """One finished attempt, newest first in `history` (a view of `RunRecord`)."""

    event_id: str
    function: str
    attempt: int
    status: str
    started: float
    duration: float
    error: str | None = None
    result: JSON = None
    """The return value, truncated to a bounded JSON-safe form."""


@dataclass(frozen=True)
class DeadLetter:
    """A delivery that used up its attempts."""

    id: str
    function: str
    event: Event
    attempts: int
    error: str | None
    traceback: str | None
    failed_at: float


@dataclass(frozen=True)
class Counts:
    pending: int = 0
    running: int = 0
    dead: int = 0


class StoreOutage:
    """The store error producers were last answered 503 for, until a publish succeeds.

    What `/_/health` shows as `store_error` when no dispatcher is claiming (a
    node without functions, or one idle between polls): the HTTP paths that
    answer a store error record it (`failed`), and the store's own `publish`
    clears it (`recovered`), whoever published. Read without a store call.
    """

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: str | None = None

    def failed(self, exc: StoreError) -> None:
        self.error = str(exc)

    def recovered(self) -> None:
        self.error = None


class Store(WakeUps, ABC):
    """Durable state of one project (or of a cluster, for shared stores)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.leases: dict[str, float] = {}
        self.outage = StoreOutage()
        self.handoff = Handoff(self.notify)
        """Fresh deliveries for this process's dispatchers (adapters that store them claimed)."""

    def attach(self, function: str, consumer: Consumer) -> Inlet:
        """Offer `function`'s fresh deliveries to `consumer` (`runtime.store.handoff`)."""
        return self.handoff.attach(function, consumer)

    def detach(self, function: str, inlet: Inlet) -> None:
        """Stop offering; a newer consumer attached since stays."""
        self.handoff.detach(function, inlet)

    def configure(self, leases: Mapping[str, float]) -> None:
        """Tell the store how long an attempt of each function may run (its timeout).

        Shared stores reclaim a dead node's running deliveries once they have
        been idle longer than this plus a margin.
        """
        self.leases = dict(leases)

    def flow(self, function: str, rules: FlowRules) -> Any:
        """The flow-control claim path of `function` (a `runtime.flow.lane.FlowBackend`)."""
        raise StoreError(f"store {self.url} has no flow control (SPEC 12)")

    # -- lifecycle ---------------------------------------------------------

    @abstractmethod
    async def open(self) -> None:
        """Connect and create the schema if needed."""

    @abstractmethod
    async def close(self) -> None:
        """Flush pending writes and release connections."""

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- ingress -----------------------------------------------------------

    @abstractmethod
    async def publish(self, items: Sequence[tuple[Event, Targets]]) -> list[bool]:
        """Durably store events and their deliveries; idempotent by event id.

        Returns, per item, True if the event was new. A repeated id stores
        nothing new (no second delivery), which is what makes webhook ids and
        schedule ticks fire once. A publish that succeeds calls
        `outage.recovered()`.
        """

    # -- delivery ----------------------------------------------------------

    @abstractmethod
    async def claim(self, function: str, limit: int, now: float) -> list[Delivery]:
        """Take up to `limit` due pending deliveries of `function` for this node."""

    @abstractmethod
    async def next_due(self, function: str) -> float | None:
        """When the earliest pending delivery of `function` falls due, if any."""

    @abstractmethod
    async def succeed(
        self, delivery: Delivery, outcome: Outcome, emits: Sequence[tuple[Event, Targets]]
    ) -> None:
        """Finish a delivery and publish its emits, atomically; record history."""

    async def succeed_many(self, items: Sequence[Success]) -> None:
        """`succeed` for several deliveries; adapters may write them in one go.

        Each item stays atomic on its own (its completion with its emits).
        """
        async with anyio.create_task_group() as tg:
            for delivery, outcome, emits in items:
                tg.start_soon(self.succeed, delivery, outcome, emits)

    @abstractmethod
    async def fail(self, delivery: Delivery, outcome: Outcome, retry_at: float | None) -> None:
        """Record a failed attempt: pending again at `retry_at`, or a dead letter if None."""

    @abstractmethod
    async def record(self, calls: Sequence[Call]) -> None:
        """Add finished sync calls (which have no delivery) to the history.

        Not durable: the caller writes in the background, and a lost row
        loses no event.
        """

    @abstractmethod
    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """Give back claimed deliveries that never started (graceful stop).

        They become pending and due at once, and the claim's attempt is not
        counted: `claim` counted it, `release` takes it back.
        """

    @abstractmethod
    async def recover(self) -> int:
        """Make deliveries whose node died pending again; return how many."""

    # -- inspection and operations -----------------------------------------

    @abstractmethod
    async def counts(self) -> dict[str, Counts]:
        """Pending, running and dead deliveries per function."""

    async def history(self, function: str | None = None, limit: int = 50) -> list[HistoryRecord]:
        """Recent finished attempts, newest first (the older, smaller view of `runs`)."""
        return [
            HistoryRecord(r.event_id, r.function, r.attempt, r.status, r.started, r.duration,
                          r.error, r.result)
            for r in await self.runs(function=function, limit=limit)
        ]

    # -- run records (SPEC 11) ---------------------------------------------

    @abstractmethod
    async def runs(
        self, *, function: str | None = None, status: str | None = None,
        event_type: str | None = None, event_id: str | None = None,
        since: float | None = None, before_seq: int | None = None,
        after_seq: int | None = None, limit: int = 50,
    ) -> list[RunRecord]:
        """Run records matching every filter given, newest (highest `seq`) first.

        `event_type` is a topic pattern (`order.*`, `**`); `since` bounds the
        start time (epoch seconds). Pages go backwards with `before_seq` (the
        last `seq` seen). With `after_seq` alone, the `limit` records right
        after it are returned (still newest first): a follower that asks again
        from the highest `seq` it got misses nothing.
        """

    @abstractmethod
    async def run(self, invocation: str) -> RunRecord | None:
        """The record of one invocation, if kept."""

    @abstractmethod
    async def runs_for_events(self, event_ids: Sequence[str]) -> list[RunRecord]:
        """Every kept attempt on any of these events, oldest first (for trace trees)."""

    @abstractmethod
    async def event(self, event_id: str) -> Event | None:
        """The stored event (with its extensions), while retention keeps it."""

    @abstractmethod
    async def dead_letters(
        self, function: str | None = None, ids: Sequence[str] | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead letters, newest first, filtered by function and/or ids."""

    @abstractmethod
    async def replay_dead(
        self, now: float, function: str | None = None, ids: Sequence[str] | None = None
    ) -> int:
        """Make matching dead letters pending again with fresh attempts; return how many."""

    @abstractmethod
    async def drop_dead(self, function: str | None = None, ids: Sequence[str] | None = None) -> int:
        """Delete matching dead letters; return how many."""

    @abstractmethod
    async def replay(
        self, function: str, since: float, matches: Callable[[str], bool], now: float
    ) -> int:
        """Deliver retained events (time >= since, type accepted by `matches`) again."""

    @abstractmethod
    async def prune(self, events_before: float, history_before: float) -> None:
        """Drop events and history (run records) older than the retention bounds.

        Events that still have a pending, running or dead delivery are kept.
        """

    # -- schedules and idempotency -----------------------------------------

    @abstractmethod
    async def last_tick(self, function: str) -> float | None:
        """The last schedule tick (epoch seconds) fired under the schedule key `function`.

        The schedule trigger passes a key per schedule (a function may have
        several), not necessarily a bare function name.
        """

    @abstractmethod
    async def fire_tick(self, function: str, tick: float, event: Event, targets: Targets) -> bool:
        """Publish a tick event and advance `last_tick` atomically.

        Returns False (and stores nothing) if that tick was already fired,
        by this node or any other.
        """

    @abstractmethod
    async def remember(self, key: str, value: JSON, ttl: float) -> JSON | None:
        """Store `value` under `key` unless present; return the earlier value if it was."""

    @abstractmethod
    async def recall(self, key: str) -> JSON | None:
        """The value `remember` stored under `key`, if it has not expired."""

    # -- wake-ups (the rest is `WakeUps`) ----------------------------------

    def wake_all(self) -> None:
        """Wake every dispatcher of this process, waiting or not: work arrived that
        no `notify` named (another process committed, a listener lost entries)."""
        for function in {*self.handoff.functions(), *self._wakeups}:
            self.notify(function)

    async def wait_for_work(self, function: str, timeout: float) -> None:  # noqa: ASYNC109
        """Return when `function` may have new work here, or after `timeout`.

        Adapters whose other producers live in other processes or nodes
        bound `timeout` (polling) or override this with a blocking read.
        """
        await self.wait_for_notify(function, timeout)
