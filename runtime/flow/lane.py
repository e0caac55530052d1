"""The door between a dispatcher and the store for a function with flow rules.

A function that declares no rule gets the store itself, and its claim path
is untouched (SPEC 12: it pays nothing). One with rules gets a `FlowLane`:
claims go to the adapter's flow part (`Store.flow`), fresh deliveries are
never handed over straight from publish (that skips the key checks), and
every settle wakes the function, since finishing a run can free its key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from runtime.clock import Clock
from runtime.events import Event, Outcome
from runtime.flow.rules import FlowRules
from runtime.store.base import Consumer, Delivery, Inlet, Store, Success, Targets


class FlowBackend(Protocol):
    """An adapter's flow-control part for one function."""

    async def claim(self, limit: int, now: float) -> list[Delivery]:
        """Up to `limit` deliveries that the function's rules let start now."""

    async def next_due(self, now: float) -> float | None:
        """When a claim may next find work without a settle announcing it."""

    async def succeed_many(self, items: Sequence[Success]) -> None: ...

    async def fail(self, delivery: Delivery, outcome: Outcome, retry_at: float | None) -> None: ...

    async def release(self, deliveries: Sequence[Delivery]) -> None: ...


class FlowLane:
    """What the dispatcher of a function with flow rules uses in place of the store."""

    def __init__(self, store: Store, function: str, rules: FlowRules, clock: Clock) -> None:
        self.store = store
        self.function = function
        self.rules = rules
        self.clock = clock
        self.backend: FlowBackend = store.flow(function, rules)

    def attach(self, function: str, consumer: Consumer) -> Inlet:
        """No hand-off: a delivery stored claimed would skip its key's checks, so
        the inlet is never attached to the store and never granted room."""
        return Inlet(consumer)

    def detach(self, function: str, inlet: Inlet) -> None:
        """Nothing was attached."""

    def notify(self, function: str) -> None:
        self.store.notify(function)

    async def wait_for_work(self, function: str, timeout: float) -> None:  # noqa: ASYNC109
        await self.store.wait_for_work(function, timeout)

    async def claim(self, function: str, limit: int, now: float) -> list[Delivery]:
        return await self.backend.claim(limit, now)

    async def next_due(self, function: str) -> float | None:
        return await self.backend.next_due(self.clock.now())

    async def succeed(
        self, delivery: Delivery, outcome: Outcome, emits: Sequence[tuple[Event, Targets]]
    ) -> None:
        await self.succeed_many([(delivery, outcome, emits)])

    async def succeed_many(self, items: Sequence[Success]) -> None:
        await self.backend.succeed_many(items)
        self.store.notify(self.function)

    async def fail(self, delivery: Delivery, outcome: Outcome, retry_at: float | None) -> None:
        await self.backend.fail(delivery, outcome, retry_at)
        self.store.notify(self.function)

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        await self.backend.release(deliveries)
        self.store.notify(self.function)
