"""The event trigger: pattern matching, declarations, routing and one-time backfills."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import pytest

from runtime.clock import Clock, SystemClock
from runtime.errors import ManifestError
from runtime.events import Event, Outcome
from runtime.project.manifest import load_project
from runtime.project.settings_loader import load_settings
from runtime.project.yamlnodes import Reader
from runtime.specs import Project
from runtime.store.base import Store
from runtime.store.sqlite import SqliteStore
from triggers.event import EventSpec, Router, Trigger, check_pattern, matches, parse

pytestmark = pytest.mark.timeout(20)

MATCHES = [
    # pattern, event type, matches?
    ("order.created", "order.created", True),
    ("order.created", "order.paid", False),
    ("order.created", "order.created.v2", False),
    ("order.created", "order", False),
    ("order.*", "order.created", True),
    ("order.*", "order", False),
    ("order.*", "order.created.v2", False),
    ("*.created", "user.created", True),
    ("*.created", "created", False),
    ("*", "order", True),
    ("*", "order.created", False),
    ("*.*", "a.b", True),
    ("**", "anything.at.all", True),
    ("**", "one", True),
    ("order.**", "order", True),
    ("order.**", "order.created", True),
    ("order.**", "order.created.v2.eu", True),
    ("order.**", "orders.created", False),
    ("**.created", "created", True),
    ("**.created", "order.created", True),
    ("**.created", "a.b.c.created", True),
    ("**.created", "order.created.v2", False),
    ("a.**.z", "a.z", True),
    ("a.**.z", "a.b.z", True),
    ("a.**.z", "a.b.c.d.z", True),
    ("a.**.z", "a.b.c", False),
    ("a.**.z", "b.a.z", False),
    ("a.**.*.z", "a.z", False),
    ("a.**.*.z", "a.b.z", True),
    ("a.**.**.z", "a.z", True),
    ("**.b.**", "a.b.c", True),
    ("**.b.**", "b", True),
    ("**.b.**", "a.c", False),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.c", False),
    ("Order.Created", "order.created", False),
]


@pytest.mark.parametrize("pattern, event_type, expected", MATCHES)
def test_matches(pattern: str, event_type: str, expected: bool) -> None:
    assert matches(pattern, event_type) is expected


@pytest.mark.parametrize("pattern, problem", [
    ("order.created", None),
    ("a-b_c.D9.*.**", None),
    ("*", None),
    ("", "must not be empty"),
    ("order.", "empty segment"),
    (".order", "empty segment"),
    ("order..x", "empty segment"),
    ("ord*", "segment 'ord*'"),
    ("a.***", "segment '***'"),
    ("a b", "segment 'a b'"),
    ("a/b", "segment 'a/b'"),
    ("x" * 256, "longer than 255"),
])
def test_check_pattern(pattern: str, problem: str | None) -> None:
    found = check_pattern(pattern)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def parse_text(tmp_path: Path, text: str) -> EventSpec:
    reader = Reader(tmp_path / "t.yaml", text)
    root = reader.compose()
    assert root is not None
    return parse(reader, root)


def test_parse_short_and_long_forms(tmp_path: Path) -> None:
    short = parse_text(tmp_path, "order.*\n")
    assert (short.kind, short.pattern, short.start) == ("event", "order.*", "now")
    assert (short.where.line, short.where.column) == (1, 1)
    long = parse_text(tmp_path, "\n  {type: '**', from: beginning}\n")
    assert (long.pattern, long.start) == ("**", "beginning")
    assert (long.where.line, long.where.column) == (2, 3)
    assert parse_text(tmp_path, "{type: a, from: now}").start == "now"


@pytest.mark.parametrize("text, column, message", [
    ("[a]", 1, "event pattern must be a string"),
    ("12", 1, "event pattern must be a string"),
    ("{type: a, from: 1}", 17, "'from' must be a string"),
    ("{type: 'a.b*'}", 8, "bad event pattern 'a.b*'"),
    ("{type: a, since: now}", 11, "unknown key 'since'"),
])
def test_parse_errors_point_at_the_value(
    tmp_path: Path, text: str, column: int, message: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_text(tmp_path, text)
    where = caught.value.where
    assert where is not None and (where.line, where.column) == (1, column)
    assert message in caught.value.message


def write_project(root: Path, functions: dict[str, list[str]]) -> Project:
    """A real project whose functions have the given event trigger lines."""
    folder = root / "functions"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "h.py").write_text("def main(event, ctx):\n    return None\n")
    lines = ["functions:"]
    for name, triggers in functions.items():
        lines += [f"  {name}:", "    handler: h.py:main", "    triggers:"]
        lines += [f"      - event: {t}" for t in triggers]
    (folder / "f.yaml").write_text("\n".join(lines) + "\n")
    return load_project(load_settings(root, environ={}))


def test_router_fans_out_to_every_matching_function(tmp_path: Path) -> None:
    project = write_project(tmp_path, {
        "exact": ["order.created"],
        "star": ["'order.*'"],
        "deep": ["'**.created'"],
        "twice": ["order.created", "'order.**'"],
        "other": ["user.created"],
    })
    router = Router(project)
    assert router.targets("order.created") == ["deep", "exact", "star", "twice"]
    assert router.targets("order.paid") == ["star", "twice"]
    assert router.targets("user.created") == ["deep", "other"]
    assert router.targets("order.created") == ["deep", "exact", "star", "twice"]
    assert router.targets("nothing") == []
    router.targets("order.paid").append("mutated")
    assert router.targets("order.paid") == ["star", "twice"], "callers get copies"


def test_router_cache_stays_bounded(tmp_path: Path) -> None:
    router = Router(write_project(tmp_path, {"all": ["'**'"]}))
    for n in range(10_000):
        assert router.targets(f"type.{n}") == ["all"]
    assert len(router._cache) <= 4096


class Door:
    """The runtime's ingress as a trigger sees it, over a real store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.clock: Clock = SystemClock()
        self.trigger = Trigger(self)

    @property
    def accepting(self) -> bool:
        return True

    def targets(self, event_type: str) -> list[str]:
        return self.trigger.targets(event_type)

    async def publish(self, events: Sequence[Event]) -> list[bool]:
        return await self.store.publish([(e, self.targets(e.type)) for e in events])

    async def invoke(self, function: str, event: Event) -> Outcome:
        raise AssertionError("the event trigger never invokes directly")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = SqliteStore(f"sqlite:///{tmp_path / 'state.db'}")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def pending(store: Store, function: str) -> int:
    counts = await store.counts()
    return counts[function].pending if function in counts else 0


