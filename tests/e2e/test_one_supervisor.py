"""One supervisor per SQLite store (issue 17 point 9): a second `fnrun run` refuses to start.

Before, the second one's start-up recovery made the first one's running
deliveries pending again, and it ran them a second time.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from tests.e2e.harness import Project, fnrun, free_port, wait_until

HELD = 3
"""Deliveries the first supervisor holds running while the second one starts."""


def _add_held_function(project: Project) -> None:
    """`hold` records its attempt, then runs until the file `go` exists (at most 60 s)."""
    project.add("hold", f"""
        functions:
          hold:
            handler: hold.py:handle
            triggers: [{{event: hold.me}}]
            concurrency: {HELD}
            retry: {{max_attempts: 5, backoff: 50ms}}
    """, """
        import pathlib, time

        def handle(event, ctx):
            record(event, ctx)
            go = pathlib.Path(__file__).parent.parent / "go"
            deadline = time.monotonic() + 60
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
    """)


def _counts(project: Project) -> dict[str, int]:
    [hold] = [f for f in httpx.get(project.url("/_/functions"), timeout=5).json()
              if f["name"] == "hold"]
    return {"pending": hold["pending"], "running": hold["running"]}


def _second_run(project: Project) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime", "run", "--project", str(project.root),
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=30,
    )


def test_a_second_run_on_the_same_sqlite_store_refuses_and_touches_nothing(
    project: Project,
) -> None:
    _add_held_function(project)
    first = project.start()
    ids = project.publish([{"type": "hold.me"} for _ in range(HELD)])
    wait_until(lambda: len(project.calls()) == HELD)
    assert _counts(project) == {"pending": 0, "running": HELD}

    second = _second_run(project)
    assert second.returncode == 1, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert "Traceback" not in second.stderr
    assert lines[0].startswith("fnrun: store ")
    assert f"in use by another fnrun run (pid {first.pid})" in lines[0]
    # The first one's deliveries are still its own, running, not reset to pending.
    assert _counts(project) == {"pending": 0, "running": HELD}

    # Commands that publish or read still work beside the running supervisor.
    listing = json.loads(fnrun("ls", "--json", "--project", str(project.root)).stdout)
    assert [f["running"] for f in listing if f["name"] == "hold"] == [HELD]
    emitted = fnrun("emit", "hold.me", "--project", str(project.root)).stdout.strip()
    fnrun("history", "--project", str(project.root))

    (project.root / "go").touch()
    wait_until(lambda: len(project.calls()) == HELD + 1 and _counts(project)["running"] == 0)
    # Each event ran once, on its first attempt: nothing ran twice.
    assert project.handled("hold") == {i: 1 for i in [*ids, emitted]}
    assert {c["attempt"] for c in project.calls()} == {1}


def test_a_run_starts_at_once_after_kill_9_of_the_one_before(project: Project) -> None:
    _add_held_function(project)
    first = project.start()
    ids = project.publish([{"type": "hold.me"} for _ in range(HELD)])
    wait_until(lambda: len(project.calls()) == HELD)
    project.kill9(first)  # the kernel drops its lock with it

    (project.root / "go").touch()
    project.start()  # waits for /_/health; fails if the run exits
    wait_until(lambda: len(project.calls()) == 2 * HELD and _counts(project)["running"] == 0)
    # The killed run's deliveries ran again, as attempt 2, each once more.
    assert project.handled("hold") == {i: 2 for i in ids}
    assert sorted(c["attempt"] for c in project.calls()) == [1] * HELD + [2] * HELD
    assert "recovered 3 deliveries" in project.output()
