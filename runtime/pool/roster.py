"""A pool's worker processes: which are alive, which wait for work, which are being ended.

`Roster` is the one owner of a `runtime.pool.workerpool.WorkerPool`'s worker
containers. Its invariant: a worker waiting for work (`idle`, `spares`) is
`live`; a worker leaves `live` before it is ended, and is never handed out
again. Ending a worker (EOF, a kill if asked, then reaping it) runs in a
background thread (`retire`), so no invocation waits for another's exit;
`join` waits for those threads when the pool closes.
"""

from __future__ import annotations

import threading

import anyio

from runtime.pool.process import STOP_WAIT, WorkerProcess


class Roster:
    """One pool's workers; see the module docstring."""

    def __init__(self) -> None:
        self.live: set[WorkerProcess] = set()
        """Every worker started and not yet being ended: busy, idle or spare."""
        self.idle: list[WorkerProcess] = []
        """Warm workers waiting for work, the last one back first."""
        self.spares: list[WorkerProcess] = []
        """Replacements started ahead of a worker's retirement, not used yet."""
        self._ending: set[threading.Thread] = set()

    @property
    def waiting(self) -> bool:
        """Whether a worker waits for work (idle or spare)."""
        return bool(self.idle or self.spares)

    def take(self) -> WorkerProcess | None:
        """A waiting worker (the warmest first), or None."""
        if self.idle:
            return self.idle.pop()
        return self.spares.pop() if self.spares else None

    def promote_spare(self) -> None:
        """A spare takes a retired worker's place among the idle ones."""
        if self.spares:
            self.idle.append(self.spares.pop())

    def forget(self, worker: WorkerProcess) -> None:
        """`worker` is being ended by its caller: it is no longer live."""
        self.live.discard(worker)

    def retire(self, worker: WorkerProcess, *, kill: bool) -> None:
        """End `worker` in the background: EOF (it exits), SIGKILL first if `kill`."""
        self.forget(worker)
        worker.channel.close()
        if kill:
            worker.kill()
        thread = threading.Thread(target=worker.finish, args=(STOP_WAIT,), daemon=True)
        thread.start()
        self._ending = {t for t in self._ending if t.is_alive()}
        self._ending.add(thread)

    def retire_waiting(self) -> None:
        """Retire every idle and spare worker (the pool takes no more work)."""
        waiting, self.idle, self.spares = self.idle + self.spares, [], []
        for worker in waiting:
            self.retire(worker, kill=False)

    async def join(self) -> None:
        """Wait until every worker retired so far has been reaped."""
        ending, self._ending = self._ending, set()
        for thread in ending:
            await anyio.to_thread.run_sync(thread.join)
