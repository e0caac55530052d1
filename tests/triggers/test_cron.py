"""The pure cron maths: next ticks (with DST), catch-up policies, `ls` output."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from runtime.errors import Where
from triggers.cron import (
    GRACE,
    MAX_CATCH_UP,
    ScheduleSpec,
    describe,
    due_ticks,
    field_problem,
    next_tick,
)

pytestmark = pytest.mark.timeout(30)

WHERE = Where(Path("f.yaml"), 1, 1)


def spec(cron: str, timezone: str = "UTC", catch_up: str = "latest") -> ScheduleSpec:
    return ScheduleSpec(where=WHERE, cron=cron, timezone=timezone, catch_up=catch_up)  # type: ignore[arg-type]


def ts(text: str) -> float:
    """Epoch seconds of an ISO time with offset."""
    return datetime.fromisoformat(text).timestamp()


def iso_utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


# (cron, zone, after, expected next tick) -- expected values follow croniter 7's
# documented DST rules: a skipped wall time fires at the end of the gap; a
# repeated wall time fires at both of its instants.
NEXT_CASES = [
    # plain UTC, minute and seconds fields, aliases
    ("*/5 * * * *", "UTC", "2024-01-01T10:02:30+00:00", "2024-01-01T10:05:00+00:00"),
    ("*/5 * * * *", "UTC", "2024-01-01T10:05:00+00:00", "2024-01-01T10:10:00+00:00"),
    ("* * * * * */15", "UTC", "2024-01-01T10:00:14.500+00:00", "2024-01-01T10:00:15+00:00"),
    ("* * * * * */15", "UTC", "2024-01-01T10:00:15+00:00", "2024-01-01T10:00:30+00:00"),
    ("* * * * * *", "UTC", "2024-01-01T10:00:59+00:00", "2024-01-01T10:01:00+00:00"),
    ("@hourly", "UTC", "2024-01-01T10:00:00+00:00", "2024-01-01T11:00:00+00:00"),
    ("@daily", "UTC", "2024-01-01T10:00:00+00:00", "2024-01-02T00:00:00+00:00"),
    ("0 9 * * mon-fri", "Europe/Berlin", "2024-01-05T09:00:00+01:00", "2024-01-08T08:00:00+00:00"),
    ("0 0 29 2 *", "UTC", "2024-03-01T00:00:00+00:00", "2028-02-29T00:00:00+00:00"),
    # Europe/Berlin spring forward, 2024-03-31 02:00 CET -> 03:00 CEST
    ("30 2 * * *", "Europe/Berlin", "2024-03-30T12:00:00+00:00", "2024-03-31T01:00:00+00:00"),
    ("30 2 * * *", "Europe/Berlin", "2024-03-31T01:00:00+00:00", "2024-04-01T00:30:00+00:00"),
    ("0 * * * *", "Europe/Berlin", "2024-03-31T00:00:00+00:00", "2024-03-31T01:00:00+00:00"),
    ("30 1 * * *", "Europe/Berlin", "2024-03-30T12:00:00+00:00", "2024-03-31T00:30:00+00:00"),
    # Europe/Berlin fall back, 2024-10-27 03:00 CEST -> 02:00 CET: 02:30 happens twice
    ("30 2 * * *", "Europe/Berlin", "2024-10-26T12:00:00+00:00", "2024-10-27T00:30:00+00:00"),
    ("30 2 * * *", "Europe/Berlin", "2024-10-27T00:30:00+00:00", "2024-10-27T01:30:00+00:00"),
    ("30 2 * * *", "Europe/Berlin", "2024-10-27T01:30:00+00:00", "2024-10-28T01:30:00+00:00"),
    ("0 * * * *", "Europe/Berlin", "2024-10-27T00:00:00+00:00", "2024-10-27T01:00:00+00:00"),
    # America/New_York spring forward, 2024-03-10 02:00 EST -> 03:00 EDT
    ("30 2 * * *", "America/New_York", "2024-03-09T12:00:00+00:00", "2024-03-10T07:00:00+00:00"),
    ("30 2 * * *", "America/New_York", "2024-03-10T07:00:00+00:00", "2024-03-11T06:30:00+00:00"),
    # America/New_York fall back, 2024-11-03 02:00 EDT -> 01:00 EST: 01:30 happens twice
    ("30 1 * * *", "America/New_York", "2024-11-02T12:00:00+00:00", "2024-11-03T05:30:00+00:00"),
    ("30 1 * * *", "America/New_York", "2024-11-03T05:30:00+00:00", "2024-11-03T06:30:00+00:00"),
    # from inside the repeated hour (second pass, 01:00 EST): only the second 01:30 is left
    ("30 1 * * *", "America/New_York", "2024-11-03T06:00:00+00:00", "2024-11-03T06:30:00+00:00"),
    ("30 1 * * *", "America/New_York", "2024-11-03T06:30:00+00:00", "2024-11-04T06:30:00+00:00"),
    ("*/30 * * * *", "America/New_York", "2024-11-03T05:30:00+00:00", "2024-11-03T06:00:00+00:00"),
]


@pytest.mark.parametrize(("cron", "zone", "after", "expected"), NEXT_CASES)
def test_next_tick(cron: str, zone: str, after: str, expected: str) -> None:
    tick = next_tick(spec(cron, zone), ts(after))
    assert tick is not None
    assert iso_utc(tick) == datetime.fromisoformat(expected).isoformat()


def test_next_tick_never() -> None:
    assert next_tick(spec("0 0 31 2 *"), ts("2024-01-01T00:00:00+00:00")) is None


@pytest.mark.parametrize(
    ("zone", "day"),
    [
        ("Europe/Berlin", "2024-03-31"),
        ("Europe/Berlin", "2024-10-27"),
        ("America/New_York", "2024-03-10"),
        ("America/New_York", "2024-11-03"),
    ],
)
def test_quarter_hours_have_no_hole_or_repeat_in_utc_across_dst(zone: str, day: str) -> None:
    s = spec("*/15 * * * *", zone)
    t = ts(f"{day}T00:00:00+00:00") - 86_400.0
    for _ in range(3 * 96):
        nxt = next_tick(s, t)
        assert nxt == t + 900.0, iso_utc(t)
        t = nxt


# -- catch-up ----------------------------------------------------------------

T0 = ts("2024-01-01T10:00:00+00:00")
MIN = 60.0

# (policy, last, now, started, expected ticks as offsets from T0 in minutes)
DUE_CASES = [
    # on time: the 10:05 tick seen 0.2 s late is not missed
    ("latest", T0, T0 + 5 * MIN + 0.2, T0, [5]),
    ("none", T0, T0 + 5 * MIN + 0.2, T0, [5]),
    ("all", T0, T0 + 5 * MIN + 0.2, T0, [5]),
    # nothing due yet
    ("latest", T0, T0 + 4 * MIN, T0, []),
    ("all", T0 + 5 * MIN, T0 + 5 * MIN + 0.5, T0, []),
    # down from 10:00 to 10:17:30 -> missed 10:05, 10:10, 10:15
    ("latest", T0, T0 + 17.5 * MIN, T0 + 17.5 * MIN, [15]),
    ("all", T0, T0 + 17.5 * MIN, T0 + 17.5 * MIN, [5, 10, 15]),
    ("none", T0, T0 + 17.5 * MIN, T0 + 17.5 * MIN, []),
    # down until just after 10:20 -> the missed ones, plus 10:20 on time
    ("latest", T0, T0 + 20 * MIN + 0.3, T0 + 20 * MIN, [15, 20]),
    ("all", T0, T0 + 20 * MIN + 0.3, T0 + 20 * MIN, [5, 10, 15, 20]),
    ("none", T0, T0 + 20 * MIN + 0.3, T0 + 20 * MIN, [20]),
    # never fired before: nothing before `started` counts as missed
    ("latest", None, T0 + 17.5 * MIN, T0 + 17.5 * MIN, []),
    ("all", None, T0 + 20 * MIN + 0.3, T0 + 17.5 * MIN, [20]),
    ("latest", None, T0 + 27.5 * MIN, T0 + 17.5 * MIN, [25]),
    # a clock that jumped back below the last fired tick fires nothing
    ("all", T0 + 30 * MIN, T0 + 10 * MIN + 0.1, T0, []),
    ("latest", T0 + 30 * MIN, T0 + 30 * MIN, T0, []),
]


@pytest.mark.parametrize(("policy", "last", "now", "started", "expected"), DUE_CASES)
def test_due_ticks(
    policy: str, last: float | None, now: float, started: float, expected: list[int]
) -> None:
    ticks = due_ticks(spec("*/5 * * * *", catch_up=policy), last, now, started)
    assert ticks == [T0 + m * MIN for m in expected]


def test_grace_boundary() -> None:
    s = spec("*/5 * * * *", catch_up="none")
    tick = T0 + 5 * MIN
    assert due_ticks(s, T0, tick + GRACE, T0) == [tick]
    assert due_ticks(s, T0, tick + GRACE + 0.01, T0) == []


def test_all_is_bounded_to_the_most_recent() -> None:
    s = spec("* * * * * *", catch_up="all")
    now = T0 + 86_400.0  # a day of per-second ticks missed
    ticks = due_ticks(s, T0, now, now)
    # the most recent missed ones, then the two within GRACE of now (on time)
    assert len(ticks) == MAX_CATCH_UP + 2
    assert ticks[-2:] == [now - 1.0, now]
    assert ticks[0] == now - 1.0 - MAX_CATCH_UP
    assert ticks == sorted(set(ticks))


def test_latest_after_a_year_down_is_cheap_and_exact() -> None:
    s = spec("* * * * * *", catch_up="latest")
    now = T0 + 365 * 86_400.0 + 0.5
    assert due_ticks(s, T0, now, now) == [now - 0.5 - 1.0, now - 0.5]


def test_catch_up_across_dst_fall_back_keeps_both_instants() -> None:
    s = spec("30 1 * * *", "America/New_York", catch_up="all")
    last = ts("2024-11-02T05:30:00+00:00")
    now = ts("2024-11-04T12:00:00+00:00")
    assert [iso_utc(t) for t in due_ticks(s, last, now, now)] == [
        "2024-11-03T05:30:00+00:00",
        "2024-11-03T06:30:00+00:00",
        "2024-11-04T06:30:00+00:00",
    ]


# -- ls ----------------------------------------------------------------------


def test_describe_shows_next_fire_in_zone_and_utc() -> None:
    out = describe(spec("0 9 * * *", "Europe/Berlin"), ts("2024-07-01T12:00:00+00:00"))
    assert out == {
        "next": "2024-07-02T09:00:00+02:00",
        "next_utc": "2024-07-02T07:00:00+00:00",
    }


def test_describe_never() -> None:
    assert describe(spec("0 0 30 2 *"), T0) == {"next": None, "next_utc": None}


FIELD_PROBLEMS = {
    "61 * * * *": "minute 61 is out of range 0-59",
    "0 24 * * *": "hour 24 is out of range 0-23",
    "0 0 0 * *": "day of month 0 is out of range 1-31",
    "0 0 32 * *": "day of month 32 is out of range 1-31",
    "0 0 1 0 *": "month 0 is out of range 1-12",
    "0 0 * * 8": "day of week 8 is out of range 0-7",
    "0 0 * * * 60": "second 60 is out of range 0-59",
    "5-75 * * * *": "minute 75 is out of range 0-59",
    "1,2,99 * * * *": "minute 99 is out of range 0-59",
    "0 0,30 * * *": "hour 30 is out of range 0-23",
    "*/0 * * * *": "minute step '0' must be a whole number of at least 1",
    "* */x * * *": "hour step 'x' must be a whole number of at least 1",
    "0 0 1 foo *": "month 'foo' is not a name (jan-dec)",
    "0 0 * * fun": "day of week 'fun' is not a name (sun-sat)",
    "99999999999999999999 * * * *": "minute 99999999999999999999 is out of range 0-59",
    # Nothing plainly out of range: croniter's own check decides.
    "59 23 31 12 7": None,
    "0 0 * jan-mar mon-fri": None,
    "*/15 9-17 * * 1-5": None,
    "0 0 L * *": None,
    "0 0 * * 5#2": None,
}


@pytest.mark.parametrize(("cron", "problem"), FIELD_PROBLEMS.items())
def test_a_field_out_of_range_is_named_with_its_range(cron: str, problem: str | None) -> None:
    assert field_problem(cron) == problem
