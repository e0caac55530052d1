"""Cron maths of the schedule trigger: pure functions of a spec and epoch seconds.

All calendar arithmetic is croniter's, evaluated in the schedule's IANA zone
(zoneinfo), so DST gaps and repeats follow croniter's documented rules: a
time that a spring-forward skips fires at the first wall time after the gap
(`30 2 * * *` fires at 03:00 that day), and a wall time that a fall-back
repeats fires at both of its instants (they are distinct UTC ticks, so
distinct events). fnrun adds no cron arithmetic of its own.

On time or missed. A tick is *on time* when it is at most `GRACE` seconds
old at the moment it is looked at; older ticks are *missed* (the supervisor
was down, stalled, or the wall clock jumped forward) and obey the catch-up
policy. Missed ticks that do fire are marked past due.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from runtime.specs import TriggerSpec

CatchUp = Literal["none", "latest", "all"]
CATCH_UP_POLICIES: tuple[CatchUp, ...] = ("none", "latest", "all")

GRACE = 1.0
"""Seconds a tick may be late and still count as on time (not past due)."""

MAX_CATCH_UP = 1_000
"""Most missed ticks `catch_up: all` fires for one schedule (the most recent ones)."""


@dataclass(frozen=True)
class ScheduleSpec(TriggerSpec):
    """`schedule: CRON` or `{cron, timezone, catch_up, data}` (SPEC section 4)."""

    kind: ClassVar[str] = "schedule"
    cron: str
    timezone: str = "UTC"
    catch_up: CatchUp = "latest"
    data: Any = None


_FIELDS = (
    ("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
    ("day of week", 0, 7), ("second", 0, 59),
)
_NAMES = {
    "month": ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    "day of week": ("sun", "mon", "tue", "wed", "thu", "fri", "sat"),
}


def field_problem(expr: str) -> str | None:
    """The first field of a 5 or 6 field cron `expr` that is out of range, in words.

    `61 * * * *` is "minute 61 is out of range 0-59", where croniter only
    says the expression is invalid. None when no field is plainly wrong
    (croniter's own check still decides: L, W and # are its to judge).
    """
    for text, (name, low, high) in zip(expr.split(), _FIELDS, strict=False):
        for part in text.split(","):
            problem = _part_problem(part, name, low, high)
            if problem:
                return problem
    return None


def _part_problem(part: str, name: str, low: int, high: int) -> str | None:
    span, slash, step = part.partition("/")
    if slash and not (step.isdigit() and int(step) >= 1):
        return f"{name} step {step!r} must be a whole number of at least 1"
    for value in span.split("-") if span not in ("*", "?") else ():
        number = value.isascii() and value.isdigit()
        if number and (len(value) > 4 or not low <= int(value) <= high):
            return f"{name} {value} is out of range {low}-{high}"
        names = _NAMES.get(name, ())
        if value.isalpha() and len(value) == 3 and value.lower() not in names and names:
            return f"{name} {value!r} is not a name ({names[0]}-{names[-1]})"
    return None


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The zone called `name`; raises ZoneInfoNotFoundError or ValueError if unknown."""
    return ZoneInfo(name)


def _local(spec: ScheduleSpec, ts: float) -> datetime:
    # fromtimestamp sets `fold` inside a repeated hour, which croniter honours.
    return datetime.fromtimestamp(ts, zone(spec.timezone))


def next_tick(spec: ScheduleSpec, after: float) -> float | None:
    """The first tick strictly after `after` (epoch seconds), or None if it never fires."""
    try:
        return float(croniter(spec.cron, _local(spec, after)).get_next(float))
    except CroniterBadDateError:
        return None


def prev_tick(spec: ScheduleSpec, before: float) -> float | None:
    """The last tick strictly before `before`, or None if there is none."""
    try:
        return float(croniter(spec.cron, _local(spec, before)).get_prev(float))
    except CroniterBadDateError:
        return None


def is_past_due(tick: float, now: float) -> bool:
    """True if `tick`, seen at `now`, is missed rather than on time (older than GRACE)."""
    return now - tick > GRACE


def due_ticks(spec: ScheduleSpec, last: float | None, now: float, started: float) -> list[float]:
    """Ticks to fire at `now`, oldest first, after the catch-up policy.

    Args:
        last: the last tick fired for this schedule (persisted), or None if
            it never fired; then nothing before `started` counts as missed.
        now: wall-clock time of this look.
        started: when this schedule was first bound by the running trigger.
    """
    base = started if last is None else last
    if now <= base:
        return []
    edge = now - GRACE
    return _missed(spec, base, edge) + _on_time(spec, base, edge, now)


def _missed(spec: ScheduleSpec, base: float, edge: float) -> list[float]:
    """Ticks in (base, edge) that the catch-up policy keeps."""
    if spec.catch_up == "none" or edge <= base:
        return []
    limit = 1 if spec.catch_up == "latest" else MAX_CATCH_UP
    # Walk back from the edge so a year of downtime under a per-second cron
    # costs at most `limit` steps.
    out: list[float] = []
    tick = prev_tick(spec, edge)
    while tick is not None and tick > base and len(out) < limit:
        out.append(tick)
        tick = prev_tick(spec, tick)
    out.reverse()
    return out


def _on_time(spec: ScheduleSpec, base: float, edge: float, now: float) -> list[float]:
    """Every tick in [edge, now] and after base (a window of GRACE), oldest first."""
    out: list[float] = []
    # next_tick is strict and ticks are whole seconds: step back one second
    # so a tick exactly at `edge` is included, then filter.
    tick = next_tick(spec, max(base, edge - 1.0))
    while tick is not None and tick <= now:
        if tick >= edge:
            out.append(tick)
        tick = next_tick(spec, tick)
    return out


def describe(spec: ScheduleSpec, now: float) -> dict[str, Any]:
    """The next fire time, in the schedule's zone and in UTC, for `fnrun ls`."""
    tick = next_tick(spec, now)
    if tick is None:
        return {"next": None, "next_utc": None}
    return {
        "next": _local(spec, tick).isoformat(),
        "next_utc": datetime.fromtimestamp(tick, UTC).isoformat(),
    }
