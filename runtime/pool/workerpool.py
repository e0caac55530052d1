"""A function's pool of worker processes: spawn lazily, reuse warm, recycle, kill.

The pool runs invocations in batches (`invoke_many`): one frame carries the
batch to one worker, which runs the items in order and answers one `done`
per item as it finishes, so a crash or timeout is charged to exactly the
item that was running and the items after it are known never to have
started. Concurrency is unchanged: a worker runs one item at a time, and at
most `spec.concurrency` batches run at once. Workers, their command line
and environment live in `runtime.pool.process`; the socket protocol in
`runtime.pool.channel`; which workers are alive, idle or spare, and ending
them in the background, in `runtime.pool.roster`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from runtime.errors import WorkerError
from runtime.events import Event, LogLine, Outcome, new_event_id
from runtime.pool.channel import Channel
from runtime.pool.coalescer import Coalescer
from runtime.pool.launcher import start_worker
from runtime.pool.process import (
    STOP_WAIT,
    WorkerHandle,
    WorkerProcess,
    abandon,
    child_command,
    describe_exit,
    lifeline,
    worker_env,
)
from runtime.pool.roster import Roster
from runtime.pool.warmup import locate
from runtime.specs import FunctionSpec
from runtime.worker import protocol

__all__ = ["LOAD_TIMEOUT", "WorkerPool", "child_command", "describe_exit", "lifeline",
           "worker_env"]

LOAD_TIMEOUT = 60.0
"""How long a worker may take to import its handler, beyond the function's timeout."""
LOAD_ERROR_TTL = 10.0
"""How long a load failure is answered from memory before one new worker tries again."""
MAX_USES = 10_000
"""Invocations after which a worker is replaced (bounds leaks in handler code)."""
SPARE_LEAD = 0.1
"""Start a worker's replacement this fraction of `max_uses` before it retires."""
CHANNEL_ERRORS = (EOFError, protocol.ProtocolError, OSError)
"""What a worker's channel raises once the worker is gone or speaks garbage."""
UNSENT_RETRIES = 3
"""Workers a batch may find ended before it reaches one; past that, its first item is
charged the crash (workers that die as soon as they are ready)."""


@dataclass(frozen=True)
class LoadError:
    """Why the handler's last worker did not load."""

    error: str
    traceback: str | None
    until: float
    """time.monotonic() until which it is answered from memory (`LOAD_ERROR_TTL`)."""


@dataclass(eq=False)
class _SpareStart:
    """A replacement worker being started in the background (`WorkerPool._start_spare`)."""

    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    """Cancelled by `aclose`: an anyio scope, not Task.cancel, lets a started Popen finish,
    so no worker leaks."""
    done: anyio.Event = field(default_factory=anyio.Event)
    task: asyncio.Task[None] | None = None
    """Held here: the event loop keeps only a weak reference to a task."""


