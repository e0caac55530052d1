"""The runtime's ingress: where triggers, the HTTP API and broker sources hand events in.

`Intake` implements `runtime.ingress.Ingress`. It owns what taking an event
needs and nothing else: whether events are taken now (`phase`), the router
that names each event type's functions (the event trigger, once bound), and
the history of sync calls (`runtime.delivery.calls`). Publishing stores an
event with its targets in one durable write before anyone is answered
(SPEC 5.1); a sync call runs in the function's pool, which the supervisor
looks up for it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence

from runtime.clock import Clock
from runtime.delivery.calls import CallHistory
from runtime.events import Event, Outcome
from runtime.ingress import Router
from runtime.metrics import Metrics
from runtime.pool.workerpool import WorkerPool
from runtime.store.base import Delivery, Store, Targets
from runtime.tracing.context import emitted

log = logging.getLogger("fnrun")

PoolOf = Callable[[str], WorkerPool | None]
"""The pool serving a function now, or None when it is not running."""


class Phase(enum.Enum):
    """Whether events are taken: not yet, now, or no more (the value is /_/health's status)."""

    STARTING = "starting"
    SERVING = "ok"
    STOPPING = "stopping"


class Intake:
    """Routes, stores and runs the events handed in; see the module docstring."""

    def __init__(self, store: Store, clock: Clock, metrics: Metrics, pool_of: PoolOf) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.calls = CallHistory(store, log)
        """Sync calls' history, written in the background (its `run` is the supervisor's task)."""
        self.phase = Phase.STARTING
        """Changed only by the supervisor's lifecycle: `serve` once ready, `stop` on drain."""
        self._pool_of = pool_of
        self._router: Router | None = None

    @property
    def accepting(self) -> bool:
        """True exactly while serving: /_/health answers 200, webhooks and producers are taken."""
        return self.phase is Phase.SERVING

    def serve(self) -> None:
        self.phase = Phase.SERVING

    def stop(self) -> None:
        self.phase = Phase.STOPPING

    def route_by(self, router: Router) -> None:
        """Name each event's functions with `router` (the event trigger) from now on."""
        self._router = router

    def targets(self, event_type: str) -> list[str]:
        return self._router.targets(event_type) if self._router is not None else []

    def route(
        self, events: Sequence[Event], cause: Delivery | None = None
    ) -> list[tuple[Event, Targets]]:
        """Each event with the functions it goes to. Events emitted by `cause`'s
        handler continue its event's trace and name it as their parent (SPEC 11)."""
        if not events:
            return []
        if cause is not None:
            events = emitted(events, cause.event, cause.function, cause.attempt)
        return [(event, self.targets(event.type)) for event in events]

    async def publish(self, events: Sequence[Event]) -> list[bool]:
        return await self.store.publish(self.route(events))

    async def invoke(self, function: str, event: Event) -> Outcome:
        pool = self._pool_of(function)
        if pool is None:
            now = self.clock.now()
            return Outcome("error", now, 0.0, error=f"function {function!r} is not loaded")
        outcome = await pool.invoke(event, 1)
        self.metrics.invocation(function, outcome.status, outcome.duration, 1)
        self.calls.add(function, event, outcome)
        if outcome.ok and outcome.emits:
            # Durable before the caller gets its answer, as for any producer (SPEC 5.1).
            # A sync call is its own first (and only) attempt.
            call = Delivery(event.id, function, event, 1)
            await self.store.publish(self.route(outcome.emits, call))
        return outcome
