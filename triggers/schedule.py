"""The schedule trigger: cron declarations, and the loop that fires their ticks.

Each tick becomes one `fnrun.schedule` event whose id is derived from the
schedule key and the tick, and is published with `Store.fire_tick`, which is
atomic and idempotent: a tick fires once across restarts, reloads and nodes.
The loop keeps a heap of next ticks and sleeps (monotonic, in chunks of at
most `MAX_SLEEP`) until the earliest, re-reading the wall clock each chunk:
a clock that jumps back finds nothing due (ticks at or before the last fired
one never fire again), one that jumps forward meets the catch-up policy.
"""

from __future__ import annotations

import heapq
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfoNotFoundError, available_timezones

import yaml
from croniter import croniter

from runtime.errors import StoreError
from runtime.events import Event
from runtime.ingress import Ingress
from runtime.project.yamlnodes import Node, Reader, suggest
from runtime.specs import Project
from runtime.tracing.context import trace_extensions
from triggers.cron import (
    CATCH_UP_POLICIES,
    CatchUp,
    ScheduleSpec,
    describe,
    due_ticks,
    field_problem,
    is_past_due,
    next_tick,
    zone,
)

__all__ = ["ScheduleSpec", "Trigger", "describe", "parse", "schedule_key", "tick_event"]

log = logging.getLogger("fnrun.schedule")

EVENT_TYPE = "fnrun.schedule"
MAX_SLEEP = 1.0
"""Longest sleep between wall-clock checks, so clock jumps are noticed within it."""
ERROR_BACKOFF = 1.0
MAX_DATA_BYTES = 64 * 1024
_NAMESPACE = uuid.UUID("8f0e7c1a-6b7d-5d1e-9a51-3c2b8f6e4d10")
_KEYS = ("cron", "timezone", "catch_up", "data")


# -- declarations --------------------------------------------------------------


def parse(reader: Reader, node: Node) -> ScheduleSpec:
    """Validate `schedule: CRON` or `schedule: {cron, timezone, catch_up, data}`."""
    if isinstance(node, yaml.ScalarNode):
        return ScheduleSpec(where=reader.where(node), cron=_cron(reader, node))
    if not isinstance(node, yaml.MappingNode):
        raise reader.error(node, "schedule must be a cron string or a mapping with cron, "
                                 "timezone, catch_up, data")
    keys = reader.mapping(node, "schedule", allowed=_KEYS, required=("cron",))
    timezone = "UTC"
    if "timezone" in keys:
        timezone = _timezone(reader, keys["timezone"])
    catch_up: CatchUp = "latest"
    if "catch_up" in keys:
        catch_up = _catch_up(reader, keys["catch_up"])
    spec = ScheduleSpec(
        where=reader.where(node),
        cron=_cron(reader, keys["cron"]),
        timezone=timezone,
        catch_up=catch_up,
        data=_data(reader, keys["data"]) if "data" in keys else None,
    )
    return spec


_SHORTHANDS = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly")
_REFERENCE = datetime(2000, 1, 1, tzinfo=UTC).timestamp()


def _cron(reader: Reader, node: Node) -> str:
    expr = reader.string(node, "schedule cron").strip()
    fields = expr.split()
    usage = ("use 5 fields 'min hour day month weekday', a 6th for seconds, "
             "or @hourly/@daily/@weekly/@monthly/@yearly")
    if expr.startswith("@"):
        ok = len(fields) == 1 and croniter.is_valid(expr)
    elif len(fields) not in (5, 6):
        raise reader.error(node, f"bad cron expression {expr!r}: it has {len(fields)} "
                                 f"field{'s' if len(fields) != 1 else ''}; {usage}")
    else:
        problem = field_problem(expr)
        if problem:
            raise reader.error(node, f"bad cron expression {expr!r}: {problem}")
        ok = croniter.is_valid(expr)
    if not ok:
        hint = suggest(expr, _SHORTHANDS) if expr.startswith("@") else ""
        raise reader.error(node, f"bad cron expression {expr!r} ({hint}{usage})")
    if next_tick(ScheduleSpec(where=reader.where(node), cron=expr), _REFERENCE) is None:
        raise reader.error(node, f"cron expression {expr!r} never fires")
    return expr


def _timezone(reader: Reader, node: Node) -> str:
    name = reader.string(node, "schedule timezone")
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
        hint = suggest(name, available_timezones()) if len(name) < 64 else ""
        raise reader.error(
            node, f"unknown timezone {name!r} ({hint}use an IANA name such as Europe/Berlin)"
        ) from None
    return name


def _catch_up(reader: Reader, node: Node) -> CatchUp:
    value = reader.value(node) if isinstance(node, yaml.ScalarNode) else None
    for policy in CATCH_UP_POLICIES:
        if value == policy:
            return policy
    raise reader.error(node, "catch_up must be one of: none, latest, all")


def _data(reader: Reader, node: Node) -> Any:
    value = reader.value(node)
    try:
        # Round-trip so only JSON survives: YAML dates, sets, binary and
        # non-string keys would otherwise reach handlers in a different shape.
        text = json.dumps(value, allow_nan=False)
        if json.loads(text) != value:
            raise ValueError
    except (TypeError, ValueError):
        raise reader.error(node, "schedule data must be plain JSON "
                                 "(strings, numbers, booleans, null, lists, string-keyed maps)"
                           ) from None
    if len(text.encode()) > MAX_DATA_BYTES:
        raise reader.error(node, f"schedule data is over {MAX_DATA_BYTES // 1024} KiB")
    return value


