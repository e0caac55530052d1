"""The store contract: every adapter (see conftest.py `store`) must pass all of it."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import anyio
import pytest

from runtime.events import Event, Outcome
from runtime.store.base import Counts, Delivery, Store

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def event(kind: str = "order.created", data: object = None, at: float | None = None) -> Event:
    when = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return Event(type=kind, data=data, time=when)


def ok(result: object = None) -> Outcome:
    return Outcome(status="ok", started=time.time(), duration=0.01, result=result)


def failed(error: str = "boom", emits: tuple[Event, ...] = ()) -> Outcome:
    return Outcome(
        status="error",
        started=time.time(),
        duration=0.01,
        error=error,
        traceback=f"Traceback (most recent call last):\nValueError: {error}",
        emits=emits,
    )


async def claim_one(store: Store, function: str, now: float | None = None) -> Delivery:
    claimed = await store.claim(function, 10, time.time() if now is None else now)
    assert len(claimed) == 1, claimed
    return claimed[0]


async def dead_letter(store: Store, function: str, error: str = "boom") -> Delivery:
    """Publish one event to `function` and fail its only attempt for good."""
    await store.publish([(event(data={"for": function}), [function])])
    delivery = await claim_one(store, function)
    await store.fail(delivery, failed(error), None)
    return delivery


async def test_publish_fans_out_one_delivery_per_target(store: Store) -> None:
    sent = event(data={"order": 7})
    assert await store.publish([(sent, ["a", "b", "c"])]) == [True]
    counts = await store.counts()
    assert {fn: c.pending for fn, c in counts.items()} == {"a": 1, "b": 1, "c": 1}
    got = await claim_one(store, "b")
    assert (got.function, got.attempt) == ("b", 1)
    assert got.event == sent
    assert (await store.counts())["b"].running == 1
    assert (await store.counts())["a"].pending == 1


async def test_publish_without_targets_stores_no_delivery(store: Store) -> None:
    assert await store.publish([(event(), [])]) == [True]
    assert all(c.pending == 0 for c in (await store.counts()).values())


async def test_publish_is_idempotent_by_event_id(store: Store) -> None:
    sent = event()
    assert await store.publish([(sent, ["a"])]) == [True]
    assert await store.publish([(sent, ["a", "b"])]) == [False]
    assert await store.publish([(sent, ["a"]), (event(), ["a"])]) == [False, True]
    counts = await store.counts()
    assert counts["a"].pending == 2
    assert "b" not in counts or counts["b"].pending == 0


async def test_bytes_data_and_extensions_survive_the_store(store: Store) -> None:
    sent = Event(type="blob.put", data=b"\x00\xffraw", subject="s", extensions={"x": 1})
    await store.publish([(sent, ["a"])])
    assert (await claim_one(store, "a")).event == sent


async def test_claim_honours_limit_and_function(store: Store) -> None:
    await store.publish([(event(data=i), ["a"]) for i in range(5)])
    await store.publish([(event(data=i), ["b"]) for i in range(2)])
    now = time.time()
    first = await store.claim("a", 3, now)
    rest = await store.claim("a", 10, now)
    assert (len(first), len(rest)) == (3, 2)
    assert {d.event.data for d in first + rest} == set(range(5))
    assert len({d.id for d in first + rest}) == 5
    assert await store.claim("a", 10, now) == []
    assert (await store.counts())["b"].pending == 2
    assert await store.claim("nobody", 10, now) == []


async def test_claim_honours_due_time_and_next_due(store: Store) -> None:
    assert await store.next_due("a") is None
    await store.publish([(event(), ["a"])])
    now = time.time()
    assert (await store.next_due("a") or 0) <= now
    delivery = await claim_one(store, "a")
    assert await store.next_due("a") is None
    retry_at = now + 60
    await store.fail(delivery, failed(), retry_at)
    assert await store.next_due("a") == pytest.approx(retry_at, abs=0.01)
    assert await store.claim("a", 10, now + 30) == []
    again = await claim_one(store, "a", now=retry_at + 1)
    assert (again.id, again.event.id, again.attempt) == (delivery.id, delivery.event.id, 2)


async def test_attempts_count_up_across_failures(store: Store) -> None:
    await store.publish([(event(), ["a"])])
    seen = []
    for _ in range(3):
        delivery = await claim_one(store, "a")
        seen.append(delivery.attempt)
        await store.fail(delivery, failed(), time.time())
    assert seen == [1, 2, 3]
    assert (await store.counts())["a"].pending == 1


async def test_fail_without_retry_dead_letters_with_error_and_traceback(store: Store) -> None:
    delivery = await dead_letter(store, "a", error="card declined")
    counts = (await store.counts())["a"]
    assert (counts.pending, counts.running, counts.dead) == (0, 0, 1)
    assert await store.claim("a", 10, time.time() + 3600) == []
    [letter] = await store.dead_letters()
    assert (letter.id, letter.function, letter.attempts) == (delivery.id, "a", 1)
    assert letter.event == delivery.event
    assert letter.error == "card declined"
    assert letter.traceback is not None and "ValueError: card declined" in letter.traceback
    assert letter.failed_at == pytest.approx(time.time(), abs=5)


async def test_succeed_many_finishes_each_and_publishes_each_ones_emits(store: Store) -> None:
    await store.publish([(event(data=n), ["a"]) for n in range(5)])
    claimed = await store.claim("a", 10, time.time())
    assert len(claimed) == 5
    child = event(kind="child.made")
    items = [(d, ok(d.event.data), [(child, ["b"])] if d is claimed[0] else []) for d in claimed]
    await store.succeed_many(items)
    counts = await store.counts()
    a = counts.get("a", Counts())
    assert (a.pending, a.running) == (0, 0)
    assert counts["b"].pending == 1
    assert (await claim_one(store, "b")).event.id == child.id
    history = await store.history("a", limit=10)
    assert len(history) == 5 and all(h.status == "ok" for h in history)


async def test_succeed_commits_emits_with_the_success(store: Store) -> None:
    await store.publish([(event(), ["a"])])
    delivery = await claim_one(store, "a")
    emitted = [(event("order.charged", {"n": i}), ["b", "c"]) for i in range(3)]
    assert await store.claim("b", 10, time.time()) == []
    await store.succeed(delivery, ok({"charged": True}), emitted)
    counts = await store.counts()
    assert "a" not in counts or (counts["a"].pending, counts["a"].running) == (0, 0)
    got = await store.claim("b", 10, time.time())
    assert sorted(d.event.data["n"] for d in got if isinstance(d.event.data, dict)) == [0, 1, 2]
    assert {d.event.id for d in got} == {e.id for e, _ in emitted}
    assert counts["c"].pending == 3
    [record] = await store.history("a")
    assert (record.status, record.attempt, record.result) == ("ok", 1, {"charged": True})


async def test_failed_attempt_publishes_no_emits(store: Store) -> None:
    await store.publish([(event(), ["a"])])
    delivery = await claim_one(store, "a")
    await store.fail(delivery, failed(emits=(event("order.charged"),)), time.time())
    delivery = await claim_one(store, "a")
    await store.fail(delivery, failed(emits=(event("order.charged"),)), None)
    assert set(await store.counts()) == {"a"}
    assert [r.status for r in await store.history()] == ["error", "error"]


async def test_recover_returns_running_to_pending_keeping_the_attempt(store: Store) -> None:
    await store.publish([(event(), ["a"]), (event(), ["a"]), (event(), ["b"])])
    await store.claim("a", 10, time.time())
    assert await store.recover() == 2
    counts = await store.counts()
    assert (counts["a"].pending, counts["a"].running, counts["b"].pending) == (2, 0, 1)
    again = await store.claim("a", 10, time.time())
    assert [d.attempt for d in again] == [2, 2]
    assert await store.recover() == 2
    assert await store.recover() == 0


async def test_release_gives_back_unstarted_claims_uncounted(store: Store) -> None:
    await store.publish([(event(), ["a"]), (event(), ["a"])])
    claimed = await store.claim("a", 10, time.time())
    await store.release(claimed[:1])
    counts = (await store.counts())["a"]
    assert (counts.pending, counts.running) == (1, 1)
    [again] = await store.claim("a", 10, time.time())
    assert (again.id, again.attempt) == (claimed[0].id, 1)


async def test_counts_per_function_and_state(store: Store) -> None:
    await store.publish([(event(), ["a", "b"]), (event(), ["a"]), (event(), ["a"])])
    await dead_letter(store, "c")
    await store.claim("a", 1, time.time())
    counts = await store.counts()
    assert (counts["a"].pending, counts["a"].running, counts["a"].dead) == (2, 1, 0)
    assert (counts["b"].pending, counts["b"].running, counts["b"].dead) == (1, 0, 0)
    assert (counts["c"].pending, counts["c"].running, counts["c"].dead) == (0, 0, 1)


async def test_history_is_newest_first_with_limit_and_filter(store: Store) -> None:
    await store.publish([(event(data=i), ["a", "b"]) for i in range(4)])
    for function in ("a", "b"):
        for delivery in await store.claim(function, 10, time.time()):
            await store.succeed(delivery, ok(f"{function}{delivery.event.data!r}"), [])
    history = await store.history()
    assert len(history) == 8
    assert [r.result for r in history[:4]] == ["b3", "b2", "b1", "b0"]
    assert [r.result for r in await store.history(limit=3)] == ["b3", "b2", "b1"]
    assert [r.result for r in await store.history("a", limit=2)] == ["a3", "a2"]
    assert await store.history("nobody") == []


async def test_recorded_sync_calls_join_the_history(store: Store) -> None:
    await store.publish([(event(data=0), ["a"])])
    await store.succeed(await claim_one(store, "a"), ok("queued"), [])
    calls = [event(data=i) for i in range(3)]
    await store.record([("hook", calls[0], ok("c0")), ("a", calls[1], ok("c1")),
                        ("hook", calls[2], failed("bad input"))])
    history = await store.history()
    assert [(r.function, r.result, r.status, r.attempt) for r in history] == [
        ("hook", None, "error", 1), ("a", "c1", "ok", 1), ("hook", "c0", "ok", 1),
        ("a", "queued", "ok", 1),
    ]
    assert history[0].error == "bad input" and history[0].event_id == calls[2].id
    assert [r.result for r in await store.history("a")] == ["c1", "queued"]


async def test_dead_letters_filter_by_function_and_ids(store: Store) -> None:
    a1 = await dead_letter(store, "a", "one")
    a2 = await dead_letter(store, "a", "two")
    b1 = await dead_letter(store, "b", "three")
    assert [d.id for d in await store.dead_letters()] == [b1.id, a2.id, a1.id]
    assert [d.id for d in await store.dead_letters(function="a")] == [a2.id, a1.id]
    assert [d.id for d in await store.dead_letters(ids=[a1.id, b1.id])] == [b1.id, a1.id]
    assert await store.dead_letters(function="b", ids=[a1.id]) == []
    assert await store.dead_letters(ids=["no-such-id", "²", "-1", ""]) == []
    assert len(await store.dead_letters(limit=1)) == 1


async def test_replay_dead_makes_them_pending_with_fresh_attempts(store: Store) -> None:
    a1 = await dead_letter(store, "a")
    await dead_letter(store, "a")
    b1 = await dead_letter(store, "b")
    assert await store.replay_dead(time.time(), ids=[a1.id]) == 1
    again = await claim_one(store, "a")
    assert (again.event.id, again.attempt) == (a1.event.id, 1)
    assert await store.replay_dead(time.time(), function="b") == 1
    assert (await claim_one(store, "b")).event.id == b1.event.id
    assert len(await store.dead_letters()) == 1
    assert await store.replay_dead(time.time()) == 1
    assert await store.dead_letters() == []


async def test_drop_dead_deletes_only_matching_dead_letters(store: Store) -> None:
    a1 = await dead_letter(store, "a")
    await dead_letter(store, "a")
    await dead_letter(store, "b")
    await store.publish([(event(), ["a"])])
    assert await store.drop_dead(ids=[a1.id]) == 1
    assert await store.drop_dead(function="a") == 1
    assert [d.function for d in await store.dead_letters()] == ["b"]
    assert await store.drop_dead() == 1
    assert (await store.counts())["a"].pending == 1


async def clock_passes(moment: float) -> None:
    """Wait until the wall clock (this one and the store's, at ms resolution) is past `moment`."""
    await anyio.sleep(max(0.0, moment + 0.005 - time.time()))


async def test_replay_redelivers_retained_events_by_since_and_type(store: Store) -> None:
    first, other = event("order.created", "first"), event("user.created", "other")
    await store.publish([(first, ["a"]), (other, ["a"])])
    await clock_passes(time.time())  # a clear gap on both sides of `middle`
    middle = time.time()
    await clock_passes(middle)
    second = event("order.created", "second")
    await store.publish([(second, ["a"]), (event("user.created"), ["a"])])
    now = time.time()
    count = await store.replay("late", middle, lambda t: t.startswith("order."), now)
    assert count == 1
    [got] = await store.claim("late", 10, now)
    assert (got.event.id, got.event.data, got.attempt) == (second.id, "second", 1)
    assert await store.replay("late", middle - 3600, lambda t: True, now) == 4
    assert {d.event.id for d in await store.claim("late", 10, now)} >= {first.id, other.id}
    assert (await store.counts())["a"].pending == 4


async def test_prune_keeps_events_that_still_have_deliveries(store: Store) -> None:
    live, done = event(data="live"), event(data="done")
    await store.publish([(live, ["a"]), (done, ["b"])])
    await store.succeed(await claim_one(store, "b"), ok(), [])
    dead = await dead_letter(store, "c")
    later = time.time() + 60
    await clock_passes(time.time())
    await store.prune(events_before=later, history_before=later)
    assert await store.history() == []
    # What retention kept: the live event and the dead letter's, not the done one.
    assert await store.replay("x", 0, lambda t: True, time.time()) == 2
    replayed = {d.event.id for d in await store.claim("x", 10, time.time())}
    assert replayed == {live.id, dead.event.id}
    assert (await claim_one(store, "a")).event == live
    [letter] = await store.dead_letters()
    assert letter.event == dead.event
    assert await store.replay_dead(time.time()) == 1
    assert (await claim_one(store, "c")).event == dead.event


async def test_prune_keeps_what_is_within_retention(store: Store) -> None:
    await store.publish([(event(), ["b"])])
    await store.succeed(await claim_one(store, "b"), ok(), [])
    earlier = time.time() - 60
    await store.prune(events_before=earlier, history_before=earlier)
    assert len(await store.history()) == 1
    assert await store.replay("x", 0, lambda t: True, time.time()) == 1


async def test_fire_tick_fires_each_tick_once(store: Store) -> None:
    assert await store.last_tick("report#0") is None
    tick = 1_700_000_000.0
    tick_event = Event(type="fnrun.schedule", id=f"report#0@{tick}")
    assert await store.fire_tick("report#0", tick, tick_event, ["report"]) is True
    assert await store.last_tick("report#0") == tick
    assert await store.fire_tick("report#0", tick, tick_event, ["report"]) is False
    earlier = Event(type="fnrun.schedule", id=f"report#0@{tick - 60}")
    assert await store.fire_tick("report#0", tick - 60, earlier, ["report"]) is False
    assert await store.last_tick("report#0") == tick
    assert [d.event.id for d in await store.claim("report", 10, time.time())] == [tick_event.id]
    assert await store.last_tick("report#1") is None


async def test_fire_tick_under_concurrency_fires_once(store: Store) -> None:
    tick = 1_700_000_060.0
    results: list[bool] = []

    async def fire() -> None:
        tick_event = Event(type="fnrun.schedule", id=f"job#0@{tick}")
        results.append(await store.fire_tick("job#0", tick, tick_event, ["job"]))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(fire)
    assert sorted(results) == [False] * 19 + [True]
    assert len(await store.claim("job", 100, time.time())) == 1


async def test_remember_returns_the_first_value(store: Store) -> None:
    assert await store.remember("idem:1", {"status": 202, "id": "x"}, 60) is None
    assert await store.remember("idem:1", {"status": 202, "id": "y"}, 60) == {
        "status": 202,
        "id": "x",
    }
    assert await store.remember("idem:2", [1, 2], 60) is None


async def test_recall_reads_what_was_remembered_until_it_expires(store: Store) -> None:
    assert await store.recall("idem:r") is None
    await store.remember("idem:r", {"answer": 1}, 60)
    assert await store.recall("idem:r") == {"answer": 1}
    await store.remember("idem:short", "soon gone", 0.05)
    with anyio.fail_after(5):
        while await store.recall("idem:short") is not None:
            await anyio.sleep(0.02)


async def test_concurrent_publishes_are_stored_exactly_once(store: Store) -> None:
    events = [event(data=i) for i in range(1000)]
    fresh: list[bool] = []

    async def publish_slice(start: int) -> None:
        for sent in events[start::20]:
            fresh.extend(await store.publish([(sent, ["a"])]))

    async with anyio.create_task_group() as tg:
        for start in range(20):
            tg.start_soon(publish_slice, start)
            tg.start_soon(publish_slice, start)  # every event twice, concurrently
    assert sorted(fresh) == [False] * 1000 + [True] * 1000
    assert (await store.counts())["a"].pending == 1000
    claimed = await store.claim("a", 2000, time.time())
    assert sorted(d.event.data for d in claimed) == list(range(1000))
