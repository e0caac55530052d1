"""Flow control on the Redis store (SPEC 12), cluster-wide: the scripts in
`redis_flow_lua` keep per-key queues, running counts and rate logs in Redis,
so every node sharing it sees one budget, one run per key at a time, and a
dead node's runs taken over once its heartbeat or their lease is gone. Those
times are on Redis's clock; the due times a claim reports are turned back into
this node's."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from runtime.events import Outcome
from runtime.flow.rules import FlowRules
from runtime.store.base import Delivery, Success
from runtime.store.envelope import StoredEvent
from runtime.store.redis_batch import Arg
from runtime.store.redis_records import publish_args, record_json

if TYPE_CHECKING:
    from runtime.store.redis import RedisStore

ADMIT_BATCH = 2000
"""Most fresh deliveries one claim admits (keys computed in Lua, atomically)."""
SETTLE_CHUNK = 256


class RedisFlow:
    """The flow-control claim path of one function on a `RedisStore`."""

    def __init__(self, store: RedisStore, function: str, rules: FlowRules) -> None:
        self.store = store
        self.function = function
        self.rules = rules
        self.head: list[Arg] = [function, rules.key_limit or 0, "1" if rules.order else "0"]
        self._ready_at: float | None = None
        self._due: float | None = None
        self.wall = time.time
        """This node's wall clock, which may differ from Redis's (a test skews it)."""

    async def claim(self, limit: int, now: float) -> list[Delivery]:
        from runtime.store.redis import RUNS_MAX, lease_margin

        rules, store = self.rules, self.store
        lease = store.leases.get(self.function, 60.0)
        rate = rules.rate
        args: list[Arg] = [
            *self.head, store.consumer, limit, int(now * 1000),
            int((lease + lease_margin(lease)) * 1000), int(self.wall() * 1000), rules.most_running,
            rate.limit if rate else 0, int(rate.period * 1000) if rate else 0,
            "1" if rules.keyed else "0", ADMIT_BATCH,
            int(rules.debounce * 1000) if rules.debounce else 0, RUNS_MAX,
            len(rules.key), *rules.key,
        ]
        rows, ready_at, due, then = await store._call("flow_claim", args)
        ahead = now - float(then) / 1000  # this node's clock minus Redis's
        self._ready_at = float(ready_at) / 1000 + ahead if ready_at else None
        self._due = float(due) / 1000 + ahead if due else None
        return [Delivery(f"{self.function}/{first}", self.function,
                         StoredEvent.of(json.loads(body)), int(attempt))
                for first, attempt, body in rows]

    async def next_due(self, now: float) -> float | None:
        dues = [t for t in (self._ready_at, self._due) if t is not None]
        return min(dues) if dues else None

    async def succeed_many(self, items: Sequence[Success]) -> None:
        from runtime.store.redis import RUNS_MAX

        for start in range(0, len(items), SETTLE_CHUNK):
            part = items[start:start + SETTLE_CHUNK]
            args: list[Arg] = [*self.head, self.store.consumer, RUNS_MAX, len(part)]
            for delivery, outcome, emits in part:
                first = delivery.id.partition("/")[2]
                args += [f"{first} {len(emits)}", delivery.event.id,
                         record_json(delivery.function, delivery.event, delivery.attempt,
                                     outcome)]
                if emits:
                    args += publish_args(emits)[1:]
            await self.store._call("flow_succeed", args)
            for _, _, emits in part:
                self.store._wake(emits)

    async def fail(self, delivery: Delivery, outcome: Outcome, retry_at: float | None) -> None:
        from runtime.store.redis import RUNS_MAX

        record = record_json(delivery.function, delivery.event, delivery.attempt, outcome)
        args: list[Arg] = [
            *self.head, self.store.consumer, delivery.id.partition("/")[2], delivery.event.id,
            record, RUNS_MAX,
            "" if retry_at is None else int(retry_at * 1000), repr(self.wall()),
            delivery.attempt, outcome.error or "", outcome.traceback or "",
        ]
        await self.store._call("flow_fail", args)

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        args: list[Arg] = [*self.head, self.store.consumer, len(deliveries),
                           *(d.id.partition("/")[2] for d in deliveries)]
        await self.store._call("flow_release", args)
