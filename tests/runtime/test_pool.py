"""WorkerPool against real worker processes (tests/runtime/handlers/actions.py)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime.errors import Where, WorkerError
from runtime.events import Event, HttpInfo, Outcome
from runtime.pool.launcher import FORK_SERVER
from runtime.pool.workerpool import WorkerPool
from runtime.results import decode_result
from runtime.specs import FunctionSpec
from tests.runtime.procs import alive, appended_lines, wait_for

HANDLERS = Path(__file__).parent / "handlers"
LOG = logging.getLogger("tests.pool")

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def make_spec(
    attr: str = "handle", file: Path = HANDLERS / "actions.py", **kw: Any
) -> FunctionSpec:
    return FunctionSpec(
        name="fn", where=Where(Path("functions.yaml"), 1, 1), handler_file=file,
        handler_attr=attr, **kw,
    )


@pytest.fixture
async def pools() -> AsyncIterator[Callable[..., WorkerPool]]:
    """Build pools that are closed (and their workers reaped) after the test."""
    made: list[WorkerPool] = []

    def build(spec: FunctionSpec | None = None, **kw: Any) -> WorkerPool:
        pool = WorkerPool(spec or make_spec(), log=LOG, **kw)
        made.append(pool)
        return pool

    yield build
    for pool in made:
        await pool.aclose(grace=1)
        assert pool.live_workers == 0


def ev(**data: Any) -> Event:
    return Event(type="test.event", data=data)


def children_of(parent: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{parent}/task").iterdir():
        found |= {int(pid) for pid in (task / "children").read_text().split()}
    return {pid for pid in found if alive(pid)}


def children() -> set[int]:
    """Pids of the processes running this process's handlers: the children of its
    workers' guards (`runtime.worker.guard`), which are its children and the fork server's."""
    template = FORK_SERVER.pid
    guards = children_of(os.getpid())
    if template is not None:
        guards = (guards | children_of(template)) - {template}
    return {runner for guard in guards for runner in children_of(guard)}


def read_spans(folder: Path) -> list[tuple[float, ...]]:
    return [tuple(map(float, p.read_text().split())) for p in folder.iterdir()]


def read_when_there(path: Path) -> Callable[[], str | None]:
    return lambda: path.read_text() if path.exists() else None


class Busy:
    """An invocation running in a pool: its worker's pid, then (after the block) its outcome."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.outcomes: list[Outcome] = []

    @property
    def outcome(self) -> Outcome:
        [outcome] = self.outcomes
        return outcome


@asynccontextmanager
async def busy_worker(pool: WorkerPool, folder: Path, seconds: float | None = None,
                      ) -> AsyncIterator[Busy]:
    """A `write_pid_and_wait` invocation (woken after `seconds`, or never) running in
    `pool` for the block; the block's end waits for its outcome."""
    pidfile = folder / "pid"
    data: dict[str, Any] = {"do": "write_pid_and_wait", "pidfile": str(pidfile)}
    if seconds is not None:
        data["seconds"] = seconds
    outcomes: list[Outcome] = []

    async def run() -> None:
        outcomes.append(await pool.invoke(Event(type="t", data=data), 1))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        busy = Busy(int(await wait_for(read_when_there(pidfile))))
        busy.outcomes = outcomes
        yield busy


async def test_sync_handler_sees_event_and_ctx(pools: Callable[..., WorkerPool]) -> None:
    pool = pools(make_spec(timeout=20))
    event = Event(
        type="order.created", data={"do": "describe"}, subject="o-1",
        extensions={"tenant": "t1"},
        http=HttpInfo("POST", "/hooks/x", {"a": "1"}, {"content-type": "text/plain"}),
    )
    before = time.time()
    outcome = await pool.invoke(event, 3)
    assert outcome.status == "ok", outcome
    got = outcome.result["json"]
    assert got["id"] == event.id and got["type"] == "order.created"
    assert got["subject"] == "o-1" and got["extensions"] == {"tenant": "t1"}
    assert got["time"] == event.time.isoformat() and got["tz"] is True
    assert got["http"] == ["POST", "/hooks/x", {"a": "1"}, {"content-type": "text/plain"}]
    assert got["function"] == "fn" and got["attempt"] == 3
    assert before + 20 <= got["deadline"] <= time.time() + 20
    assert got["helper"] == "helper"
    assert got["pid"] != os.getpid()
    assert outcome.emits == ()


