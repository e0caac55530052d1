"""The Redis store's run record queries (SPEC 11): an index walked by `seq`, bodies by MGET.

Records are written by the settling scripts (`redis_lua.record`); each
listing walks one sorted set (by event, function, status, or all) from the
requested `seq` bound, a page at a time, and filters what that index does not
cover here. Every index is bounded by `RUNS_MAX` and retention, never scanned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runtime.store.redis_records import P, run_of_json
from runtime.store.runs import RunRecord
from runtime.topics import matches

PAGE = 200
"""Index entries read per round trip while filters drop records."""


@dataclass(frozen=True)
class RunFilter:
    """What `Store.runs` was asked for."""

    function: str | None = None
    status: str | None = None
    event_type: str | None = None
    event_id: str | None = None
    since: float | None = None

    def index(self) -> str:
        """The most selective sorted set that holds every match."""
        if self.event_id is not None:
            return f"{P}runs:e:{self.event_id}"
        if self.status is not None and self.status != "ok":  # failures are few
            return f"{P}runs:s:{self.status}"
        if self.function is not None:
            return f"{P}runs:f:{self.function}"
        if self.status is not None:
            return f"{P}runs:s:{self.status}"
        return f"{P}runs"

    def filters_beyond_index(self) -> bool:
        """Whether records read from `index()` must still be filtered here."""
        given = (self.function, self.status, self.event_type, self.event_id, self.since)
        indexed = 0 if self.index() == f"{P}runs" else 1
        return sum(value is not None for value in given) > indexed

    def keeps(self, run: RunRecord) -> bool:
        return (
            (self.function is None or run.function == self.function)
            and (self.status is None or run.status == self.status)
            and (self.event_id is None or run.event_id == self.event_id)
            and (self.since is None or run.started >= self.since)
            and (self.event_type is None or matches(self.event_type, run.event_type))
        )


async def list_runs(
    client: Any, wanted: RunFilter, before_seq: int | None, after_seq: int | None, limit: int,
) -> list[RunRecord]:
    """Up to `limit` records matching `wanted` within the bounds, newest first (see
    `Store.runs`: with only `after_seq`, those right after it)."""
    if limit <= 0:
        return []
    key, filtered = wanted.index(), wanted.filters_beyond_index()
    out: list[RunRecord] = []
    high = "+inf" if before_seq is None else f"({before_seq}"
    low = "-inf" if after_seq is None else f"({after_seq}"
    ascending = after_seq is not None and before_seq is None
    while len(out) < limit:
        page = max(PAGE, limit - len(out)) if filtered else limit - len(out)
        if ascending:
            rows = await client.zrangebyscore(key, low, high, start=0, num=page, withscores=True)
        else:
            rows = await client.zrevrangebyscore(key, high, low, start=0, num=page,
                                                 withscores=True)
        if not rows:
            break
        for run in await _bodies(client, [member for member, _ in rows]):
            if wanted.keeps(run):
                out.append(run)
                if len(out) == limit:
                    break
        last = int(rows[-1][1])
        if ascending:
            low = f"({last}"
        else:
            high = f"({last}"
        if len(rows) < page:
            break
    return out[::-1] if ascending else out


async def _bodies(client: Any, members: Sequence[str]) -> list[RunRecord]:
    """The records of index members (an invocation, or `runs`' "invocation ..." members)."""
    if not members:
        return []
    keys = [f"{P}run:{member.partition(' ')[0]}" for member in members]
    return [run_of_json(body) for body in await client.mget(keys) if body is not None]


async def run_by_invocation(client: Any, invocation: str) -> RunRecord | None:
    body = await client.get(f"{P}run:{invocation}")
    return None if body is None else run_of_json(body)


async def runs_of_events(client: Any, event_ids: Sequence[str]) -> list[RunRecord]:
    """Every kept attempt on these events, oldest first."""
    if not event_ids:
        return []
    pipe = client.pipeline(transaction=False)
    for event_id in event_ids:
        pipe.zrange(f"{P}runs:e:{event_id}", 0, -1)
    members = [m for found in await pipe.execute() for m in found]
    return sorted(await _bodies(client, members), key=lambda run: run.seq)
