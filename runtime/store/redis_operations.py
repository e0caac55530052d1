"""Inspection and operations of the Redis store: counts, run records, dead letters, replay,
retention, schedules' last ticks and idempotency keys.

Kept apart from the delivery path in `redis`; `RedisStore` inherits these.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from runtime.events import JSON, Event
from runtime.store.base import Counts, DeadLetter, RunRecord, Store
from runtime.store.envelope import StoredEvent
from runtime.store.redis_batch import Arg, redis_errors
from runtime.store.redis_records import CHUNK, P, chunks, dumps
from runtime.store.redis_runs import RunFilter, list_runs, run_by_invocation, runs_of_events


class RedisOperations(Store):
    """The operations half of `RedisStore` (see there)."""

    @property
    @abstractmethod
    def client(self) -> Any:
        """The open redis-py client."""

    @abstractmethod
    async def _call(self, script: str, args: Sequence[Arg]) -> Any:
        """Run one Lua script of `redis_scripts.SCRIPTS`."""

    @redis_errors
    async def counts(self) -> dict[str, Counts]:
        functions = sorted(await self.client.smembers(f"{P}fns"))
        pipe = self.client.pipeline(transaction=False)
        for function in functions:
            for stream in (f"{P}q:{function}", f"{P}r:{function}"):  # fresh, due retries
                pipe.xlen(stream)
                pipe.xpending(stream, "g")
            pipe.zcard(f"{P}z:{function}")
            pipe.zcard(f"{P}dz:{function}")
            pipe.hlen(f"{P}fi:{function}")  # flow control's own (redis_flow_lua)
            pipe.hlen(f"{P}fx:{function}")
        replies = await pipe.execute(raise_on_error=False)
        out = {}
        for i, function in enumerate(functions):
            *streams, waiting, dead, flow, flow_running = replies[8 * i : 8 * i + 8]
            pending, running = waiting + flow - flow_running, flow_running
            for length, pel in zip(streams[::2], streams[1::2], strict=True):
                in_flight = pel["pending"] if isinstance(pel, dict) else 0
                pending += (length if isinstance(length, int) else 0) - in_flight
                running += in_flight
            out[function] = Counts(pending=pending, running=running, dead=dead)
        return out

    @redis_errors
    async def runs(
        self, *, function: str | None = None, status: str | None = None,
        event_type: str | None = None, event_id: str | None = None,
        since: float | None = None, before_seq: int | None = None,
        after_seq: int | None = None, limit: int = 50,
    ) -> list[RunRecord]:
        wanted = RunFilter(function, status, event_type, event_id, since)
        return await list_runs(self.client, wanted, before_seq, after_seq, limit)

    @redis_errors
    async def run(self, invocation: str) -> RunRecord | None:
        return await run_by_invocation(self.client, invocation)

    @redis_errors
    async def runs_for_events(self, event_ids: Sequence[str]) -> list[RunRecord]:
        return await runs_of_events(self.client, event_ids)

    @redis_errors
    async def event(self, event_id: str) -> Event | None:
        body = await self.client.hget(f"{P}ev:{event_id}", "e")
        return None if body is None else Event.from_dict(json.loads(body))

    @redis_errors
    async def dead_letters(
        self, function: str | None = None, ids: Sequence[str] | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        if ids is None:
            index = f"{P}dz" if function is None else f"{P}dz:{function}"
            chosen = await self.client.zrevrange(index, 0, max(0, limit) - 1) if limit > 0 else []
        else:
            chosen = [i for i in ids if function is None or i.partition("/")[0] == function]
        pipe = self.client.pipeline(transaction=False)
        for letter_id in chosen:
            pipe.hgetall(f"{P}dl:{letter_id}")
        rows = [(i, row) for i, row in zip(chosen, await pipe.execute(), strict=True) if row]
        pipe = self.client.pipeline(transaction=False)
        for _, row in rows:
            pipe.hget(f"{P}ev:{row['event']}", "e")
        bodies = await pipe.execute()
        letters = [
            DeadLetter(
                id=letter_id,
                function=row["function"],
                event=StoredEvent.of(json.loads(body)),
                attempts=int(row["attempts"]),
                error=row["error"] or None,
                traceback=row["traceback"] or None,
                failed_at=float(row["failed_at"]),
            )
            for (letter_id, row), body in zip(rows, bodies, strict=True)
            if body is not None
        ]
        letters.sort(key=lambda letter: letter.failed_at, reverse=True)
        return letters[: max(0, limit)]

    async def _select_dead(self, function: str | None, ids: Sequence[str] | None) -> list[str]:
        if ids is not None:
            return [i for i in ids if function is None or i.partition("/")[0] == function]
        index = f"{P}dz" if function is None else f"{P}dz:{function}"
        return list(await self.client.zrange(index, 0, -1))

    @redis_errors
    async def replay_dead(
        self, now: float, function: str | None = None, ids: Sequence[str] | None = None
    ) -> int:
        chosen = await self._select_dead(function, ids)
        done = 0
        for part in chunks(chosen):
            done += int(await self._call("dead_replay", [len(part), *part]))
        for name in {i.partition("/")[0] for i in chosen}:
            self.notify(name)
        return done

    @redis_errors
    async def drop_dead(self, function: str | None = None, ids: Sequence[str] | None = None) -> int:
        chosen = await self._select_dead(function, ids)
        done = 0
        for part in chunks(chosen):
            done += int(await self._call("dead_drop", [len(part), *part]))
        return done

    @redis_errors
    async def replay(
        self, function: str, since: float, matches: Callable[[str], bool], now: float
    ) -> int:
        # The index is ordered by store time, which is never before event time
        # (events are not future-dated), so the scan can start at `since`.
        since_us = int(since * 1_000_000)
        start, done = str(max(0, since_us // 1000)), 0
        while True:
            entries = await self.client.xrange(f"{P}idx", start, "+", count=CHUNK)
            chosen = [
                f["e"] for _, f in entries if int(f["t"]) >= since_us and matches(f["y"])
            ]
            if chosen:
                done += int(await self._call("redeliver", [function, len(chosen), *chosen]))
            if len(entries) < CHUNK:
                break
            start = "(" + entries[-1][0]
        if done:
            self.notify(function)
        return done

    @redis_errors
    async def prune(self, events_before: float, history_before: float) -> None:
        last_ms = int(events_before * 1000) - 1
        # Kept events are indexed again at the tail; the bound stops a cutoff
        # in the future from walking over them forever.
        rounds = await self.client.xlen(f"{P}idx") // CHUNK + 1
        for _ in range(rounds if last_ms >= 0 else 0):
            if int(await self._call("prune_events", [last_ms, CHUNK])) < CHUNK:
                break
        cutoff_ms = int(history_before * 1000)
        while int(await self._call("prune_runs", [cutoff_ms, CHUNK])) == CHUNK:
            pass
        # The history lists of an fnrun before run records (SPEC 11).
        functions = await self.client.smembers(f"{P}fns")
        await self.client.delete(f"{P}h", *(f"{P}h:{f}" for f in functions))

    # -- schedules and idempotency -----------------------------------------

    @redis_errors
    async def last_tick(self, function: str) -> float | None:
        tick = await self.client.get(f"{P}tick:{function}")
        return None if tick is None else float(tick)

    @redis_errors
    async def recall(self, key: str) -> JSON | None:
        value = await self.client.get(f"{P}k:{key}")
        return None if value is None else json.loads(value)

    @redis_errors
    async def remember(self, key: str, value: JSON, ttl: float) -> JSON | None:
        ttl_ms = max(1, int(ttl * 1000))
        earlier = await self.client.set(f"{P}k:{key}", dumps(value), nx=True, px=ttl_ms, get=True)
        return None if earlier is None else json.loads(earlier)