async def test_async_and_one_argument_handlers(pools: Callable[..., WorkerPool]) -> None:
    pool = pools(make_spec("handle_async"))
    first = await pool.invoke(ev(), 1)
    second = await pool.invoke(ev(), 2)
    assert first.status == second.status == "ok"
    assert second.result["json"]["attempt"] == 2
    # One event loop per worker, kept across invocations.
    assert first.result["json"]["loop"] == second.result["json"]["loop"]
    assert [e.type for e in first.emits] == ["async.done"]
    one = await pools(make_spec("one_arg")).invoke(Event(type="a.b"), 1)
    assert (one.status, one.result) == ("ok", {"text": "only a.b"})
    defaults = await pools(make_spec("with_defaults")).invoke(Event(type="a.b"), 1)
    assert defaults.result == {"json": [True, "x", 1]}  # optional parameters stay optional


async def test_emits_come_back_only_in_the_outcome(pools: Callable[..., WorkerPool]) -> None:
    pool = pools()
    outcome = await pool.invoke(ev(do="emit"), 1)
    assert outcome.status == "ok"
    charged, blob = outcome.emits
    assert (charged.type, charged.data) == ("order.charged", {"order": 7})
    assert charged.source == blob.source == "fnrun/fn"
    assert (blob.data, blob.subject, blob.id) == (b"\x00\xff", "s1", "fixed-id")
    assert charged.id and charged.id != blob.id
    failed = await pool.invoke(ev(do="emit", fail=True), 1)
    assert failed.status == "error" and failed.emits == ()
    assert failed.error == "ValueError: card declined"


async def test_emit_rejects_bad_arguments(pools: Callable[..., WorkerPool]) -> None:
    outcome = await pools().invoke(ev(do="bad_emit"), 1)
    errors = outcome.result["json"]
    assert len(errors) == 4
    assert "type must be a non-empty str" in errors[0] and "type must be" in errors[1]
    assert "data is set" in errors[2] and "neither JSON nor bytes" in errors[2]
    assert "object at ['k']" in errors[3]


async def test_emit_refuses_types_no_trigger_matches_and_unusable_ids(
    pools: Callable[..., WorkerPool],
) -> None:
    outcome = await pools().invoke(ev(do="emit_checks"), 1)
    assert outcome.status == "ok", outcome
    refused = outcome.result["json"]
    assert len(refused) == 9, refused
    assert all(r.startswith("ctx.emit: ") and "\n" not in r for r in refused)
    assert "'has space' is not dot-separated segments of letters, digits" in refused[0]
    assert "'a..b'" in refused[1] and "'order.*'" in refused[2] and "'.a'" in refused[3]
    assert "at most 255 characters" in refused[4]
    assert "id '' is not 1 to 255 printable characters" in refused[5]
    assert "'x\\ud800'" in refused[6] and "'line\\nbreak'" in refused[7]
    assert refused[8] == "ctx.emit: id 'kept' is already used by an event emitted here"
    # Before, all of these were queued: an empty id became a fresh one, a repeated
    # one was dropped by the store, an unencodable one failed the store's write.
    assert [(e.type, e.data, e.id) for e in outcome.emits][:2] == [
        ("a.b", 1, "kept"), ("a.b", [1], "fixed-later"),
    ]
    assert outcome.emits[2].type == "Order_v2.created-now" and len(outcome.emits) == 3


async def test_exception_gives_error_with_traceback(pools: Callable[..., WorkerPool]) -> None:
    pool = pools()
    outcome = await pool.invoke(ev(do="raise"), 1)
    assert outcome.status == "error"
    assert outcome.error == "KeyError: 'missing-thing'"
    assert outcome.traceback is not None
    assert "raise_error" in outcome.traceback and "KeyError" in outcome.traceback
    assert "runtime/worker/child.py" not in outcome.traceback
    assert (await pool.invoke(ev(do="pid"), 1)).status == "ok"
    assert pool.live_workers == 1  # an exception does not cost the worker


async def test_bad_return_values_fail_with_one_clear_line(
    pools: Callable[..., WorkerPool],
) -> None:
    pool = pools()
    bad = await pool.invoke(ev(do="bad_return"), 1)
    assert bad.status == "error"
    assert bad.error == (
        "handler returned set, which is not JSON, str, bytes or (status, body[, headers])"
    )
    nested = await pool.invoke(ev(do="nested_bad_return"), 1)
    assert nested.error == "handler returned dict with object at ['items'][2], which is not JSON"
    response = await pool.invoke(ev(do="response"), 1)
    assert decode_result(response.result) == (201, "bytes", b"made", {"x-made": "yes"})


