"""Worker faults charged to the right event, and dead letters that say what happened.

- A worker killed while idle ran nothing: the next event runs in a new worker,
  with `retry: false`, exactly once and successfully (it was dead-lettered with
  "worker died from signal SIGKILL" without its handler ever running).
- A handler that segfaults gives a dead letter naming SIGSEGV and the
  handler's file and line (`faulthandler`, read by the worker's guard).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import Project, wait_until

pytestmark = pytest.mark.timeout(120)


def settled(project: Project) -> bool:
    functions = httpx.get(project.url("/_/functions"), timeout=5).json()
    return all(f["pending"] == 0 and f["running"] == 0 for f in functions)


def dead_letters(project: Project) -> list[dict[str, object]]:
    letters = httpx.get(project.url("/_/dead-letters"), timeout=5).json()
    assert isinstance(letters, list)
    return letters


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


@pytest.fixture
def once(project_on_each_store: Project) -> Project:
    project_on_each_store.add("once", """
        functions:
          once:
            handler: once.py:handle
            triggers: [{event: "job.*"}]
            retry: false
            concurrency: 3
    """, """
        def handle(event, ctx):
            record(event, ctx)
            return "ran"
    """)
    return project_on_each_store


@pytest.mark.parametrize("victim", ["runner", "guard"])
def test_a_worker_killed_while_idle_charges_no_event(once: Project, victim: str) -> None:
    """kill -9 of the handler's process, or of its worker (the guard `ps` shows above it)."""
    once.start()
    warm = once.publish([{"type": "job.warm"} for _ in range(3)])
    wait_until(lambda: len(once.calls()) == 3 and settled(once))
    runners = {call["pid"] for call in once.calls()}
    for pid in runners:  # every idle worker of the function, so no warm one is left
        os.kill(parent_of(pid) if victim == "guard" else pid, signal.SIGKILL)
    ids = once.publish([{"type": "job.run"} for _ in range(6)])
    wait_until(lambda: len(once.calls()) == 9 and settled(once))
    assert once.handled("once") == {i: 1 for i in [*warm, *ids]}
    assert not {c["pid"] for c in once.calls() if c["id"] in ids} & runners
    assert dead_letters(once) == []


def test_a_segfault_dead_letter_names_the_signal_and_where(project: Project) -> None:
    project.add("crashy", """
        functions:
          crashy:
            handler: crashy.py:handle
            triggers: [{event: "crash.*"}]
            retry: false
    """, """
        import ctypes, sys

        def handle(event, ctx):
            record(event, ctx)
            print("Fatal Python error: forged by the handler's own output", file=sys.stderr)
            ctypes.string_at(0)  # a NULL dereference: SIGSEGV
    """)
    project.start()
    [event] = project.publish([{"type": "crash.now"}])
    [letter] = wait_until(lambda: dead_letters(project), timeout=30)
    assert letter["event"]["id"] == event and letter["attempts"] == 1
    assert letter["error"] == "worker died from signal SIGSEGV"
    trace = str(letter["traceback"])
    assert "Segmentation fault" in trace and "forged" not in trace
    source = project.functions / "crashy.py"
    crash = "    ctypes.string_at(0)  # a NULL dereference: SIGSEGV"
    line = source.read_text().splitlines().index(crash) + 1
    assert f'File "{source}", line {line} in handle' in trace
