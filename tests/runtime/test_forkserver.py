"""Workers forked by the fork server's template, against real processes."""

from __future__ import annotations

import logging
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime.errors import Where
from runtime.events import Event
from runtime.pool.launcher import FORK_SERVER, FORK_WAIT
from runtime.pool.process import ENV_ALLOWLIST
from runtime.pool.workerpool import WorkerPool
from runtime.specs import FunctionSpec
from tests.runtime.pools import worker_pools
from tests.runtime.procs import alive, wait_for

LOG = logging.getLogger("tests.forkserver")

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

HANDLER = textwrap.dedent("""\
    import asyncio, os, signal, subprocess, sys, time

    def parent_of(pid):
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[1])

    def state():
        # The worker is the handler's guard (runtime.worker.guard): "ppid" is the guard's parent.
        return {"pid": os.getpid(), "guard": os.getppid(), "ppid": parent_of(os.getppid()),
                "sid": os.getsid(0), "env": dict(os.environ), "argv": sys.argv,
                "cwd": os.getcwd()}

    def handle(event):
        do = event.data["do"]
        if do == "state":
            return state()
        if do == "exit":
            os._exit(3)
        if do == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if do == "allocate":
            return len(bytearray(event.data["mb"] * 1024 * 1024))
        if do == "grandchild":
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            with open(event.data["pidfile"] + ".tmp", "w") as f:
                f.write(f"{os.getpid()} {child.pid}")
            os.replace(event.data["pidfile"] + ".tmp", event.data["pidfile"])
        time.sleep(60)

    async def async_handle(event, ctx):
        await asyncio.sleep(0.01)
        return {**state(), "function": ctx.function}
""")
CLEAN = "import os, sys\n\ndef handle(event):\n    return [sorted(sys.modules), sys.argv]\n"


def ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


@pytest.fixture
def handler(tmp_path: Path) -> Path:
    path = tmp_path / "fn.py"
    path.write_text(HANDLER)
    return path


@pytest.fixture
async def pools(handler: Path) -> AsyncIterator[Callable[..., WorkerPool]]:
    """Pools of `handler` (closed after the test), with the template running."""
    async with worker_pools(LOG) as make:

        def build(attr: str = "handle", file: Path = handler, **kw: Any) -> WorkerPool:
            env_base = kw.pop("env_base", None)
            return make(FunctionSpec(name="fn", where=Where(Path("f.yaml"), 1, 1),
                                     handler_file=file, handler_attr=attr, **kw),
                        env_base=env_base)

        yield build


async def call(pool: WorkerPool, **data: Any) -> Any:
    outcome = await pool.invoke(Event(type="t", data=data), 1)
    assert outcome.ok, outcome.error
    assert isinstance(outcome.result, dict)
    return outcome.result["json"]