@pytest.mark.parametrize(
    ("attr", "data", "error"),
    [
        ("handle", {"do": "exit", "code": 3}, "SystemExit: 3"),
        ("handle", {"do": "exit"}, "SystemExit"),
        ("handle", {"do": "interrupt"}, "KeyboardInterrupt"),
        ("handle", {"do": "raise_base"}, "Stop: stop everything"),
        ("exit_async", {}, "SystemExit: 2"),
    ],
)
async def test_base_exceptions_fail_the_attempt_and_retire_the_worker(
    pools: Callable[..., WorkerPool], attr: str, data: dict[str, Any], error: str,
) -> None:
    pool = pools(make_spec(attr))
    assert await pool.warm() is None
    [pid] = children()
    outcome = await pool.invoke(Event(type="t", data=data), 1)
    # Once a crash: "worker exited with code 3", the traceback only in the log.
    assert (outcome.status, outcome.error) == ("error", error)
    assert outcome.traceback is not None and "actions.py" in outcome.traceback
    assert error.partition(":")[0] in outcome.traceback
    # The handler asked its process to stop: that worker is not reused.
    await wait_for(lambda: not alive(pid))
    assert pool.live_workers == 0
    again = await pool.invoke(Event(type="t", data=data), 2)  # in a new worker
    assert (again.status, again.error) == ("error", error)


async def test_exceptions_whose_message_misbehaves_give_one_bounded_line(
    pools: Callable[..., WorkerPool],
) -> None:
    pool = pools()
    pid = (await pool.invoke(ev(do="pid"), 1)).result["json"]
    broken = await pool.invoke(ev(do="raise_broken"), 1)
    assert broken.status == "error"  # was a crash: str(exc) raised in the worker
    assert broken.error == "BrokenMessage: <str() of the exception failed>"
    assert broken.traceback is not None and "raise_broken" in broken.traceback
    huge = await pool.invoke(ev(do="raise_huge"), 1)
    assert huge.status == "error" and huge.error is not None
    assert huge.error.startswith("ValueError: mmm") and len(huge.error) <= 1003
    assert huge.traceback is not None and len(huge.traceback) < 33_000
    assert "raise_huge" in huge.traceback and "characters cut" in huge.traceback
    # A lone surrogate cannot be written by a store: it once left the delivery running.
    odd = await pool.invoke(ev(do="raise_surrogate"), 1)
    assert odd.error == "ValueError: bad \\ud800 thing"
    assert odd.traceback is not None and odd.traceback.encode()
    assert (await pool.invoke(ev(do="pid"), 1)).result["json"] == pid  # the worker stays


async def test_a_forked_child_that_returns_does_not_answer_for_the_worker(
    pools: Callable[..., WorkerPool],
) -> None:
    pool = pools(make_spec(timeout=5))
    forked = await pool.invoke(ev(do="fork_and_return"), 1)
    assert forked.status == "ok" and forked.result["json"]["child"] is False
    worker = forked.result["json"]["pid"]
    # The child once went on serving: its `done` answered the next item, and it
    # read items off the worker's socket in turn with its parent.
    outcomes = await pool.invoke_many([(ev(do="pid"), 1) for _ in range(20)])
    assert [o.result for o in outcomes] == [{"json": worker}] * 20


async def test_a_handler_that_breaks_its_streams_keeps_its_worker(
    pools: Callable[..., WorkerPool],
) -> None:
    pool = pools()
    broke = await pool.invoke(ev(do="break_streams"), 1)
    # Flushing sys.stdout = None once crashed the worker after the handler returned.
    assert broke.status == "ok", broke
    again = await pool.invoke(ev(do="pid"), 1)
    assert again.result == {"json": broke.result["json"]}


