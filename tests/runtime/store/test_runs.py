"""Run records (SPEC 11), part of the store contract: every adapter keeps them alike."""

from __future__ import annotations

import time

import pytest

from runtime.events import Event, LogLine, Outcome
from runtime.store.base import Store
from tests.runtime.store.test_contract import claim_one, event

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

LOGS = (
    LogLine(1.5, "log", "info", "charging order 7"),
    LogLine(1.6, "stderr", "", "warning: card expires soon ✓"),
    LogLine(1.7, "log", "warning", "... 3 more lines cut (logs.max_lines_per_run=200)"),
)


def outcome(status: str = "ok", invocation: str = "", **fields: object) -> Outcome:
    return Outcome(status=status, started=time.time(), duration=0.25,  # type: ignore[arg-type]
                   invocation=invocation, **fields)  # type: ignore[arg-type]


async def settle(store: Store, function: str, sent: Event, result: Outcome,
                 retry_at: float | None = None) -> None:
    """Publish `sent` to `function`, claim it, and settle it with `result`."""
    await store.publish([(sent, [function])])
    delivery = await claim_one(store, function)
    if result.ok:
        await store.succeed(delivery, result, [(e, []) for e in result.emits])
    else:
        await store.fail(delivery, result, retry_at)


async def test_a_success_keeps_everything_it_did(store: Store) -> None:
    sent = Event(type="order.paid", data={"order": 7}, extensions={"traceparent": "00-ab-cd-01"})
    emits = (Event(type="mail.send", data=1), Event(type="stock.take", data=2))
    await settle(store, "charge", sent, outcome(
        invocation="c36fb385aa01", result={"json": {"paid": True}}, emits=emits, logs=LOGS))
    run = await store.run("c36fb385aa01")
    assert run is not None
    assert (run.invocation, run.event_id, run.event_type, run.function, run.attempt) == (
        "c36fb385aa01", sent.id, "order.paid", "charge", 1)
    assert (run.status, run.duration, run.error, run.traceback) == ("ok", 0.25, None, None)
    assert run.result == {"json": {"paid": True}}
    assert run.emitted == (emits[0].id, emits[1].id)
    assert run.logs == LOGS
    assert run.seq > 0
    assert await store.runs() == [run]
    stored = await store.event(sent.id)
    assert stored is not None and stored.id == sent.id
    assert dict(stored.extensions) == {"traceparent": "00-ab-cd-01"}
    assert stored.data == {"order": 7}
    assert await store.event("no-such-event") is None
    assert await store.run("no-such-invocation") is None


async def test_failed_attempts_keep_their_traceback_and_emit_nothing(store: Store) -> None:
    sent = event()
    emits = (Event(type="mail.send"),)
    await settle(store, "a", sent, outcome(
        "error", "inv1", error="ValueError: bad", traceback="Traceback ...\nValueError: bad",
        emits=emits, logs=LOGS[:1]), retry_at=time.time())
    delivery = await claim_one(store, "a")
    await store.fail(delivery, outcome("timeout", "inv2", error="timed out after 1s"), None)
    first, second = await store.runs_for_events([sent.id])
    assert (first.invocation, first.attempt, first.status) == ("inv1", 1, "error")
    assert first.traceback == "Traceback ...\nValueError: bad"
    assert first.emitted == () and first.logs == LOGS[:1]
    assert (second.invocation, second.attempt, second.status) == ("inv2", 2, "timeout")
    assert second.error == "timed out after 1s" and second.seq > first.seq


async def test_sync_calls_keep_their_traceback_and_an_invocation_id(store: Store) -> None:
    call = event("http.request")
    await store.record([("hook", call, outcome(
        "error", "", error="RuntimeError: kaboom", traceback="Traceback\nRuntimeError: kaboom",
        logs=LOGS[1:2]))])
    [run] = await store.runs(event_id=call.id)
    assert (run.function, run.attempt, run.event_type) == ("hook", 1, "http.request")
    assert run.traceback == "Traceback\nRuntimeError: kaboom" and run.logs == LOGS[1:2]
    assert len(run.invocation) == 12  # given one, since the outcome came without
    assert await store.run(run.invocation) == run


