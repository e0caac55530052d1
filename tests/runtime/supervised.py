"""A supervisor running in the test's own event loop, on a real project and store.

`one_function` writes a project of one function; `running` starts a Supervisor
on it (HTTP on a free port) and hands over an httpx client; `write_lock`
makes another process hold a SQLite file's write lock, as a `sqlite3` shell
left in a transaction would.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from runtime.project.manifest import load_settings
from runtime.store import sqlite, sqlite_commit
from runtime.supervisor import Supervisor

LOCKER = """\
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


def one_function(root: Path, name: str, code: str, trigger: str) -> Path:
    """A project folder under `root` declaring `name` (`handle` in `name`.py, `code`)
    with one trigger (`trigger`, a YAML flow mapping such as `{event: t.go}`)."""
    functions = root / "proj" / "functions"
    functions.mkdir(parents=True)
    (functions / f"{name}.py").write_text(code)
    (functions / f"{name}.yaml").write_text(
        f"functions:\n  {name}:\n    handler: {name}.py:handle\n    triggers:\n"
        f"      - {trigger}\n"
    )
    return root / "proj"


@asynccontextmanager
async def running(
    project: Path, store: str, *, within: float = 60, **options: Any
) -> AsyncIterator[tuple[Supervisor, httpx.AsyncClient]]:
    """The supervisor of `project` on `store`, serving, and a client of its HTTP front;
    stopped (drained) when the block ends, all within `within` seconds."""
    settings = load_settings(project, store=store, port=0)
    supervisor = Supervisor(settings, grace=5, handle_signals=False, **options)
    with anyio.fail_after(within):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            assert supervisor.http_server is not None
            async with httpx.AsyncClient(base_url=supervisor.http_server.url) as client:
                yield supervisor, client
            supervisor.request_stop()


def short_lock_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fifth of a second of waiting for a SQLite lock, not production's 10 s: the
    tests see every give-up path within a second or two."""
    monkeypatch.setattr(sqlite_commit, "BUSY_TIMEOUT_MS", 200)
    monkeypatch.setattr(sqlite, "BUSY_TIMEOUT_MS", 200)


@contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """Another process holds `db`'s write lock until the block ends."""
    with subprocess.Popen([sys.executable, "-c", LOCKER, str(db)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as locker:
        assert locker.stdin is not None and locker.stdout is not None
        try:
            assert locker.stdout.readline() == "locked\n"
            yield
        finally:
            locker.stdin.close()
            assert locker.wait(10) == 0
