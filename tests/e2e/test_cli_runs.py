"""`fnrun logs`, `fnrun trace` and `fnrun history`'s filters on a real SQLite store,
filled through the store's own delivery path (publish, claim, fail, succeed) as a
supervisor fills it: a webhook-like event whose first attempt fails, whose retry
emits an event that a second function handles."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import anyio
import pytest
import redis

from runtime import plugins
from runtime.cli.main import main
from runtime.events import Event, LogLine, Outcome
from runtime.store.base import Store
from runtime.store.sqlite import SqliteStore
from runtime.tracing.context import emitted, trace_extensions
from tests.e2e.harness import Project, fnrun, wait_until
from tests.services import redis_url

pytestmark = pytest.mark.timeout(60)
REDIS = redis_url(9)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING = f"00-{TRACE}-00f067aa0ba902b7-01"
A1, A2, B1 = "a1a1a1a1a1a1", "a2a2a2a2a2a2", "b1b1b1b1b1b1"


def declare(project: Project, store: str | None = None) -> str:
    for name, pattern in (("charge", "order.created"), ("ship", "order.paid")):
        project.add(name, f"""
            functions:
              {name}:
                handler: {name}.py:handle
                triggers:
                  - event: {pattern}
            """, "def handle(event, ctx):\n    pass\n")
    if store is not None:
        project.write("fnrun.yaml", f"store: {store}\n")
        return store
    return f"sqlite:///{project.root}/.fnrun/state.db"


async def seed(url: str) -> None:
    async with plugins.store_for(url) as store:
        root = Event(type="order.created", id="ev-root", data={"n": 1},
                     extensions=trace_extensions(INCOMING))
        await store.publish([(root, ["charge"])])
        now = time.time()
        [first] = await store.claim("charge", 10, now)
        await store.fail(first, Outcome(
            "error", now, 0.004, error="RuntimeError: card declined\nsecond line",
            traceback="Traceback (most recent call last):\nRuntimeError: card declined",
            invocation=A1, logs=(LogLine(now, "log", "info", "charging order 1"),
                                 LogLine(now, "stderr", "", "declined \x1b[31mred"))),
            retry_at=now)
        [second] = await store.claim("charge", 10, now + 1)
        emits = emitted([Event(type="order.paid", id="ev-paid")], second.event, "charge", 2)
        await store.succeed(second, Outcome(
            "ok", now + 1, 0.010, result={"json": "paid"}, emits=tuple(emits), invocation=A2,
            logs=(LogLine(now + 1, "stdout", "", "paid order 1"),)), [(emits[0], ["ship"])])
        await ship(store, now + 2)


async def ship(store: Store, now: float, invocation: str = B1) -> None:
    [delivery] = await store.claim("ship", 10, now)
    await store.succeed(delivery, Outcome(
        "ok", now, 0.002, invocation=invocation,
        logs=(LogLine(now, "log", "warning", f"shipped by {invocation}"),)), [])


@pytest.fixture
def seeded(
    request: pytest.FixtureRequest, project: Project, service_missing: Callable[[str], NoReturn]
) -> Iterator[Project]:
    """The project with its store filled; on Redis (database 9) when the test asks."""
    if getattr(request, "param", "sqlite") == "sqlite":
        anyio.run(seed, declare(project))
        yield project
        return
    client = redis.Redis.from_url(REDIS)
    try:
        client.flushdb()
    except redis.ConnectionError:
        service_missing(f"Redis is not running at {REDIS}")
    try:
        anyio.run(seed, declare(project, REDIS))
        yield project
    finally:
        client.flushdb()
        client.close()


def run(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """The `fnrun` command in a new interpreter, as a user runs it."""
    return fnrun(*args, "--project", str(project.root), check=False)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """The same command line in this process (`runtime.cli.main.main`): for tables of cases,
    where a new interpreter per case would cost a second each."""

    def call(project: Project, *args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit:
            main([*args, "--project", str(project.root)])
        out, err = capsys.readouterr()
        return int(exit.value.code or 0), out, err

    return call


@pytest.mark.parametrize("seeded", ["sqlite", "redis"], indirect=True)
def test_trace_shows_the_tree_with_one_trace_id_and_the_retry(
    seeded: Project, cli: Callable[..., tuple[int, str, str]]
) -> None:
    tree = json.loads(cli(seeded, "trace", "ev-root", "--json")[1])
    assert tree["trace_id"] == TRACE and tree["events"] == 2
    [charge] = tree["root"]["deliveries"]
    assert [(a["attempt"], a["outcome"], a["invocation"]) for a in charge["attempts"]] == [
        (1, "error", A1), (2, "ok", A2)]
    assert charge["attempts"][0]["error"] == "RuntimeError: card declined"
    [paid] = charge["attempts"][1]["emitted"]
    assert (paid["id"], paid["trace_id"], paid["parent"]) == ("ev-paid", TRACE, "ev-root")
    assert paid["deliveries"][0]["attempts"][0]["invocation"] == B1
    text = run(seeded, "trace", "ev-root").stdout.splitlines()
    assert text[0] == f"trace {TRACE}"
    assert text[1] == "event ev-root order.created"
    assert text[2].split() == ["charge", "ok", "2", "attempts", "14.0", "ms"]
    assert text[3].split()[:3] == ["#1", "error", "4.0"]
    assert "event ev-paid order.paid" in text[5]
    assert cli(seeded, "trace", "ev-nope") == (
        1, "", "fnrun: no event 'ev-nope' (not stored, or past retention)\n")


@pytest.mark.parametrize("seeded", ["sqlite", "redis"], indirect=True)
def test_logs_of_a_run_by_id_or_prefix_and_of_a_function(
    seeded: Project, cli: Callable[..., tuple[int, str, str]]
) -> None:
    one = run(seeded, "logs", A1)
    assert one.returncode == 0, one.stderr
    lines = one.stdout.splitlines()
    code, by_prefix, _ = cli(seeded, "logs", A1[:8])
    assert (code, by_prefix) == (0, one.stdout)
    assert lines[0].startswith(f"charge {A1}  order.created  ev-root  error  4.0 ms")
    assert lines[1].split(None, 2)[1:] == ["info", "charging order 1"]
    assert lines[2].endswith("stderr  declined \\x1b[31mred")  # no escape reaches the terminal
    listed = cli(seeded, "logs", "--function", "charge")[1]
    assert listed.index(A1) < listed.index(A2) and B1 not in listed  # oldest first
    as_json = [json.loads(x) for x in cli(seeded, "logs", "--json")[1].splitlines()]
    assert [(x["invocation"], x["text"]) for x in as_json] == [
        (A1, "charging order 1"), (A1, "declined \x1b[31mred"), (A2, "paid order 1"),
        (B1, f"shipped by {B1}")]
    assert cli(seeded, "logs", "ffffffffffff") == (
        1, "", "fnrun: no run 'ffffffffffff' (not stored, or past retention)\n")
    code, _, err = cli(seeded, "logs", A1, "--follow")
    assert code == 2 and len(err.splitlines()) == 1


@pytest.mark.parametrize("seeded", ["sqlite", "redis"], indirect=True)
def test_history_filters_and_invocation_column(
    seeded: Project, cli: Callable[..., tuple[int, str, str]]
) -> None:
    def ids(*args: str) -> list[tuple[str, str]]:
        code, out, err = cli(seeded, "history", "--json", *args)
        assert code == 0, err
        return [(r["invocation"], r["outcome"]) for r in json.loads(out)]

    assert ids("--status", "error") == [(A1, "error")]
    assert ids("--type", "order.paid") == [(B1, "ok")]
    assert ids("--type", "order.*", "--status", "ok") == [(B1, "ok"), (A2, "ok")]
    assert ids("--event", "ev-root") == [(A2, "ok"), (A1, "error")]
    assert len(ids("--since", "1h")) == 3
    assert ids("--since", "2000-01-01T00:00") == ids()
    [record] = json.loads(cli(seeded, "history", "--json", "--status", "error")[1])
    assert record["traceback"].endswith("RuntimeError: card declined")
    assert record["logs"][0]["text"] == "charging order 1" and record["emitted"] == []
    table = run(seeded, "history").stdout.splitlines()
    assert "INVOCATION" in table[0].split() and A2 in table[2]
    for bad in (["--since", "soon"], ["--type", "order..x"], ["--status", "meh"]):
        code, _, err = cli(seeded, "history", *bad)
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith("fnrun: "), err


def test_logs_follow_prints_runs_stored_after_it_started(seeded: Project) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime", "logs", "--follow", "--function", "ship",
         "--project", str(seeded.root)],
        stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        seen: list[str] = []

        def read(text: str) -> bool:
            seen.append((proc.stdout.read() or b"").decode())  # type: ignore[union-attr]
            return text in "".join(seen)

        wait_until(lambda: read(f"shipped by {B1}"), timeout=20)

        async def later() -> None:
            async with SqliteStore(f"sqlite:///{seeded.root}/.fnrun/state.db") as store:
                await store.publish([(Event(type="order.paid", id="ev-2"), ["ship"])])
                await ship(store, time.time(), invocation="b2b2b2b2b2b2")

        anyio.run(later)
        wait_until(lambda: read("shipped by b2b2b2b2b2b2"), timeout=20)
        assert "".join(seen).count("ship b2b2b2b2b2b2") == 1
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_colour_only_on_a_terminal_and_never_with_no_color(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from runtime.cli.logs import colour_wanted

    main, other = os.openpty()
    try:
        with open(other, "w", closefd=False) as terminal, open(tmp_path / "f", "w") as file:
            monkeypatch.delenv("NO_COLOR", raising=False)
            assert colour_wanted(terminal) and not colour_wanted(file)
            monkeypatch.setenv("NO_COLOR", "1")
            assert not colour_wanted(terminal)
            monkeypatch.setenv("NO_COLOR", "")  # no-color.org: set and not empty
            assert colour_wanted(terminal)
    finally:
        os.close(main)
        os.close(other)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["logs", "--limit", "0"], "fnrun: --limit must be from 1 to 1000, got 0"),
        (["logs", "abc", "--follow"], "fnrun: --follow follows new runs"),
        (["logs", ""], "fnrun: argument INVOCATION: must not be empty"),
        (["trace"], "fnrun: the following arguments are required: EVENT_ID"),
        (["run", "--log-format", "xml"], "fnrun: argument --log-format: invalid choice: 'xml'"),
        (["history", "--since", "2999-01-01"], "fnrun: --since: '2999-01-01' is in the future"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(
    project: Project, cli: Callable[..., tuple[int, str, str]], args: list[str], message: str
) -> None:
    declare(project)
    code, out, err = cli(project, *args)
    assert (code, out) == (2, "") and len(err.splitlines()) == 1 and err.startswith(message), err