async def test_runs_filter_server_side_and_page_by_seq(store: Store) -> None:
    before = time.time()
    sent = {}
    for i in range(12):
        function = "a" if i % 2 else "b"
        kind = "order.created" if i % 3 else "order.item.paid"
        sent[i] = event(kind)
        result = outcome("ok" if i % 4 else "error", f"inv{i:02}", error=None if i % 4 else "x")
        await settle(store, function, sent[i], result)
    every = await store.runs(limit=100)
    assert [r.invocation for r in every] == [f"inv{i:02}" for i in reversed(range(12))]
    seqs = [r.seq for r in every]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 12

    def names(runs: list) -> list[str]:  # type: ignore[type-arg]
        return [r.invocation for r in runs]

    assert names(await store.runs(function="a", limit=3)) == ["inv11", "inv09", "inv07"]
    assert names(await store.runs(status="error")) == ["inv08", "inv04", "inv00"]
    assert names(await store.runs(function="b", status="error")) == ["inv08", "inv04", "inv00"]
    assert names(await store.runs(function="a", status="error")) == []
    assert names(await store.runs(event_type="order.item.paid")) == [
        "inv09", "inv06", "inv03", "inv00"]
    assert names(await store.runs(event_type="order.*", function="b")) == [
        "inv10", "inv08", "inv04", "inv02"]
    assert len(await store.runs(event_type="order.**")) == 12
    assert len(await store.runs(event_type="**.paid")) == 4
    assert len(await store.runs(event_type="order.**.created")) == 8
    assert await store.runs(event_type="order.?reated") == []  # no GLOB wildcards here
    assert await store.runs(event_type="shop.*") == []
    assert names(await store.runs(event_id=sent[5].id)) == ["inv05"]
    assert names(await store.runs(event_id=sent[5].id, status="error")) == []
    assert len(await store.runs(since=before)) == 12
    assert await store.runs(since=time.time() + 60) == []
    # Pages backwards by the last seq seen; forwards right after a seq, missing nothing.
    page1 = await store.runs(limit=5)
    page2 = await store.runs(limit=5, before_seq=page1[-1].seq)
    page3 = await store.runs(limit=5, before_seq=page2[-1].seq)
    assert names(page1 + page2 + page3) == names(every)
    assert names(await store.runs(after_seq=every[-1].seq, limit=3)) == ["inv03", "inv02", "inv01"]
    assert names(await store.runs(after_seq=every[0].seq)) == []
    assert names(await store.runs(function="b", after_seq=every[-1].seq, limit=2)) == [
        "inv04", "inv02"]
    assert names(await store.runs(after_seq=seqs[5], before_seq=seqs[2])) == ["inv08", "inv07"]
    assert await store.runs(limit=0) == []
    # history() is the older view of the same records.
    assert [(h.event_id, h.status) for h in await store.history("a", limit=2)] == [
        (sent[11].id, "ok"), (sent[9].id, "ok")]


async def test_runs_for_events_gives_every_attempt_oldest_first(store: Store) -> None:
    one, two, other = event(), event(), event()
    later = time.time() + 1000
    await settle(store, "a", one, outcome("crash", "x1", error="worker exited"), later)
    await settle(store, "b", two, outcome("ok", "y1"))
    await settle(store, "a", other, outcome("ok", "z1"))
    again = await claim_one(store, "a", now=later + 1)
    await store.succeed(again, outcome("ok", "x2"), [])
    found = await store.runs_for_events([one.id, two.id])
    assert [(r.invocation, r.event_id, r.attempt) for r in found] == [
        ("x1", one.id, 1), ("y1", two.id, 1), ("x2", one.id, 2)]
    assert await store.runs_for_events([]) == []
    assert await store.runs_for_events(["nothing"]) == []


async def test_succeed_many_keeps_each_run(store: Store) -> None:
    sent = [event() for _ in range(3)]
    await store.publish([(e, ["a"]) for e in sent])
    claimed = await store.claim("a", 10, time.time())
    emitted = Event(type="done")
    await store.succeed_many([
        (d, outcome("ok", f"m{i}", logs=LOGS[:i], emits=(emitted,) if i == 2 else ()),
         [(emitted, [])] if i == 2 else [])
        for i, d in enumerate(claimed)
    ])
    runs = {r.invocation: r for r in await store.runs()}
    assert sorted(runs) == ["m0", "m1", "m2"]
    assert [runs[f"m{i}"].logs for i in range(3)] == [(), LOGS[:1], LOGS[:2]]
    assert runs["m2"].emitted == (emitted.id,) and runs["m0"].emitted == ()


async def test_retention_prunes_runs_with_history(store: Store) -> None:
    old, new = event(), event()
    await settle(store, "a", old, Outcome("ok", time.time() - 3600, 0.1, invocation="old1"))
    await settle(store, "a", new, outcome("ok", "new1"))
    cutoff = time.time() - 60
    await store.prune(events_before=0, history_before=cutoff)
    assert [r.invocation for r in await store.runs()] == ["new1"]
    assert await store.run("old1") is None
    assert await store.runs_for_events([old.id]) == []
    assert [r.invocation for r in await store.runs(function="a")] == ["new1"]
