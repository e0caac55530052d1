"""SPEC 6, end to end: every process a handler starts dies with its worker.

A handler starts a double-forked daemon (`fork; setsid; fork; exec sleep`) and
a process in a new session, both keeping the worker's stdout. Whatever ends
the worker (its timeout, its own death, a kill -9 of it, the supervisor's
stop), both must be gone within `timeout` + 3 s, and the supervisor must be
left with no more threads or fds than before: each daemon that held the
worker's stdout used to keep a drain thread and its fds.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import Project, wait_until
from tests.runtime.procs import alive

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 1.0
"""The function's timeout, in seconds."""
GRACE = 3.0
"""SPEC 6: what the handler started is gone within `timeout` + this."""
RUNS = 4
"""Events at once (the function's concurrency)."""

HANDLER = """
    import os, subprocess, sys, time

    def daemons(folder):
        '''A double-forked daemon and a process in a new session; their pids, once written.'''
        first = os.fork()
        if first == 0:
            os.setsid()
            if os.fork() == 0:
                with open(os.path.join(folder, "daemon"), "w") as f:
                    f.write(str(os.getpid()))
                os.execvp("sleep", ["sleep", "1000"])  # keeps the worker's stdout and stderr
            os._exit(0)
        os.waitpid(first, 0)
        session = subprocess.Popen(["sleep", "1000"], start_new_session=True)
        with open(os.path.join(folder, "session"), "w") as f:
            f.write(str(session.pid))
        while not os.path.exists(os.path.join(folder, "daemon")):
            time.sleep(0.01)

    def handle(event, ctx):
        folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", event.id)
        os.makedirs(folder)
        if event.data.get("daemons"):
            daemons(folder)
        record(event, ctx)
        how = event.data["then"]
        if how == "hang":
            time.sleep(60)
        elif how == "exit":
            os._exit(3)
        elif how == "wait":  # until the test kills this process
            time.sleep(60)
        return "done"
"""


def started(project: Project) -> None:
    project.add("spawner", f"""
        functions:
          spawner:
            handler: spawner.py:handle
            triggers: [{{event: "spawn.*"}}]
            timeout: {TIMEOUT:g}s
            retry: false
            concurrency: {RUNS}
    """, HANDLER)


def counts(pid: int) -> tuple[int, int]:
    """The supervisor's working threads and its open fds.

    Threads parked on a futex are left out: idle pool threads, which anyio
    keeps and prunes only on its next call, so their number drifts. An
    output drain waits in poll or read on its pipe, never on a futex.
    """
    working = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            wchan = Path(f"/proc/{pid}/task/{task}/wchan").read_text()
        except FileNotFoundError:
            continue  # ended meanwhile
        working += not wchan.startswith("futex")
    return working, len(os.listdir(f"/proc/{pid}/fd"))


def settled(project: Project) -> bool:
    functions = httpx.get(project.url("/_/functions"), timeout=5).json()
    return all(f["pending"] == 0 and f["running"] == 0 for f in functions)


def spawned(project: Project, ids: list[str]) -> dict[str, list[int]]:
    """Each event's daemon and new-session pids, once its handler has written both."""
    def read() -> dict[str, list[int]] | None:
        pids = {}
        for event in ids:
            try:
                pids[event] = [int((project.root / event / name).read_text())
                               for name in ("daemon", "session")]
            except (FileNotFoundError, ValueError):
                return None
        return pids
    return wait_until(read, timeout=30)


def baseline(project: Project, supervisor: int) -> tuple[int, int]:
    """Counts after the same path ran without daemons: as many workers timed out and went.

    The threads anyio keeps for blocking calls (a worker's reaping is one)
    are then already there: anyio prunes idle ones only on its next call.
    """
    project.publish([{"type": "spawn.warm", "data": {"then": "hang"}} for _ in range(RUNS)])
    wait_until(lambda: len(project.calls()) == RUNS and settled(project))
    return counts(supervisor)


def kill_runner(project: Project, ids: list[str], how: str) -> None:
    runners = {c["id"]: c["pid"] for c in wait_until(
        lambda: len(project.calls()) >= RUNS + len(ids) and project.calls())}
    for event in ids:
        pid = runners[event]
        if how == "guard":  # what `ps` shows as the worker: the runner's parent
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("end", ["timeout", "exit", "kill_runner", "kill_guard"])
def test_daemons_die_with_their_worker_and_leave_nothing_in_the_supervisor(
    project: Project, end: str,
) -> None:
    started(project)
    supervisor = project.start().pid
    threads, fds = baseline(project, supervisor)
    then = {"timeout": "hang", "exit": "exit"}.get(end, "wait")
    ids = project.publish([{"type": "spawn.run", "data": {"daemons": True, "then": then}}
                           for _ in range(RUNS)])
    pids = spawned(project, ids)
    if end.startswith("kill_"):
        kill_runner(project, ids, end.removeprefix("kill_"))
    ended = time.monotonic()
    everything = [pid for pair in pids.values() for pid in pair]
    wait_until(lambda: not any(map(alive, everything)), timeout=TIMEOUT + GRACE)
    assert time.monotonic() - ended <= TIMEOUT + GRACE
    wait_until(lambda: settled(project))
    # The drains of the ended workers are gone though the daemons held their pipes.
    wait_until(lambda: counts(supervisor)[0] <= threads and counts(supervisor)[1] <= fds,
               timeout=10)
    assert len(project.calls()) == RUNS + len(ids)  # retry: false, each ran once


def test_daemons_die_when_the_supervisor_stops(project: Project) -> None:
    started(project)
    proc = project.start()
    ids = project.publish([{"type": "spawn.run", "data": {"daemons": True, "then": "return"}}
                           for _ in range(3)])
    pids = spawned(project, ids)
    wait_until(lambda: settled(project))
    everything = [pid for pair in pids.values() for pid in pair]
    assert all(map(alive, everything))  # the workers are idle, and their daemons live on
    assert project.stop(proc) == 0
    wait_until(lambda: not any(map(alive, everything)), timeout=GRACE)


def test_daemons_die_when_the_supervisor_is_killed(project: Project) -> None:
    started(project)
    proc = project.start()
    ids = project.publish([{"type": "spawn.run", "data": {"daemons": True, "then": "return"}}])
    pids = spawned(project, ids)
    everything = [pid for pair in pids.values() for pid in pair]
    assert all(map(alive, everything))
    project.kill9(proc)  # the workers' lifeline closes
    wait_until(lambda: not any(map(alive, everything)), timeout=GRACE)
