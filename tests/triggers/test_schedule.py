"""The schedule trigger: declarations, and the loop against a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime.errors import ManifestError, Where
from runtime.events import Event
from runtime.project.yamlnodes import Reader
from runtime.specs import FunctionSpec, Project, Settings
from runtime.store.base import Store
from runtime.store.sqlite import SqliteStore
from triggers.schedule import MAX_SLEEP, ScheduleSpec, Trigger, parse, schedule_key

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2024, 1, 1, 10, 0, tzinfo=UTC).timestamp()
MIN = 60.0

# -- declarations --------------------------------------------------------------


def parse_yaml(text: str, tmp_path: Path) -> ScheduleSpec:
    """Parse the value under `schedule:` of a one-key YAML document."""
    reader = Reader(tmp_path / "fn.yaml", text)
    root = reader.compose()
    assert root is not None
    return parse(reader, root.value[0][1])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('schedule: "*/5 * * * *"', ScheduleSpec(Where(Path("fn.yaml"), 1, 11), "*/5 * * * *")),
        ("schedule: '@hourly'", ScheduleSpec(Where(Path("fn.yaml"), 1, 11), "@hourly")),
        ('schedule: "* * * * * */10"', ScheduleSpec(Where(Path("f"), 1, 11), "* * * * * */10")),
        (
            'schedule: {cron: "0 9 * * mon-fri", timezone: Europe/Berlin, catch_up: all,'
            " data: {report: daily, n: [1, 2]}}",
            ScheduleSpec(
                Where(Path("fn.yaml"), 1, 11), "0 9 * * mon-fri", "Europe/Berlin", "all",
                {"report": "daily", "n": [1, 2]},
            ),
        ),
        (
            "schedule:\n  cron: '@daily'\n  catch_up: none\n",
            ScheduleSpec(Where(Path("fn.yaml"), 2, 3), "@daily", "UTC", "none"),
        ),
    ],
)
def test_parse_accepts(text: str, expected: ScheduleSpec, tmp_path: Path) -> None:
    spec = parse_yaml(text, tmp_path)
    assert spec.cron == expected.cron
    assert spec.timezone == expected.timezone
    assert spec.catch_up == expected.catch_up
    assert spec.data == expected.data
    assert (spec.where.line, spec.where.column) == (expected.where.line, expected.where.column)


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ('schedule: "61 * * * *"', 1, 11, "bad cron expression '61 * * * *'"),
        ('schedule: "* * * *"', 1, 11, "bad cron expression"),
        ('schedule: "* * * * * 0 2030"', 1, 11, "bad cron expression"),
        ("schedule: '@reboot'", 1, 11, "bad cron expression"),
        ('schedule: "0 0 31 2 *"', 1, 11, "never fires"),
        ("schedule: 5", 1, 11, "schedule cron must be a string"),
        ("schedule: [a]", 1, 11, "schedule must be a cron string or a mapping"),
        ("schedule:\n  cron: '@daily'\n  timezone: Mars/Olympus\n", 3, 13,
         "unknown timezone 'Mars/Olympus'"),
        ("schedule:\n  cron: '@daily'\n  timezone: ../../etc/passwd\n", 3, 13, "unknown timezone"),
        ("schedule:\n  cron: '@daily'\n  catch_up: sometimes\n", 3, 13,
         "catch_up must be one of: none, latest, all"),
        ("schedule:\n  cron: '@daily'\n  every: 5m\n", 3, 3, "unknown key 'every'"),
        ("schedule:\n  timezone: UTC\n", 2, 3, "schedule needs 'cron'"),
        ("schedule:\n  cron: '@daily'\n  data: 2024-01-01\n", 3, 9, "must be plain JSON"),
        ("schedule:\n  cron: '@daily'\n  data: {1: a}\n", 3, 9, "must be plain JSON"),
        ("schedule:\n  cron: '0 25 * * *'\n", 2, 9, "bad cron expression"),
    ],
)
def test_parse_errors_point_at_the_node(
    text: str, line: int, column: int, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ManifestError) as info:
        parse_yaml(text, tmp_path)
    assert (info.value.where.line, info.value.where.column) == (line, column)  # type: ignore[union-attr]
    assert message in info.value.message
    assert str(info.value).startswith(f"{tmp_path / 'fn.yaml'}:{line}:{column}: ")


# -- the loop --------------------------------------------------------------------


class FakeClock:
    """Wall time set by the test; `sleep` advances it (virtual time)."""

    def __init__(self, now: float, stop_at: float = float("inf")) -> None:
        self.wall = now
        self.mono = 0.0
        self.sleeps: list[float] = []
        self.stop_at = stop_at
        self.reached = anyio.Event()
        """Set once a sleep takes wall time to `stop_at`."""

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.wall += seconds
        self.mono += seconds
        if self.wall >= self.stop_at:
            self.reached.set()
        await anyio.lowlevel.checkpoint()


class ScheduleIngress:
    """What the schedule trigger uses of the runtime: a store and a clock."""

    def __init__(self, store: Store, clock: FakeClock) -> None:
        self.store = store
        self.clock = clock


def project(tmp_path: Path, schedules: dict[str, list[ScheduleSpec]]) -> Project:
    where = Where(tmp_path / "fn.yaml", 1, 1)
    functions = {
        name: FunctionSpec(
            name=name, where=where, handler_file=tmp_path / "fn.py", handler_attr="run",
            triggers=tuple(specs),
        )
        for name, specs in schedules.items()
    }
    return Project(settings=Settings(project=tmp_path, functions=tmp_path), functions=functions)


def every(
    cron: str, catch_up: str = "latest", timezone: str = "UTC", data: Any = None
) -> ScheduleSpec:
    where = Where(Path("fn.yaml"), 1, 1)
    return ScheduleSpec(where, cron, timezone, catch_up, data)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with SqliteStore(f"sqlite:///{tmp_path / 'state.db'}") as opened:
        yield opened


async def fired(store: Store, function: str) -> list[Event]:
    """Every tick event stored for `function`, oldest first (claims them)."""
    deliveries = await store.claim(function, 100_000, now=T0 + 10 * 365 * 86_400)
    return sorted((d.event for d in deliveries), key=lambda e: e.time)


def minutes(events: list[Event]) -> list[float]:
    return [(e.time.timestamp() - T0) / MIN for e in events]


def started_trigger(
    store: Store, clock: FakeClock, proj: Project
) -> Trigger:
    trigger = Trigger(ScheduleIngress(store, clock))  # type: ignore[arg-type]
    trigger.bind(proj)
    return trigger



@pytest.mark.anyio
async def test_tick_event_shape_and_notify(store: Store, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    spec = every("*/5 * * * *", data={"report": "daily"})
    trigger = started_trigger(store, clock, project(tmp_path, {"report": [spec]}))
    assert await trigger.sweep() == 0
    woken = anyio.Event()

    async def wait() -> None:
        await store.wait_for_work("report", 30)
        woken.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.lowlevel.checkpoint()
        clock.wall = T0 + 5 * MIN + 0.05
        assert await trigger.sweep() == 1
        with anyio.fail_after(5):
            await woken.wait()
    [event] = await fired(store, "report")
    assert event.type == "fnrun.schedule"
    assert event.time == datetime.fromtimestamp(T0 + 5 * MIN, UTC)  # scheduled, not run time
    assert event.data == {"report": "daily"}
    assert event.source == "fnrun/schedule/report"
    assert event.extensions["pastdue"] is False
    assert await store.last_tick(schedule_key("report", spec)) == T0 + 5 * MIN


@pytest.mark.anyio
async def test_restart_never_refires_and_latest_catches_up_once(
    store: Store, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    proj = project(tmp_path, {"job": [every("* * * * *")]})
    first = started_trigger(store, clock, proj)
    await first.sweep()
    for m in (1, 2, 3):
        clock.wall = T0 + m * MIN + 0.1
        await first.sweep()
    # "kill -9": a new trigger on the same store, 10 minutes later
    clock.wall = T0 + 13 * MIN + 30
    second = started_trigger(store, clock, proj)
    assert await second.sweep() == 1
    assert await second.sweep() == 0
    # a third instance at the very same moment finds nothing new either
    assert await started_trigger(store, clock, proj).sweep() == 0
    events = await fired(store, "job")
    assert minutes(events) == [1, 2, 3, 13]
    assert [e.extensions["pastdue"] for e in events] == [False, False, False, True]
    assert len({e.id for e in events}) == 4


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("policy", "expected"),
    [("none", [20]), ("latest", [15, 20]), ("all", [5, 10, 15, 20])],
)
async def test_catch_up_policies_after_downtime(
    store: Store, tmp_path: Path, policy: str, expected: list[int]
) -> None:
    clock = FakeClock(T0 - 1)
    proj = project(tmp_path, {"job": [every("*/5 * * * *", catch_up=policy)]})
    first = started_trigger(store, clock, proj)
    await first.sweep()
    clock.wall = T0 + 0.2
    assert await first.sweep() == 1  # 10:00, on time
    clock.wall = T0 + 20 * MIN + 0.4  # down from 10:00 to 10:20
    await started_trigger(store, clock, proj).sweep()
    events = await fired(store, "job")
    assert minutes(events) == [0, *expected]
    assert [e.extensions["pastdue"] for e in events[1:]] == [m != 20 for m in expected]


@pytest.mark.anyio
async def test_clock_jumping_back_fires_nothing_again(store: Store, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    trigger = started_trigger(store, clock, project(tmp_path, {"job": [every("* * * * *")]}))
    await trigger.sweep()
    for m in (1, 2, 3):
        clock.wall = T0 + m * MIN + 0.1
        await trigger.sweep()
    clock.wall = T0 + 0.5 * MIN  # jumps back 2.5 minutes
    for _ in range(4):
        clock.wall += MIN
        await trigger.sweep()
        # and a restarted trigger under the stale clock agrees
        await started_trigger(
            store, clock, project(tmp_path, {"job": [every("* * * * *")]})
        ).sweep()
    events = await fired(store, "job")
    assert minutes(events) == [1, 2, 3, 4]  # 10:04 is new: the clock is at 10:04:30 now


@pytest.mark.anyio
async def test_clock_jumping_forward_meets_the_policy(store: Store, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    trigger = started_trigger(
        store, clock, project(tmp_path, {"job": [every("*/5 * * * *", catch_up="latest")]})
    )
    await trigger.sweep()
    clock.wall = T0 + 60 * MIN + 0.3  # an hour ahead at once
    assert await trigger.sweep() == 2
    assert minutes(await fired(store, "job")) == [55, 60]


@pytest.mark.anyio
async def test_reload_keeps_last_ticks_and_applies_changes(store: Store, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    a, b = every("* * * * *"), every("*/2 * * * *", catch_up="all")
    trigger = started_trigger(store, clock, project(tmp_path, {"job": [a, b]}))
    await trigger.sweep()
    clock.wall = T0 + 2 * MIN + 0.1
    await trigger.sweep()
    assert trigger.keys == sorted([schedule_key("job", a), schedule_key("job", b)])
    # reload: the same schedules again (data changed), plus a second function
    trigger.bind(project(tmp_path, {"job": [a, every("*/2 * * * *", "all", data=7)],
                                    "other": [every("* * * * *")]}))
    await trigger.sweep()
    clock.wall = T0 + 4 * MIN + 0.1
    await trigger.sweep()
    # remove b; its ticks stop
    trigger.bind(project(tmp_path, {"job": [a]}))
    clock.wall = T0 + 6 * MIN + 0.1
    await trigger.sweep()
    events = await fired(store, "job")
    by_cron = sorted((e.extensions["schedule"], round(minutes([e])[0])) for e in events)
    assert by_cron == [
        ("* * * * *", 1), ("* * * * *", 2), ("* * * * *", 3), ("* * * * *", 4),
        ("* * * * *", 5), ("* * * * *", 6), ("*/2 * * * *", 2), ("*/2 * * * *", 4),
    ]
    assert [e.data for e in events if e.extensions["schedule"] == "*/2 * * * *"] == [None, 7]
    assert minutes(await fired(store, "other")) == [3, 4]  # new: nothing before its bind


@pytest.mark.anyio
async def test_thousand_schedules_bind_and_fire_in_one_sweep(
    store: Store, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    schedules = {f"fn-{i}": [every(f"{i % 60} * * * *")] for i in range(1000)}
    trigger = started_trigger(store, clock, project(tmp_path, schedules))
    with anyio.fail_after(30):
        assert await trigger.sweep() == 0
    assert len(trigger.keys) == 1000
    clock.wall = T0 + 59 * MIN + 0.5
    with anyio.fail_after(30):
        # every minute-of-hour 1..59 ticked in the last hour; only those due within
        # GRACE are on time, the rest are missed (latest = one each)
        fired_now = await trigger.sweep()
    # minute 59 is on time, 1..58 missed (latest fires each once), minute 0 is not
    # due yet: that is every schedule but the 17 of i = 0, 60, ..., 960
    assert fired_now == 1000 - 17
    counts = await store.counts()
    assert sum(c.pending for c in counts.values()) == fired_now
    assert [e.time for e in await fired(store, "fn-7")] == [
        datetime.fromtimestamp(T0 + 7 * MIN, UTC)
    ]
    assert await fired(store, "fn-0") == []


@pytest.mark.anyio
async def test_run_sleeps_until_the_next_tick_in_bounded_chunks(
    store: Store, tmp_path: Path
) -> None:
    clock = FakeClock(T0 + 0.25, stop_at=T0 + 62)
    trigger = started_trigger(store, clock, project(tmp_path, {"job": [every("* * * * * */5")]}))
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(trigger.run)
            await clock.reached.wait()
            tg.cancel_scope.cancel()
    events = await fired(store, "job")
    assert [e.time.timestamp() - T0 for e in events][:12] == [5.0 * i for i in range(1, 13)]
    assert all(e.extensions["pastdue"] is False for e in events)
    assert max(clock.sleeps) <= MAX_SLEEP
    # it woke at the ticks, not in a busy loop: about one wake per virtual second
    assert len(clock.sleeps) <= 2 * (clock.wall - T0) + 2