class WorkerPool:
    """Up to `spec.concurrency` warm workers running one function's invocations."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        log: logging.Logger,
        max_uses: int = MAX_USES,
        env_base: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.log = log
        self.max_uses = max_uses
        self._spare_at = max(1, max_uses - max(1, int(max_uses * SPARE_LEAD)))
        self._env = worker_env(spec, os.environ if env_base is None else env_base, log)
        self._slots = anyio.Semaphore(spec.concurrency, fast_acquire=True)
        self._workers = Roster()
        self._starting: set[_SpareStart] = set()
        """Replacements being started in the background (`_start_spare`)."""
        self._running = 0
        self._quiet: anyio.Event | None = None
        self._closing = False
        self._load_error: LoadError | None = None
        self._singles = Coalescer(self._slots, self._in_slot, self._no_worker, spec.concurrency)

    @property
    def live_workers(self) -> int:
        """Worker processes alive now (busy, idle or spare)."""
        return len(self._workers.live)

    @property
    def running(self) -> int:
        """Batches (or single invocations) in progress now."""
        return self._running

    @property
    def load_error(self) -> str | None:
        """The handler's last load failure while it is still being reused, else None."""
        failure = self._load_error
        if failure is None or time.monotonic() > failure.until:
            return None
        return failure.error

    @property
    def load_failure(self) -> LoadError | None:
        """The handler's last load failure, however old; else None."""
        return self._load_error

    async def invoke(self, event: Event, attempt: int) -> Outcome:
        """Run one attempt in a worker; handler problems come back as the Outcome.

        Concurrent calls share batches (`runtime.pool.coalescer`).

        Raises:
            WorkerError: the pool was closed or retired before this call.
        """
        if self._closing:
            raise WorkerError(f"the worker pool of {self.spec.name} is closed")
        return await self._singles.invoke(event, attempt)

    def _no_worker(self) -> Outcome:
        failure = self._load_error
        if failure is None:
            return Outcome("error", time.time(), 0.0, error="no worker")
        return Outcome("error", time.time(), 0.0, error=failure.error, traceback=failure.traceback)

    async def invoke_many(self, items: Sequence[tuple[Event, int]]) -> list[Outcome]:
        """Run (event, attempt) items in order in one worker; an Outcome per item that ran.

        Stops after the first crash or timeout, or when no worker can load the
        handler (then `load_error` says why and nothing ran): the result may be
        shorter than `items`, and the items past its end never started.

        Raises:
            WorkerError: the pool was closed or retired before this call.
        """
        if self._closing:
            raise WorkerError(f"the worker pool of {self.spec.name} is closed")
        if not items:
            return []
        async with self._slots:
            return await self._in_slot(items)

    async def _in_slot(self, items: Sequence[tuple[Event, int]]) -> list[Outcome]:
        self._running += 1
        try:
            for retries_left in range(UNSENT_RETRIES, -1, -1):
                worker = await self._acquire()
                if worker is None:
                    return []
                outcomes = await self._run(worker, items, charge_unsent=not retries_left)
                if outcomes is not None:
                    return outcomes
            raise AssertionError("the last try charges the batch")
        finally:
            self._running -= 1
            if self._running == 0 and self._quiet is not None:
                self._quiet.set()

    async def _run(
        self, worker: WorkerProcess, items: Sequence[tuple[Event, int]], *, charge_unsent: bool,
    ) -> list[Outcome] | None:
        """The batch's outcomes; None if the worker had ended before the batch reached it.

        A worker that died idle (killed, or its own thread crashed it) was
        not running anything: unless `charge_unsent`, no item is charged.
        """
        loop, timeout = asyncio.get_running_loop(), self.spec.timeout
        # One getrandom call for the batch, not one per item: 12 hex digits each.
        ids = os.urandom(6 * len(items)).hex()
        invocations = [ids[i : i + 12] for i in range(0, len(ids), 12)]
        outcomes: list[Outcome] = []
        fatal = False
        started, t0 = time.time(), time.monotonic()
        try:
            try:
                worker.channel.send(self._batch_message(items, invocations))
            except EOFError:
                if charge_unsent:
                    raise
                await self._discard(worker, kill=False)
                return None
            for _ in range(len(items)):
                # Each item gets the full timeout from the moment the one before it ended.
                reply = worker.channel.poll()
                if reply is None:
                    reply = await worker.channel.receive(loop.time() + timeout)
                now, t1 = time.time(), time.monotonic()
                invocation = invocations[len(outcomes)]
                if reply is None or reply.get("kind") != "done":
                    await self._discard(worker, kill=True)  # its output drain has ended too
                    broken = self._broken(reply, started, t1 - t0, invocation)
                    outcomes.append(self._with_output(broken, worker))
                    return outcomes
                worker.uses += 1
                outcomes.append(self._outcome(reply, started, t1 - t0, invocation))
                if reply.get("fatal"):
                    fatal = True
                    break  # the worker runs nothing more of the batch
                started, t0 = now, t1
        except CHANNEL_ERRORS as exc:
            self.log.debug("worker %s of %s: %r", worker.pid, self.spec.name, exc)
            code = await self._discard(worker, kill=False)
            crashed = Outcome("crash", started, time.monotonic() - t0, error=describe_exit(code),
                              invocation=invocations[len(outcomes)])
            outcomes.append(self._with_output(crashed, worker))
            return outcomes
        except BaseException:
            # Cancelled mid-invocation: the worker's state is unknown, so it goes.
            self._workers.retire(worker, kill=True)
            raise
        self._release(worker, fatal=fatal)
        return outcomes

    def _batch_message(
        self, items: Sequence[tuple[Event, int]], invocations: Sequence[str]
    ) -> dict[str, Any]:
        return {
            "kind": "invoke", "function": self.spec.name, "timeout": self.spec.timeout,
            "lines": self.spec.log_lines,
            "items": [
                {"event": event.to_dict(), "attempt": attempt, "invocation": invocation}
                for (event, attempt), invocation in zip(items, invocations, strict=True)
            ],
        }

    def _broken(
        self, reply: dict[str, Any] | None, started: float, duration: float, invocation: str,
    ) -> Outcome:
        """The outcome of an item whose worker timed out (no reply), crashed on a fault
        signal (its guard's `crashed` report), or spoke out of turn."""
        if reply is None:
            return Outcome("timeout", started, duration,
                           error=f"timed out after {self.spec.timeout:g}s", invocation=invocation)
        if reply.get("kind") == "crashed":
            return Outcome("crash", started, duration, error=describe_exit(reply.get("code")),
                           traceback=str(reply.get("fault") or "") or None,
                           invocation=invocation)
        return Outcome("crash", started, duration,
                       error=f"worker sent {reply.get('kind')!r}, not 'done'",
                       invocation=invocation)

    def _with_output(self, outcome: Outcome, worker: WorkerProcess) -> Outcome:
        """A timed-out or crashed run's record keeps the lines its worker printed before it
        ended (the reply that carries a finished run's own lines never came)."""
        lines = worker.output_of(outcome.invocation)[: self.spec.log_lines]
        return replace(outcome, logs=lines) if lines else outcome

    def _outcome(
        self, reply: dict[str, Any], started: float, duration: float, invocation: str,
    ) -> Outcome:
        logs = self._logs(reply["logs"]) if "logs" in reply else ()
        if not reply.get("ok"):
            return Outcome("error", started, duration, error=reply.get("error"),
                           traceback=reply.get("traceback"), invocation=invocation, logs=logs)
        return Outcome("ok", started, duration, result=reply.get("result"),
                       emits=self._emits(reply) if reply.get("emits") else (),
                       invocation=invocation, logs=logs)

    def _logs(self, raw: Any) -> tuple[LogLine, ...]:
        """A reply's log lines, bounded here too: the handler runs in the worker."""
        longest = protocol.MAX_LOG_LINE + 3  # and the worker's "..."
        try:
            lines = tuple(LogLine(float(at), str(stream), str(level), str(text)[:longest])
                          for at, stream, level, text in raw[: self.spec.log_lines + 1])
        except (TypeError, ValueError):
            return (LogLine(time.time(), "log", "warning", "the worker sent malformed log lines"),)
        return lines

    def _emits(self, reply: dict[str, Any]) -> tuple[Event, ...]:
        source = f"fnrun/{self.spec.name}"
        return tuple(
            Event(
                type=raw["type"], data=raw.get("data"), id=raw.get("id") or new_event_id(),
                source=source, subject=raw.get("subject"),
                extensions={"partitionkey": raw["key"]} if raw.get("key") is not None else {},
            )
            for raw in reply.get("emits") or ()
        )

    # -- workers ---------------------------------------------------------------

    async def _acquire(self) -> WorkerProcess | None:
        """A warm worker, a ready spare, the spare being started, or a new one."""
        while True:
            worker = self._workers.take()
            if worker is not None:
                if worker.channel.usable:
                    return worker
                # It died while idle (or spoke unasked): replaced, and no item is charged.
                self._workers.retire(worker, kill=False)
                continue
            if not self._starting:
                return await self._spawn()
            # A replacement is on its way: waiting for it beats starting another.
            await self._spares_started()

    async def warm(self) -> str | None:
        """Start one worker now, so the first invocation finds it ready.

        Returns the handler's load error, or None when it loaded. Hot reload
        warms a new version this way before it replaces the old one.
        """
        if self._closing:
            raise WorkerError(f"the worker pool of {self.spec.name} is closed")
        if self._workers.waiting:
            return None
        worker = await self._spawn()
        if worker is None:
            return self.load_error or "the handler did not load"
        self._workers.idle.append(worker)
        return None

    def _start_spare(self) -> None:
        """Start a replacement in the background, so a recycle never stalls an invocation."""
        start = _SpareStart()
        self._starting.add(start)
        start.task = asyncio.get_running_loop().create_task(self._spawn_spare(start))

    async def _spawn_spare(self, start: _SpareStart) -> None:
        try:
            with start.scope:
                try:
                    worker = await self._spawn()
                except Exception:
                    self.log.exception("function %s: could not start a spare worker",
                                       self.spec.name)
                    return
            if start.scope.cancelled_caught or worker is None:
                return
            if self._closing:
                self._workers.retire(worker, kill=False)
            else:
                self._workers.spares.append(worker)
        finally:
            self._starting.discard(start)
            start.done.set()

    async def _spares_started(self) -> None:
        """Wait until every replacement being started is ready (or failed)."""
        for start in list(self._starting):
            await start.done.wait()

    async def _spawn(self) -> WorkerProcess | None:
        """Start a worker and wait for `ready`; None (and `_load_error` set) if it failed."""
        if self.load_error is not None:
            return None
        ours, theirs = socket.socketpair()
        try:
            handle = await anyio.to_thread.run_sync(self._popen, theirs.fileno())
        except OSError as exc:
            ours.close()
            self._fail_load(f"cannot start a worker: {exc}", None)
            return None
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            channel = await Channel.open(ours)
        except BaseException:
            ours.close()
            abandon(handle)
            raise
        worker = WorkerProcess(handle, channel, self.spec.name, self.log)
        self._workers.live.add(worker)
        deadline = asyncio.get_running_loop().time() + LOAD_TIMEOUT + self.spec.timeout
        try:
            first = await channel.receive(deadline)
        except CHANNEL_ERRORS:
            first = {"kind": "exit"}
        if first is not None and first["kind"] == "ready":
            return worker
        code = await self._discard(worker, kill=first is None)
        if first is None:
            self._fail_load(f"handler did not load within {LOAD_TIMEOUT:g}s", None)
        elif first["kind"] == "load_error":
            self._fail_load(str(first.get("error")), first.get("traceback"))
        elif first["kind"] == "crashed":
            self._fail_load(f"{describe_exit(first.get('code'))} while loading the handler",
                            str(first.get("fault") or "") or None)
        else:
            self._fail_load(f"{describe_exit(code)} while loading the handler", None)
        return None

    def _popen(self, proto_fd: int) -> WorkerHandle:
        """Blocking: a worker forked by the fork server, or spawned (`runtime.pool.launcher`)."""
        return start_worker(self.spec, self._env, proto_fd)

    def _fail_load(self, error: str, traceback: str | None) -> None:
        # One line, at the failing line of the handler's code where the traceback shows it.
        self.log.error("function %s: cannot load %s: %s", self.spec.name, self.spec.handler,
                       locate(self.spec, error, traceback))
        self._load_error = LoadError(error, traceback, time.monotonic() + LOAD_ERROR_TTL)

    def _release(self, worker: WorkerProcess, *, fatal: bool) -> None:
        """Back to the idle list, or retired if used up, broken or the pool is closing."""
        if fatal or self._closing or worker.uses >= self.max_uses:
            self._workers.retire(worker, kill=False)
            if not self._closing:
                self._workers.promote_spare()
            return
        if worker.uses >= self._spare_at and not worker.replaced:
            worker.replaced = True
            self._start_spare()
        self._workers.idle.append(worker)

    async def _discard(self, worker: WorkerProcess, *, kill: bool) -> int | None:
        """Forget the worker and end it; its exit code."""
        self._workers.forget(worker)
        worker.channel.close()
        if kill:
            worker.kill()
        return await anyio.to_thread.run_sync(worker.finish, STOP_WAIT if kill else 1.0)

    # -- stopping --------------------------------------------------------------

    def retire(self) -> None:
        """Take no new invocations; idle workers exit now, busy ones after their current one."""
        self._closing = True
        self._workers.retire_waiting()

    async def aclose(self, grace: float = 30.0) -> None:
        """Stop: running invocations get `grace` seconds, then every worker is killed and reaped."""
        self.retire()
        with anyio.move_on_after(grace):
            await self._wait_quiet()
        for start in self._starting:
            start.scope.cancel()
        for worker in list(self._workers.live):
            worker.kill()  # the running invocations see EOF and report a crash
        with anyio.move_on_after(STOP_WAIT):
            await self._wait_quiet()
        await self._spares_started()
        for worker in list(self._workers.live):
            self._workers.retire(worker, kill=True)
        await self._workers.join()

    async def _wait_quiet(self) -> None:
        while self._running:
            self._quiet = anyio.Event()
            await self._quiet.wait()