# -- ticks as events -----------------------------------------------------------


def schedule_key(function: str, spec: ScheduleSpec) -> str:
    """The store key of one schedule (a function may declare several)."""
    return f"{function}|{spec.cron}|{spec.timezone}"


def tick_event(function: str, spec: ScheduleSpec, tick: float, pastdue: bool) -> Event:
    """The `fnrun.schedule` event of one tick; its id depends only on (key, tick)."""
    key = schedule_key(function, spec)
    return Event(
        type=EVENT_TYPE,
        id=str(uuid.uuid5(_NAMESPACE, f"{key}|{round(tick * 1000)}")),
        source=f"fnrun/schedule/{function}",
        time=datetime.fromtimestamp(tick, UTC),
        data=spec.data,
        # A new trace per tick: a tick is caused by nothing upstream.
        extensions={"pastdue": pastdue, "schedule": spec.cron, "timezone": spec.timezone,
                    **trace_extensions()},
    )


# -- the live trigger ------------------------------------------------------------


@dataclass
class _Live:
    """One bound schedule and where it stands."""

    function: str
    spec: ScheduleSpec
    started: float
    last: float | None
    due: float | None = None
    """The tick its heap entry waits for; None when it never fires again."""


@dataclass(order=True)
class _Entry:
    tick: float
    key: str = field(compare=False)


class Trigger:
    """Fires the ticks of every schedule in the bound project."""

    def __init__(self, ingress: Ingress) -> None:
        self._ingress = ingress
        self._wanted: dict[str, tuple[str, ScheduleSpec]] = {}
        self._applied: dict[str, tuple[str, ScheduleSpec]] | None = None
        self._live: dict[str, _Live] = {}
        self._heap: list[_Entry] = []

    def bind(self, project: Project) -> None:
        """Take the project's schedules; the loop applies them on its next sweep."""
        wanted: dict[str, tuple[str, ScheduleSpec]] = {}
        for name, function in project.functions.items():
            for spec in function.triggers_of(ScheduleSpec.kind):
                assert isinstance(spec, ScheduleSpec)
                wanted[schedule_key(name, spec)] = (name, spec)
        self._wanted = wanted

    @property
    def keys(self) -> list[str]:
        """The schedule keys bound right now."""
        return sorted(self._live)

    async def run(self) -> None:
        """Sweep, then sleep until the next tick (at most MAX_SLEEP), forever."""
        clock = self._ingress.clock
        while True:
            try:
                await self.sweep()
            except Exception as exc:
                # A store hiccup must not end the schedules; the failed tick
                # stays due and is fired on a later sweep.
                if isinstance(exc, StoreError):
                    log.warning("schedule sweep failed; retrying in %.0fs: %s", ERROR_BACKOFF, exc)
                else:
                    log.exception("schedule sweep failed; retrying in %.0fs", ERROR_BACKOFF)
                await clock.sleep(ERROR_BACKOFF)
                continue
            delay = MAX_SLEEP
            if self._heap:
                delay = min(MAX_SLEEP, max(0.0, self._heap[0].tick - clock.now()))
            await clock.sleep(delay)

    async def sweep(self) -> int:
        """Apply the latest bind, then fire every tick due now; return how many were new."""
        await self._reconcile()
        now = self._ingress.clock.now()
        fired = 0
        while self._heap and self._heap[0].tick <= now:
            entry = heapq.heappop(self._heap)
            live = self._live.get(entry.key)
            if live is None or live.due != entry.tick:
                continue  # removed or rescheduled since it was pushed
            try:
                fired += await self._fire(entry.key, live, now)
            except BaseException:
                heapq.heappush(self._heap, entry)
                raise
            self._schedule(entry.key, live, now if live.last is None else max(now, live.last))
        return fired

    async def _reconcile(self) -> None:
        wanted = self._wanted
        if wanted is self._applied:
            return
        for key in set(self._live) - set(wanted):
            del self._live[key]
        for key, (function, spec) in wanted.items():
            live = self._live.get(key)
            if live is not None:
                live.spec = spec  # same cron and zone; catch_up or data may differ
                continue
            last = await self._ingress.store.last_tick(key)
            now = self._ingress.clock.now()
            live = _Live(function=function, spec=spec, started=now, last=last)
            self._live[key] = live
            live.due = next_tick(spec, now if last is None else last)
        # Drop the heap entries of removed schedules now rather than when due.
        self._heap = [_Entry(s.due, k) for k, s in self._live.items() if s.due is not None]
        heapq.heapify(self._heap)
        self._applied = wanted

    def _schedule(self, key: str, live: _Live, after: float) -> None:
        live.due = next_tick(live.spec, after)
        if live.due is not None:
            heapq.heappush(self._heap, _Entry(live.due, key))

    async def _fire(self, key: str, live: _Live, now: float) -> int:
        store = self._ingress.store
        fired = 0
        for tick in due_ticks(live.spec, live.last, now, live.started):
            pastdue = is_past_due(tick, now)
            event = tick_event(live.function, live.spec, tick, pastdue)
            if await store.fire_tick(key, tick, event, [live.function]):
                fired += 1
                store.notify(live.function)
                log.debug("fired %s at %s%s", key, event.time.isoformat(),
                          " (past due)" if pastdue else "")
            live.last = tick if live.last is None else max(live.last, tick)
        return fired