async def wait_for_pending(store: Store, function: str, expected: int) -> None:
    """Wait, with a deadline, until `function` has `expected` pending deliveries."""
    with anyio.fail_after(5):
        while await pending(store, function) != expected:
            await store.wait_for_work(function, 0.1)


@pytest.mark.anyio
async def test_publish_routes_through_the_bound_project(tmp_path: Path, store: Store) -> None:
    door = Door(store)
    door.trigger.bind(write_project(tmp_path, {"a": ["'order.*'"], "b": ["'**'"]}))
    await door.publish([Event("order.created"), Event("user.created")])
    assert (await pending(store, "a"), await pending(store, "b")) == (1, 2)


@pytest.mark.anyio
async def test_backfill_runs_once_for_new_functions_only(tmp_path: Path, store: Store) -> None:
    door = Door(store)
    door.trigger.bind(write_project(tmp_path, {"live": ["'order.*'"]}))
    history = [Event("order.created"), Event("order.paid"), Event("user.created")]
    await door.publish(history)
    assert await pending(store, "live") == 2

    late = "{type: 'order.*', from: beginning}"
    async with anyio.create_task_group() as tg:
        tg.start_soon(door.trigger.run)
        door.trigger.bind(write_project(tmp_path, {"live": ["'order.*'"], "late": [late]}))
        await wait_for_pending(store, "late", 2)
        door.trigger.bind(write_project(tmp_path, {
            "live": ["'order.*'"], "late": [late], "later": ["{type: '**', from: beginning}"],
        }))
        await wait_for_pending(store, "later", 3)
        tg.cancel_scope.cancel()
    assert await pending(store, "late") == 2, "re-binding does not backfill again"
    assert await pending(store, "live") == 2, "from: now gets no history"

    restarted = Door(store)  # a new supervisor on the same store
    restarted.trigger.bind(write_project(tmp_path, {"late": [late]}))
    assert await restarted.trigger.backfill("late", "order.*") == 0
    assert await pending(store, "late") == 2, "a backfill happens once, across restarts"
    assert await restarted.trigger.backfill("late", "order.created") == 1, "new pattern"


def test_unbound_trigger_routes_nothing(tmp_path: Path) -> None:
    class Nowhere:
        store: Store
        clock = SystemClock()

    trigger = Trigger(Nowhere())  # type: ignore[arg-type]
    assert trigger.targets("order.created") == []