async def test_os_exit_is_a_crash_and_the_pool_recovers(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    pool = pools()
    pidfile = tmp_path / "pid"
    outcome = await pool.invoke(ev(do="write_pid_and_exit", pidfile=str(pidfile)), 1)
    assert outcome.status == "crash" and outcome.error == "worker exited with code 3"
    after = await pool.invoke(ev(do="pid"), 2)
    assert after.status == "ok" and after.result["json"] != int(pidfile.read_text())
    assert pool.live_workers == 1


async def test_sigkill_of_the_worker_is_a_crash(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    pool = pools()
    async with busy_worker(pool, tmp_path) as busy:
        os.kill(busy.pid, signal.SIGKILL)
    assert busy.outcome.status == "crash"
    assert busy.outcome.error == "worker died from signal SIGKILL"
    assert not alive(busy.pid)
    again = await pool.invoke(ev(do="pid"), 2)
    assert again.status == "ok" and again.result["json"] != busy.pid


async def test_timeout_kills_the_process_group(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    pool = pools(make_spec(timeout=1.0))
    pidfile = tmp_path / "pids"
    started = time.monotonic()
    outcome = await pool.invoke(ev(do="spawn_grandchild", pidfile=str(pidfile)), 1)
    assert outcome.status == "timeout" and outcome.error == "timed out after 1s"
    assert 1.0 <= time.monotonic() - started < 5
    worker, grandchild = map(int, pidfile.read_text().split())
    await wait_for(lambda: not alive(worker) and not alive(grandchild))
    assert pool.live_workers == 0
    assert (await pool.invoke(ev(do="pid"), 2)).status == "ok"


async def test_memory_limit_fails_the_attempt_not_the_pool(
    pools: Callable[..., WorkerPool],
) -> None:
    pool = pools(make_spec(memory_mb=256))
    small = await pool.invoke(ev(do="allocate", mb=16), 1)
    assert small.status == "ok" and small.result == {"json": 16 * 1024 * 1024}
    big = await pool.invoke(ev(do="allocate", mb=2048), 1)
    assert big.status in ("error", "crash")
    assert big.error is not None and "MemoryError" in big.error
    assert (await pool.invoke(ev(do="allocate", mb=16), 1)).status == "ok"


async def test_a_small_memory_limit_leaves_the_handler_its_memory(
    pools: Callable[..., WorkerPool],
) -> None:
    # Under RLIMIT_AS, the lifeline thread's malloc arena (64 MiB reserved, not
    # used) made a worker 78 MiB before its handler loaded: memory_mb 64 could
    # not load at all, and each thread a handler started cost another 64 MiB.
    pool = pools(make_spec(memory_mb=64))
    fits = await pool.invoke(ev(do="allocate", mb=40), 1)
    assert fits.status == "ok", fits
    assert (await pool.invoke(ev(do="threads", count=8), 1)).result == {"json": 8 * 1024 * 1024}
    over = await pool.invoke(ev(do="allocate", mb=80), 1)
    assert over.status == "error" and "MemoryError" in (over.error or "")


async def test_a_handler_too_big_for_its_memory_limit_says_so(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    handler = tmp_path / "big.py"
    handler.write_text("BLOCK = bytearray(64 * 1024 * 1024)\ndef handle(event):\n    return 1\n")
    pool = pools(make_spec(file=handler, memory_mb=16))
    outcome = await pool.invoke(ev(), 1)
    assert outcome.status == "error"
    assert outcome.error == "MemoryError (memory_mb 16 is too small to load the handler)"
    assert outcome.traceback is not None and "big.py" in outcome.traceback


async def test_environment_is_allowlist_env_and_secrets(
    pools: Callable[..., WorkerPool], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("FNRUN_TEST_LEAK", "leaked")
    monkeypatch.setenv("FNRUN_TEST_SECRET", "s3cret")
    monkeypatch.setenv("LC_TEST_THING", "not kept")
    monkeypatch.setenv("PYTHON_TEST_TOKEN", "not kept")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.delenv("FNRUN_TEST_ABSENT", raising=False)
    spec = make_spec(env={"LOG_LEVEL": "debug"}, secrets=("FNRUN_TEST_SECRET", "FNRUN_TEST_ABSENT"))
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        pool = pools(spec)
    env = (await pool.invoke(ev(do="environment"), 1)).result["json"]
    assert "FNRUN_TEST_LEAK" not in env and "FNRUN_TEST_ABSENT" not in env
    assert env["FNRUN_TEST_SECRET"] == "s3cret" and env["LOG_LEVEL"] == "debug"
    # Exact names (SPEC 6): LC_ALL passes, another LC_* or PYTHON* variable does not.
    assert "LC_TEST_THING" not in env and "PYTHON_TEST_TOKEN" not in env
    assert env["LC_ALL"] == "C.UTF-8" and env["PATH"] == os.environ["PATH"]
    allowed = {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "VIRTUAL_ENV", "PYTHONHOME",
               "LOG_LEVEL", "FNRUN_TEST_SECRET"}
    assert set(env) <= allowed, sorted(env)
    assert "FNRUN_TEST_ABSENT" in caplog.text


async def test_env_base_replaces_the_supervisor_environment(
    pools: Callable[..., WorkerPool],
) -> None:
    base = {"PATH": os.environ["PATH"], "HOME": "/nowhere", "OTHER": "x"}
    env = (await pools(env_base=base).invoke(ev(do="environment"), 1)).result["json"]
    assert env["HOME"] == "/nowhere" and "OTHER" not in env


async def test_heavy_and_binary_output_does_not_disturb_the_protocol(
    pools: Callable[..., WorkerPool], caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger=LOG.name):
        pool = pools()
        outcome = await pool.invoke(ev(do="noisy"), 1)
        assert (outcome.status, outcome.result) == ("ok", {"text": "survived"})
        await wait_for(lambda: any("done printing" in r.getMessage() for r in caplog.records))
    messages = [r.getMessage() for r in caplog.records if r.name == LOG.name]
    tagged = [m for m in messages if m.startswith("[fn ")]
    assert sum(1 for m in tagged if " line " in m) == 20_000
    assert any(m.endswith("] line 19999") for m in tagged)
    assert max(len(m) for m in messages) < 8192 + 100  # long lines are split
    assert any("\ufffd" in m for m in messages)  # garbage decoded, not raised
    assert (await pool.invoke(ev(do="pid"), 1)).status == "ok"


async def test_output_is_tagged_with_the_invocation_that_wrote_it(
    pools: Callable[..., WorkerPool], caplog: pytest.LogCaptureFixture,
) -> None:
    # Tags once came from the item the pool was waiting for when the drain read
    # a line: in a batch the worker runs ahead, and 495 of 500 lines were
    # tagged with a later invocation than the one that printed them.
    with caplog.at_level(logging.INFO, logger=LOG.name):
        pool = pools()
        items = [(ev(do="say", partial=n % 3 == 0 and n < 59), 1) for n in range(60)]
        outcomes = await pool.invoke_many(items)
        assert [o.status for o in outcomes] == ["ok"] * 60
        invocations = [o.result["text"] for o in outcomes]

        def lines() -> list[tuple[str, str, str]]:
            messages = [r.getMessage() for r in caplog.records if r.name == LOG.name]
            return [(m.split()[1].rstrip("]"), *m.split()[2:4]) for m in messages
                    if m.startswith("[fn ") and len(m.split()) == 4]

        await wait_for(lambda: len(lines()) == 60 * 2 + 20)
    said = lines()
    assert all(tag == invocation for tag, _, invocation in said), said
    assert sorted(inv for _, what, inv in said if what == "said") == sorted(invocations)
    unfinished = [inv for _, what, inv in said if what == "unfinished"]
    assert unfinished == invocations[0:59:3]  # each ended by the next item, under its own tag


async def test_concurrency_bounds_simultaneous_invocations(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    pool = pools(make_spec(concurrency=2))
    pids: list[int] = []

    async def run() -> None:
        # Long enough to overlap even when a loaded machine starts the second worker late.
        outcome = await pool.invoke(ev(do="overlap", dir=str(tmp_path), seconds=1.5), 1)
        pids.append(outcome.result["json"])

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(run)
        await wait_for(lambda: pool.running == 2)
        assert pool.live_workers <= 2
    spans = read_spans(tmp_path)
    assert len(spans) == 3
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 2
    assert len(set(pids)) == 2  # the third reused a warm worker


async def test_worker_is_recycled_after_max_uses(pools: Callable[..., WorkerPool]) -> None:
    pool = pools(max_uses=2)
    pids = [(await pool.invoke(ev(do="pid"), 1)).result["json"] for _ in range(3)]
    assert pids[0] == pids[1] != pids[2]
    await wait_for(lambda: not alive(pids[0]))


@pytest.mark.parametrize(
    ("source", "attr", "expected"),
    [
        (None, "handle", "No such file"),
        ("def other(event):\n    return 1\n", "handle", "has no attribute 'handle'"),
        ("def handle(event:\n", "handle", "SyntaxError"),
        ("HANDLE = 3\n", "HANDLE", "is a int, not a callable"),
        ("def handle():\n    return 1\n", "handle", "must accept (event) or (event, ctx)"),
        ("def handle(event):\n    yield 1\n", "handle", "handle is a generator function"),
        ("def handle(event, ctx, extra):\n    return 1\n", "handle", "requires 3 positional"),
        ("def handle(event, *, key):\n    return 1\n", "handle", "and 1 keyword-only arguments"),
        (
            "class H:\n    def __call__(self, event, ctx, more):\n        return 1\nhandle = H()\n",
            "handle", "requires 3 positional",
        ),
        ("async def handle(e, c):\n    yield 1\n", "handle", "handle is a generator function"),
    ],
)
async def test_load_errors_are_errors_without_a_crash_loop(
    pools: Callable[..., WorkerPool], tmp_path: Path, source: str | None, attr: str,
    expected: str,
) -> None:
    handler = tmp_path / "fn.py"
    counter = tmp_path / "imports"
    if source is not None:
        handler.write_text(f"open({str(counter)!r}, 'a').write('x')\n" + source)
    pool = pools(make_spec(attr, file=handler))
    outcomes = [await pool.invoke(ev(), attempt) for attempt in (1, 2, 3)]
    assert all(o.status == "error" for o in outcomes)
    assert expected in (outcomes[0].error or "")
    assert outcomes[0].error == outcomes[2].error
    assert pool.live_workers == 0 and pool.load_error == outcomes[0].error
    if source is not None and "SyntaxError" not in expected:
        assert counter.read_text() == "x"  # imported once, not once per invocation


async def test_aclose_lets_running_invocations_finish(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    pool = pools()
    async with busy_worker(pool, tmp_path, seconds=0.5) as busy:
        await pool.aclose(grace=10)
    assert busy.outcome.status == "ok" and busy.outcome.result == {"text": "woke"}
    assert pool.live_workers == 0 and not alive(busy.pid)
    with pytest.raises(WorkerError):
        await pool.invoke(ev(do="pid"), 1)


async def test_aclose_kills_what_outlives_the_grace(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    pool = pools()
    async with busy_worker(pool, tmp_path) as busy:
        started = time.monotonic()
        await pool.aclose(grace=0.2)
        assert time.monotonic() - started < 5
    assert busy.outcome.status == "crash"
    assert not alive(busy.pid)


async def test_retire_lets_the_busy_worker_finish_then_exit(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    pool = pools(make_spec(concurrency=2))
    # Busy for longer than the idle worker can take to exit, even on a loaded machine.
    async with busy_worker(pool, tmp_path, seconds=4) as busy:
        idle_pid = (await pool.invoke(ev(do="pid"), 1)).result["json"]
        assert idle_pid != busy.pid
        pool.retire()
        await wait_for(lambda: not alive(idle_pid))
        assert alive(busy.pid) and not busy.outcomes
    assert busy.outcome.status == "ok"
    await wait_for(lambda: not alive(busy.pid))
    assert pool.live_workers == 0


ORPHAN_PARENT = """
import anyio, logging, sys
from pathlib import Path
from runtime.errors import Where
from runtime.events import Event
from runtime.pool.workerpool import WorkerPool
from runtime.specs import FunctionSpec

async def main():
    spec = FunctionSpec(name="fn", where=Where(Path("f.yaml"), 1, 1),
                        handler_file=Path(sys.argv[1]), handler_attr="handle", concurrency=2)
    pool = WorkerPool(spec, log=logging.getLogger("orphan"))
    idle = await pool.invoke(Event(type="t", data={"do": "pid"}), 1)
    Path(sys.argv[3]).write_text(str(idle.result["json"]))
    await pool.invoke(Event(type="t", data={"do": "write_pid_and_wait", "pidfile": sys.argv[2]}), 1)

anyio.run(main)
"""


@pytest.mark.timeout(30)
async def test_orphaned_workers_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    busy, idle = tmp_path / "busy", tmp_path / "idle"
    handler = str(HANDLERS / "actions.py")
    command = [sys.executable, "-c", ORPHAN_PARENT, handler, str(busy), str(idle)]
    async with await anyio.open_process(command) as parent:
        try:
            busy_pid = int(await wait_for(read_when_there(busy)))
            idle_pid = int(await wait_for(read_when_there(idle)))
            assert alive(idle_pid) and alive(busy_pid)
            parent.kill()
            await parent.wait()
            await wait_for(lambda: not alive(idle_pid) and not alive(busy_pid), within=5)
        finally:
            if parent.returncode is None:
                parent.kill()
                await parent.wait()


def recorded(log: Path) -> list[tuple[int, int, float, float]]:
    """(n, pid, start, ctx.deadline) per item the `record` action started."""
    rows = [line.split() for line in appended_lines(log)]
    return [(int(n), int(pid), float(at), float(dl)) for n, pid, at, dl in rows]


def batch(log: Path, count: int, **extra: dict[str, Any]) -> list[tuple[Event, int]]:
    """`count` record items; `extra[n]` adds fields to item n."""
    return [
        (Event(type="t", data={"do": "record", "log": str(log), "n": n, **extra.get(str(n), {})}),
         n + 1)
        for n in range(count)
    ]


async def test_invoke_many_runs_items_in_order_in_one_worker(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    pool = pools(make_spec(timeout=5))
    log = tmp_path / "log"
    outcomes = await pool.invoke_many(batch(log, 20))
    assert [o.status for o in outcomes] == ["ok"] * 20
    assert [o.result["json"] for o in outcomes] == list(range(20))
    rows = recorded(log)
    assert [r[0] for r in rows] == list(range(20))
    assert len({r[1] for r in rows}) == 1 and pool.live_workers == 1
    # Durations are per item and cover the item alone.
    assert all(0 <= o.duration < 1 for o in outcomes)
    assert all(a.started <= b.started for a, b in zip(outcomes, outcomes[1:], strict=False))


async def test_a_crash_mid_batch_returns_only_what_ran(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    pool = pools()
    log = tmp_path / "log"
    items = batch(log, 6, **{"2": {"crash": True}})
    outcomes = await pool.invoke_many(items)
    assert [o.status for o in outcomes] == ["ok", "ok", "crash"]
    assert outcomes[2].error == "worker exited with code 4"
    assert [r[0] for r in recorded(log)] == [0, 1, 2]  # 3, 4, 5 never started
    # The caller still owns the rest: they run in a fresh worker.
    rest = await pool.invoke_many(items[3:])
    assert [o.result["json"] for o in rest] == [3, 4, 5]
    rows = recorded(log)
    assert [r[0] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert rows[0][1] == rows[2][1] != rows[3][1]
    assert pool.live_workers == 1


async def test_timeouts_are_per_item_and_stop_the_batch(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    pool = pools(make_spec(timeout=0.6))
    log = tmp_path / "log"
    # Four items of 0.3 s: the batch outlasts one timeout, no item does.
    slow = {str(n): {"seconds": 0.3} for n in range(4)}
    outcomes = await pool.invoke_many(batch(log, 4, **slow))
    assert [o.status for o in outcomes] == ["ok"] * 4
    rows = recorded(log)
    # ctx.deadline is each item's own start plus the timeout.
    assert all(at + 0.6 - 0.05 <= dl <= at + 0.6 + 0.05 for _, _, at, dl in rows)
    log.unlink()
    started = time.monotonic()
    stuck = batch(log, 4, **{"0": {"seconds": 0.3}, "1": {"seconds": 30}})
    outcomes = await pool.invoke_many(stuck)
    assert [o.status for o in outcomes] == ["ok", "timeout"]
    assert outcomes[1].error == "timed out after 0.6s"
    assert 0.9 <= time.monotonic() - started < 5
    assert [r[0] for r in recorded(log)] == [0, 1]
    await wait_for(lambda: pool.live_workers == 0)


async def test_a_fatal_error_mid_batch_retires_the_worker(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    pool = pools()
    log = tmp_path / "log"
    items = [(ev(do="pid"), 1), (ev(do="raise_memory"), 1), *batch(log, 2)]
    outcomes = await pool.invoke_many(items)
    assert [o.status for o in outcomes] == ["ok", "error"]
    assert "MemoryError" in (outcomes[1].error or "")
    assert not log.exists()
    await wait_for(lambda: not alive(outcomes[0].result["json"]))
    assert (await pool.invoke(ev(do="pid"), 1)).result["json"] != outcomes[0].result["json"]


async def test_invoke_many_runs_nothing_when_the_handler_cannot_load(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    pool = pools(make_spec(file=tmp_path / "missing.py"))
    assert await pool.invoke_many([(ev(), 1), (ev(), 1)]) == []
    assert pool.load_error is not None and "No such file" in pool.load_error


async def test_cancelling_a_batch_kills_its_worker(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    pool = pools()
    log = tmp_path / "log"
    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.invoke_many, batch(log, 3, **{"1": {"seconds": 30}}))
        # Cancelled while item 1 runs: however long its worker took to start.
        await wait_for(lambda: len(recorded(log)) == 2, within=30)
        tg.cancel_scope.cancel()
    pid = recorded(log)[0][1]
    await wait_for(lambda: not alive(pid))
    assert pool.live_workers == 0 and pool.running == 0
    assert [r[0] for r in recorded(log)] == [0, 1]


async def test_a_replacement_is_warm_before_the_worker_retires(
    pools: Callable[..., WorkerPool],
) -> None:
    pool = pools(max_uses=10)
    first = (await pool.invoke(ev(do="pid"), 1)).result["json"]
    for _ in range(8):
        assert (await pool.invoke(ev(do="pid"), 1)).result["json"] == first
    await wait_for(lambda: pool.live_workers == 2)  # the spare, started at 9 of 10 uses
    spare = children() - {first}
    assert (await pool.invoke(ev(do="pid"), 1)).result["json"] == first  # use 10: retires
    second = (await pool.invoke(ev(do="pid"), 1)).result["json"]
    assert spare == {second}  # the replacement was already running: no spawn on this path
    await wait_for(lambda: not alive(first))
    assert pool.live_workers == 1


async def test_warm_starts_the_worker_the_first_invocation_uses(
    pools: Callable[..., WorkerPool],
) -> None:
    pool = pools()
    before = children()
    assert pool.live_workers == 0
    assert await pool.warm() is None
    assert pool.live_workers == 1
    [warmed] = list(children() - before)
    outcome = await pool.invoke(ev(), 1)
    assert outcome.ok and outcome.result["json"]["pid"] == warmed
    assert await pool.warm() is None and pool.live_workers == 1  # already warm: no second


async def test_warm_reports_a_handler_that_does_not_load(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    (tmp_path / "broken.py").write_text("import no_such_module_anywhere\n")
    pool = pools(make_spec(file=tmp_path / "broken.py"))
    error = await pool.warm()
    assert error is not None and "no_such_module_anywhere" in error
    assert pool.live_workers == 0


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("nan", "handler returned dict with float nan at ['x'], which is not JSON"),
        ("inf", "handler returned list with float -inf at [1], which is not JSON"),
        ("big_int", "handler returned dict with int of 4,200 digits or more at ['n'][0], which"),
        ("deep", "handler returned list with nesting deeper than 100 at [0][0]"),
    ],
)
async def test_results_no_json_reader_accepts_fail_the_attempt(
    pools: Callable[..., WorkerPool], value: str, error: str,
) -> None:
    # Accepted before, these reached the store as NaN (invalid JSON) or failed
    # its write (a 5,000-digit int), leaving the delivery running for good.
    outcome = await pools(make_spec(retry=False)).invoke(ev(do="returns", value=value), 1)
    assert outcome.status == "error", outcome
    assert outcome.error is not None and outcome.error.startswith(error)
    assert len(outcome.error) < 250  # one bounded line, however deep the value


async def test_enum_and_mapping_subclasses_come_back_as_plain_json(
    pools: Callable[..., WorkerPool],
) -> None:
    pool = pools()
    # json.dumps takes StrEnum, IntEnum, OrderedDict and HTTPStatus; marshal did not,
    # and each failed its attempt with "result not sent: unmarshallable object".
    outcome = await pool.invoke(ev(do="returns", value="subclasses"), 1)
    assert outcome.status == "ok", outcome
    assert outcome.result == {"json": {"red": [3, "red", {"a": 1.5}]}}
    response = await pool.invoke(ev(do="returns", value="status_enum"), 1)
    assert response.status == "ok", response
    assert decode_result(response.result) == (201, "text", "red", {"x-colour": "red"})
    assert type(response.result["status"]) is int
    emitted = await pool.invoke(ev(do="emit_not_json"), 1)
    assert emitted.status == "ok", emitted
    nan, big = emitted.result["json"]
    assert nan == "ctx.emit: data is float nan, which is neither JSON nor bytes"
    assert big.startswith("ctx.emit: data is int of 4,200 digits or more at ['n']")
    [event] = emitted.emits
    assert (event.type, event.data, event.subject) == ("plain.enum", {"red": 3}, "red")
    assert type(event.subject) is str and type(next(iter(event.data))) is str


async def test_outcomes_carry_their_invocation_id_and_log_lines(
    pools: Callable[..., WorkerPool],
) -> None:
    pool = pools(make_spec(log_lines=4))
    said, chatty, slow = await pool.invoke_many(
        [(ev(do="say"), 1), (ev(do="chatty", order=3, lines=5, fail=True), 2), (ev(do="pid"), 1)])
    # The id the handler saw (ctx.invocation) and its log lines were tagged with.
    assert said.invocation == decode_result(said.result)[2]
    assert [(line.stream, line.text) for line in said.logs] == [
        ("stdout", f"said {said.invocation}")]
    assert len({said.invocation, chatty.invocation, slow.invocation}) == 3
    assert all(len(o.invocation) == 12 for o in (said, chatty, slow))
    assert chatty.status == "error" and chatty.error == "RuntimeError: kaboom"
    assert [line.text for line in chatty.logs] == [
        "charging 3", "printed ✓", "to stderr", "line 0",
        "... 6 more lines cut (logs.max_lines_per_run=4)"]
    assert slow.logs == ()
