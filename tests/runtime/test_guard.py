"""A worker's guard (runtime/worker/guard.py) against real processes: recycle, reaping, drains.

The end-to-end cases (timeout, worker death, kill -9, supervisor stop) are in
tests/e2e/test_daemons.py; here are the ones only a pool can drive: a worker
recycled after `max_uses`, an orphan reaped while its worker lives, a drain
whose pipe an escaped process keeps open, a handler that segfaults on import.
"""

from __future__ import annotations

import array
import logging
import os
import socket
import textwrap
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime.errors import Where
from runtime.events import Event
from runtime.pool.workerpool import WorkerPool
from runtime.specs import FunctionSpec
from tests.runtime.pools import worker_pools
from tests.runtime.procs import alive, wait_for

LOG = logging.getLogger("tests.guard")

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

HANDLER = textwrap.dedent("""\
    import array, os, socket, subprocess, time

    def daemon(pidfile, then="sleep"):
        '''fork; setsid; fork: the grandchild writes its pid, then sleeps or exits.'''
        first = os.fork()
        if first == 0:
            os.setsid()
            if os.fork() == 0:
                with open(pidfile + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.replace(pidfile + ".tmp", pidfile)
                if then == "exit":
                    os._exit(0)
                os.execvp("sleep", ["sleep", "1000"])
            os._exit(0)
        os.waitpid(first, 0)
        while not os.path.exists(pidfile):
            time.sleep(0.01)
        return int(open(pidfile).read())

    def handle(event):
        data = event.data
        if data["do"] == "daemon":
            return {"daemon": daemon(data["pidfile"], data.get("then", "sleep")),
                    "pid": os.getpid(), "guard": os.getppid()}
        if data["do"] == "give_stdout":  # to a process outside the worker: it escapes
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(data["address"])
                sock.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       array.array("i", [1]))])
            return os.getppid()
        if data["do"] == "pid":
            return os.getpid()
""")


@pytest.fixture
def handler(tmp_path: Path) -> Path:
    path = tmp_path / "fn.py"
    path.write_text(HANDLER)
    return path


@pytest.fixture(params=["forked", "spawned"])
async def pools(
    request: pytest.FixtureRequest, handler: Path,
) -> AsyncIterator[Callable[..., WorkerPool]]:
    """Pools of workers forked by the template, or spawned (a PYTHON* variable of their own)."""
    async with worker_pools(LOG) as make:

        def build(file: Path = handler, **kw: Any) -> WorkerPool:
            env = {"PYTHONFNRUNGUARD": "1"} if request.param == "spawned" else {}
            return make(FunctionSpec(name="fn", where=Where(Path("f.yaml"), 1, 1),
                                     handler_file=file, handler_attr="handle", env=env), **kw)

        yield build


async def call(pool: WorkerPool, **data: Any) -> Any:
    outcome = await pool.invoke(Event(type="t", data=data), 1)
    assert outcome.ok, (outcome.error, outcome.traceback)
    assert isinstance(outcome.result, dict)
    return outcome.result["json"]


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


async def test_a_recycled_worker_takes_its_daemons_with_it(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    pool = pools(max_uses=2)
    first = await call(pool, do="daemon", pidfile=str(tmp_path / "a"))
    # The daemon left the worker's session and its parent died: the guard adopted it.
    assert set(children(first["guard"])) == {first["pid"], first["daemon"]}
    second = await call(pool, do="daemon", pidfile=str(tmp_path / "b"))  # use 2: it retires
    assert first["guard"] == second["guard"]
    gone = [first["daemon"], second["daemon"], first["pid"], first["guard"]]
    await wait_for(lambda: not any(map(alive, gone)), within=3)
    assert await call(pool, do="pid") != first["pid"]


async def test_an_orphan_that_exits_is_reaped_while_its_worker_lives(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    """The guard reaps what it adopts: no zombie piles up in a worker used 10,000 times."""
    pool = pools()
    for n in range(5):
        got = await call(pool, do="daemon", pidfile=str(tmp_path / str(n)), then="exit")
    await wait_for(lambda: children(got["guard"]) == [got["pid"]], within=5)
    assert state(got["pid"]) != "Z" and alive(got["guard"])


async def test_the_drain_ends_with_its_worker_though_an_escaped_process_holds_the_pipe(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    pool = pools(max_uses=1)
    address = str(tmp_path / "sock")
    held: list[int] = []
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(address)
        server.listen(1)

        def receive() -> None:
            conn, _ = server.accept()
            with conn:
                fds = array.array("i")
                _, ancillary, _, _ = conn.recvmsg(1, socket.CMSG_SPACE(fds.itemsize))
                fds.frombytes(ancillary[0][2])
                held.extend(fds)

        receiver = threading.Thread(target=receive)
        receiver.start()
        guard = await call(pool, do="give_stdout", address=address)  # its only use: it retires
        await anyio.to_thread.run_sync(receiver.join)
    try:
        [fd] = held  # this test process now holds the worker's stdout: no EOF ever
        await wait_for(lambda: not alive(guard), within=5)
        await wait_for(lambda: not [
            t for t in threading.enumerate() if t.name == f"fnrun-output-fn-{guard}"], within=5)
    finally:
        for fd in held:
            os.close(fd)


async def test_a_segfault_while_loading_is_a_load_error_that_says_where(
    pools: Callable[..., WorkerPool], tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import ctypes\n\nctypes.string_at(0)\n")
    pool = pools(file=broken)
    assert await pool.warm() == "worker died from signal SIGSEGV while loading the handler"
    outcome = await pool.invoke(Event(type="t"), 1)
    assert outcome.status == "error" and outcome.traceback is not None
    assert f'File "{broken}", line 3 in <module>' in outcome.traceback