async def test_forked_workers_run_sync_and_async_handlers_with_only_their_env(
    pools: Callable[..., WorkerPool], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("FNRUN_TEST_LEAK", "leaked")
    monkeypatch.setenv("FNRUN_TEST_SECRET", "s3cret")
    monkeypatch.chdir(tmp_path)
    kw = {"env": {"LOG_LEVEL": "debug"}, "secrets": ("FNRUN_TEST_SECRET",)}
    for state in [await call(pools(**kw), do="state"), await call(pools("async_handle", **kw))]:
        assert state["ppid"] == FORK_SERVER.pid  # forked, not spawned
        assert state["sid"] == state["guard"]  # its worker leads its own session
        expected = {
            key: value for key, value in os.environ.items()
            if key in ENV_ALLOWLIST
        } | {"LOG_LEVEL": "debug", "FNRUN_TEST_SECRET": "s3cret"}
        assert state["env"] == expected
        assert state["cwd"] == str(tmp_path)
        assert state["argv"][0] == "-c" and "function=fn" in state["argv"]
    assert state["function"] == "fn"


async def test_a_forked_handler_sees_what_a_spawned_one_sees(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    clean = tmp_path / "clean.py"
    clean.write_text(CLEAN)
    forked_modules, forked_argv = await call(pools(file=clean))
    # A PYTHON* variable of its own: started as a fresh interpreter instead.
    spawned_modules, spawned_argv = await call(pools(file=clean, env={"PYTHONFNRUN": "1"}))
    assert set(forked_modules) - set(spawned_modules) <= {"runtime.worker.forkserver", "select",
                                                          "_socket"}
    supervisor_side = {"anyio", "yaml", "runtime.pool.workerpool", "runtime.pool.launcher"}
    assert not supervisor_side & set(forked_modules)
    fds = ("proto=", "lifeline=")  # fd numbers differ, the rest is the same
    assert [a for a in forked_argv if not a.startswith(fds)] == [
        a for a in spawned_argv if not a.startswith(fds)]
    assert [a.partition("=")[0] for a in forked_argv if a.startswith(fds)] == ["proto", "lifeline"]


async def test_a_python_variable_in_the_env_means_a_fresh_interpreter(
    pools: Callable[..., WorkerPool],
) -> None:
    state = await call(pools(env={"PYTHONHASHSEED": "7"}), do="state")
    assert state["ppid"] == os.getpid() and state["env"]["PYTHONHASHSEED"] == "7"


async def test_memory_limit_applies_to_forked_workers(
    pools: Callable[..., WorkerPool],
) -> None:
    pool = pools(memory_mb=256)
    assert await call(pool, do="allocate", mb=16) == 16 * 1024 * 1024
    big = await pool.invoke(Event(type="t", data={"do": "allocate", "mb": 2048}), 1)
    assert big.error is not None and "MemoryError" in big.error
    assert (await pool.invoke(Event(type="t", data={"do": "state"}), 1)).ok


async def test_timeout_kills_a_forked_workers_group(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    pool = pools(timeout=1.0)
    assert (await call(pool, do="state"))["ppid"] == FORK_SERVER.pid
    pidfile = tmp_path / "pids"
    outcome = await pool.invoke(Event(type="t", data={"do": "grandchild",
                                                      "pidfile": str(pidfile)}), 1)
    assert outcome.status == "timeout"
    worker, grandchild = map(int, pidfile.read_text().split())
    await wait_for(lambda: not alive(worker) and not alive(grandchild))
    assert pool.live_workers == 0


@pytest.mark.parametrize(("do", "error"), [
    ("exit", "worker exited with code 3"), ("sigkill", "worker died from signal SIGKILL"),
])
async def test_exit_codes_of_forked_workers_are_reported(
    pools: Callable[..., WorkerPool], do: str, error: str,
) -> None:
    pool = pools()
    assert (await call(pool, do="state"))["ppid"] == FORK_SERVER.pid
    outcome = await pool.invoke(Event(type="t", data={"do": do}), 1)
    assert outcome.status == "crash" and outcome.error == error


async def test_a_killed_template_is_restarted_and_no_spawn_fails(
    pools: Callable[..., WorkerPool],
) -> None:
    before = await call(pools(), do="state")
    template = FORK_SERVER.pid
    assert template is not None and before["ppid"] == template
    os.kill(template, signal.SIGKILL)
    await wait_for(lambda: FORK_SERVER.pid is None)
    fallback = await call(pools(), do="state")
    assert fallback["ppid"] == os.getpid()  # spawned directly while the template restarts
    restarted = await call(pools(), do="state")
    assert restarted["ppid"] == FORK_SERVER.pid not in (None, template)


async def test_a_hung_template_delays_a_spawn_by_at_most_fork_wait(
    pools: Callable[..., WorkerPool],
) -> None:
    pool = pools(concurrency=2)
    earlier = await call(pool, do="state")
    template = FORK_SERVER.pid
    assert template is not None and earlier["ppid"] == template
    os.kill(template, signal.SIGSTOP)
    try:
        started = time.monotonic()
        async with anyio.create_task_group() as tg:  # the idle worker is busy: a spawn
            tg.start_soon(pool.invoke, Event(type="t", data={"do": "sleep"}), 1)
            await wait_for(lambda: pool.running == 1)
            fallback = await call(pool, do="state")
            tg.cancel_scope.cancel()
        assert fallback["ppid"] == os.getpid()  # spawned directly
        assert FORK_WAIT <= time.monotonic() - started < FORK_WAIT + 5
        await wait_for(lambda: not alive(template))  # killed, to be restarted
    finally:
        try:
            os.kill(template, signal.SIGCONT)
        except ProcessLookupError:
            pass
    await pool.aclose(grace=0)  # the earlier worker ends although its template never reported
    assert not alive(earlier["pid"])


async def test_simultaneous_spawns_are_all_forked(pools: Callable[..., WorkerPool]) -> None:
    pool = pools(concurrency=6)
    states: list[Any] = []

    async def one() -> None:
        outcome = await pool.invoke(Event(type="t", data={"do": "state"}), 1)
        states.append(outcome.result)

    await call(pools(), do="state")  # the template is up
    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(one)
    pids = {state["json"]["pid"] for state in states}
    assert all(state["json"]["ppid"] == FORK_SERVER.pid for state in states)
    assert 1 <= len(pids) <= 6 and pool.live_workers == len(pids)


async def test_workers_outliving_their_template_still_end_cleanly(
    pools: Callable[..., WorkerPool],
) -> None:
    pool = pools()
    state = await call(pool, do="state")
    template = FORK_SERVER.pid
    assert template is not None and state["ppid"] == template
    os.kill(template, signal.SIGKILL)
    await wait_for(lambda: FORK_SERVER.pid is None)
    assert (await call(pool, do="state"))["pid"] == state["pid"]  # the worker still serves
    outcome = await pool.invoke(Event(type="t", data={"do": "exit"}), 1)
    assert outcome.status == "crash" and "status unknown" in (outcome.error or "")
    await pool.aclose(grace=1)
    assert not alive(state["pid"])


ORPHAN_PARENT = """
import anyio, logging, sys
from pathlib import Path
from runtime.errors import Where
from runtime.events import Event
from runtime.pool.launcher import FORK_SERVER, FORK_WAIT
from runtime.pool.workerpool import WorkerPool
from runtime.specs import FunctionSpec

async def main():
    spec = FunctionSpec(name="fn", where=Where(Path("f.yaml"), 1, 1),
                        handler_file=Path(sys.argv[1]), handler_attr="handle", concurrency=2)
    FORK_SERVER.start()
    pool = WorkerPool(spec, log=logging.getLogger("orphan"))
    idle = (await pool.invoke(Event(type="t", data={"do": "state"}), 1)).result["json"]
    Path(sys.argv[3]).write_text(f"{idle['pid']} {idle['ppid']}")
    await pool.invoke(Event(type="t", data={"do": "grandchild", "pidfile": sys.argv[2]}), 1)

anyio.run(main)
"""


@pytest.mark.timeout(30)
async def test_forked_workers_and_the_template_exit_when_the_supervisor_is_killed(
    handler: Path, tmp_path: Path,
) -> None:
    busy, idle = tmp_path / "busy", tmp_path / "idle"
    command = [sys.executable, "-c", ORPHAN_PARENT, str(handler), str(busy), str(idle)]
    async with await anyio.open_process(command) as parent:
        try:
            idle_pid, template = map(int, (await wait_for(lambda: idle.exists())) and
                                     idle.read_text().split())
            busy_pid, grandchild = map(int, await wait_for(
                lambda: busy.exists() and busy.read_text().split()))
            guards = (ppid(busy_pid), ppid(idle_pid))
            assert ppid(guards[0]) == template == ppid(guards[1]) != parent.pid
            parent.kill()
            await parent.wait()
            pids = (idle_pid, busy_pid, *guards, grandchild, template)
            await wait_for(lambda: not any(map(alive, pids)), within=5)
        finally:
            if parent.returncode is None:
                parent.kill()
                await parent.wait()
