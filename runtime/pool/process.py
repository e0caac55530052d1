"""One worker process: its command line, environment, output drain, and end.

Each worker is a fresh interpreter (`python -S`, see `child_command`), or a
fork of the fork server's clean template (`runtime.pool.launcher`), in its own
session. Its first process is a guard (`runtime.worker.guard`) that outlives
everything the handler starts, so a timeout, crash or recycle ends every
process the handler started, daemons in other sessions included (SPEC 5.3,
6). Its stdout and stderr share one pipe that a drain thread reads
continuously into the supervisor's log, so neither output volume nor garbage
can touch the protocol socket; the drain ends when the worker does, even if
something escaped still holds the pipe.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import py_compile
import select
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import BinaryIO, Protocol

import runtime
from runtime.events import LogLine
from runtime.pool.channel import Channel
from runtime.specs import FunctionSpec
from runtime.worker import protocol

ENV_ALLOWLIST = frozenset(
    {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "VIRTUAL_ENV", "PYTHONHOME"}
)
"""The supervisor's variables a worker gets, by exact name (SPEC 6): a prefix let
PYTHON_API_TOKEN or LC_SECRET through. Of the PYTHON* variables only PYTHONHOME acts
before a worker's own code runs (where the standard library is; a relocated
interpreter cannot start without it): the rest are options, and the one a worker
follows (PYTHONDONTWRITEBYTECODE) is passed on its command line, as is its `sys.path`
(see `boot_command`)."""
MAX_LINE = 8192
"""Longest handler output line logged as one record; longer ones are split."""
DRAIN_READ = 65536
DRAIN_PAUSE = 0.01
"""How long the output drain waits after a short read (see `WorkerProcess._drain_output`)."""
DRAIN_AFTER_END = 1024 * 1024
"""Most output read once the worker has ended (an escaped process may write forever)."""
STOP_WAIT = 5.0
"""How long a retiring worker may take to exit before its group is killed."""
RUNTIME_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(runtime.__file__)))
"""The folder holding the `runtime` package, first on a worker's path."""
WORKER_MODULES = (
    "runtime.worker.protocol", "runtime.results", "runtime.event_names", "runtime.worker.guard",
    "runtime.worker.confine", "runtime.worker.child", "runtime.worker.forkserver",
)
"""What a worker child and the fork server's template import (with their packages)."""

_lifeline: tuple[int, int] | None = None


def lifeline() -> int:
    """Read end of a pipe whose write end only this process holds.

    Workers block on it in a thread; when the supervisor dies (even by
    SIGKILL) the pipe closes and they kill their own process group.
    """
    global _lifeline
    if _lifeline is None:
        _lifeline = os.pipe()
    return _lifeline[0]


@functools.cache
def compile_worker() -> None:
    """Write the worker's own bytecode once, so each worker start reads it.

    Python writes no bytecode cache under PYTHONDONTWRITEBYTECODE (set on this
    project's CI machines) or into a read-only install; every worker would then
    compile runtime/worker/child.py from source: about 10 ms of a 25 ms start.
    """
    sources = dict.fromkeys(path for module in WORKER_MODULES for path in source_files(module))
    for source in sources:
        try:
            cached = importlib.util.cache_from_source(source)
        except NotImplementedError:  # an interpreter without bytecode caching
            return
        try:
            if os.path.getmtime(cached) >= os.path.getmtime(source):
                continue
        except OSError:
            pass
        try:
            py_compile.compile(source, cfile=cached, doraise=True)
        except (OSError, py_compile.PyCompileError):
            return  # read-only or odd install: workers compile as before


def source_files(module: str) -> list[str]:
    """The source files importing `module` (a dotted name under `RUNTIME_ROOT`) reads:
    each enclosing package's `__init__.py`, then the module's own."""
    parts = module.split(".")
    files = [os.path.join(RUNTIME_ROOT, *parts[:n], "__init__.py") for n in range(1, len(parts))]
    return [*files, os.path.join(RUNTIME_ROOT, *parts) + ".py"]


def child_path() -> list[str]:
    """The `sys.path` of a worker: `runtime` first, then this interpreter's resolved path."""
    return [RUNTIME_ROOT] + [p for p in sys.path if p and p != RUNTIME_ROOT]


Confine = tuple[int | None, int | None]
"""The user a confined child becomes (uid, gid; None, None: its own),
see `runtime.worker.confine`."""


def boot_command(module: str, *args: str, confine: Confine | None = None) -> list[str]:
    """`python -S -c` running `module.main(args)`, as workers and the fork server start.

    `-S` skips `site` (about 25 ms with the editable install's import hook);
    the child gets this interpreter's resolved `sys.path` instead, so
    site-packages still import, and `runtime` comes first. With `confine`,
    the child enters its confinement before it imports anything else.
    """
    compile_worker()
    enter = "" if confine is None else f"from runtime.worker.confine import enter;enter{confine!r};"
    # PYTHONDONTWRITEBYTECODE no longer reaches workers (exact names, ENV_ALLOWLIST): its
    # effect does. Without it, a handler saved twice within a second at the same size
    # could load the first save's bytecode (a .pyc is checked by mtime and size).
    no_pyc = "sys.dont_write_bytecode=True;" if sys.dont_write_bytecode else ""
    boot = (
        f"import sys;{no_pyc}sys.path[0:1]={child_path()!r};{enter}"
        f"from {module} import main;main(sys.argv[1:])"
    )
    return [sys.executable, "-S", "-c", boot, *args]


def worker_options(spec: FunctionSpec) -> list[str]:
    """The worker's options past `proto=` and `lifeline=` (see `runtime.worker.child`)."""
    return [
        f"file={spec.handler_file}", f"attr={spec.handler_attr}",
        f"function={spec.name}", f"memory_mb={spec.memory_mb or 0}",
    ]


def child_command(spec: FunctionSpec, proto_fd: int, confine: Confine | None = None) -> list[str]:
    """The command line of a worker started directly (not forked)."""
    return boot_command(
        "runtime.worker.child",
        f"proto={proto_fd}", f"lifeline={lifeline()}", *worker_options(spec),
        confine=confine,
    )


def worker_env(
    spec: FunctionSpec, base: Mapping[str, str], log: logging.Logger
) -> dict[str, str]:
    """The allowlist of `base`, then the function's `env`, then its `secrets` (SPEC 6)."""
    env = allowed_env(base)
    env.update(spec.env)
    missing = [name for name in spec.secrets if name not in base]
    env.update({name: base[name] for name in spec.secrets if name in base})
    if missing:
        log.warning("function %s: secrets not set in the environment: %s",
                    spec.name, ", ".join(missing))
    return env


def allowed_env(base: Mapping[str, str]) -> dict[str, str]:
    """The variables of `base` on the allowlist (`ENV_ALLOWLIST`)."""
    return {key: value for key, value in base.items() if key in ENV_ALLOWLIST}


def describe_exit(code: int | None) -> str:
    """A worker's exit status in words (None: not known, see `WorkerHandle.wait`)."""
    if code is None:
        return "worker exited (status unknown: its fork server died)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"worker died from signal {name}"
    return f"worker exited with code {code}"


class WorkerHandle(Protocol):
    """A started worker process, whoever its parent is (see `runtime.pool.launcher`)."""

    @property
    def pid(self) -> int: ...

    @property
    def output(self) -> BinaryIO:
        """Read end of the pipe holding the worker's stdout and stderr."""
        ...

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the worker exited; its code as `Popen.returncode`, None if unknown.

        Raises:
            TimeoutError: still running after `timeout` seconds.
        """
        ...


def kill_group(pid: int) -> None:
    """SIGKILL the process group `pid` leads (its own session, see `runtime.pool.launcher`)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def kill_worker(pid: int) -> None:
    """End a worker and all its handler started: SIGTERM to its guard (`runtime.worker.guard`).

    The guard SIGKILLs the runner's group, then every process left below it,
    and exits. Before the guard is set up, SIGTERM's default ends the
    process, which has started nothing yet.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def abandon(handle: WorkerHandle) -> None:
    """Kill a worker that never became a `WorkerProcess`, and reap it in the background."""
    kill_worker(handle.pid)

    def reap() -> None:
        handle.wait()
        handle.output.close()

    threading.Thread(target=reap, daemon=True).start()


_LEVELS = logging.getLevelNamesMapping()


def _level(raw: bytes) -> tuple[int, bytes]:
    """The level a worker marked a line with (`protocol.LEVEL_MARK`: ctx.log's, or
    WARNING for stderr) and the line without its mark; plain stdout is INFO. A mark
    inside the line follows stdout written without a newline."""
    at = raw.find(protocol.LEVEL_MARK)
    if at < 0:
        return logging.INFO, raw
    name, _, text = raw[at + len(protocol.LEVEL_MARK) :].partition(b" ")
    return _LEVELS.get(name.decode("ascii", "replace"), logging.INFO), raw[:at] + text


TAIL_LINES = 200
"""Output lines kept of the invocation running, for the record of a run that times out or
crashes (the worker sends a finished run's own lines with its reply)."""


class WorkerProcess:
    """One live worker: its process, protocol channel and output drain."""

    def __init__(
        self, handle: WorkerHandle, channel: Channel, function: str, log: logging.Logger,
    ) -> None:
        self.handle = handle
        self.channel = channel
        self.function = function
        self.log = log
        self.uses = 0
        self.replaced = False
        """Whether a replacement has been started for when this one is used up."""
        self._tail: tuple[str, list[LogLine]] = ("-", [])
        """The invocation whose output the drain is reading, and its first lines. Only the
        drain thread writes it, replacing the pair (never emptying a list another reads)."""
        try:
            # Readable once the worker (its guard) has ended: the drain's stop signal.
            ended: int | None = os.pidfd_open(handle.pid)
        except OSError:
            ended = None  # gone already: the drain reads what is there and stops
        self._drain = threading.Thread(
            target=self._drain_output, args=(ended,),
            name=f"fnrun-output-{function}-{handle.pid}", daemon=True,
        )
        self._drain.start()

    @property
    def pid(self) -> int:
        return self.handle.pid

    def _drain_output(self, ended: int | None) -> None:
        """Log every output line, tagged with the invocation that wrote it, until the worker ends.

        The worker marks where each invocation's output starts
        (`protocol.OUTPUT_MARK`); what comes before the first mark (the
        handler's import) is tagged "-". After a short read the drain waits
        `DRAIN_PAUSE` before the next, so that the marks of a fast batch
        cost one wake-up of this thread, not one each. Once the worker has
        ended (`ended`, a pidfd, is readable) what is left in the pipe is
        read and the drain stops: a process that escaped the worker may hold
        the pipe open, and must not hold this thread and its fds too.

        The pipe is read without blocking and polled (with `ended`) only when
        it is empty: under load the marks are there after each pause, and a
        poll before every read was a system call and a GIL hand-over more per
        wake-up (bench/README, "The async webhook under 32 connections").
        """
        output = self.handle.output
        fd, rest, invocation = output.fileno(), b"", "-"
        os.set_blocking(fd, False)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if ended is not None:
            poller.register(ended, select.POLLIN)
        left = -1  # bytes still to read once the worker has ended; -1 while it runs
        try:
            while left:
                try:
                    chunk = os.read(fd, DRAIN_READ)
                except BlockingIOError:  # empty: wait for output, or for the worker's end
                    if left >= 0:
                        break  # ended, and the pipe is empty
                    if fd not in [fd_ for fd_, _ in poller.poll()]:
                        left = DRAIN_AFTER_END  # ended: read what the pipe holds, then stop
                    continue
                if not chunk:
                    break
                left = max(0, left - len(chunk)) if left >= 0 else left
                *lines, rest = (rest + chunk).split(b"\n")
                for raw in lines:
                    invocation = self._log_line(invocation, raw)
                while len(rest) >= MAX_LINE:  # a long line without its end yet: log it in parts
                    invocation = self._log_line(invocation, rest[:MAX_LINE])
                    rest = rest[MAX_LINE:]
                if len(chunk) < DRAIN_READ // 4 and left < 0:
                    time.sleep(DRAIN_PAUSE)
            if rest:
                self._log_line(invocation, rest)
        finally:
            output.close()
            if ended is not None:
                os.close(ended)

    def _log_line(self, invocation: str, raw: bytes) -> str:
        """Log one line (in parts if it is long); the invocation its lines after it belong to."""
        at = raw.find(protocol.OUTPUT_MARK)
        if at >= 0:
            if at:  # a line the last invocation left unfinished
                self._log_line(invocation, raw[:at])
            started = raw[at + len(protocol.OUTPUT_MARK) :].decode("ascii", "replace")
            self._tail = (started, [])
            return started
        marked = protocol.LEVEL_MARK in raw
        level, raw = _level(raw)
        of, kept = self._tail
        for part in range(0, max(len(raw), 1), MAX_LINE):
            line = raw[part : part + MAX_LINE].rstrip(b"\r").decode("utf-8", "replace")
            self.log.log(level, "[%s %s] %s", self.function, invocation, line)
            if of == invocation and len(kept) < TAIL_LINES:
                # A marked line is ctx.log's or stderr's (marked WARNING): the drain cannot
                # tell those two apart, so both are kept as "log" lines with their level.
                kept.append(LogLine(time.time(), "log" if marked else "stdout",
                                    logging.getLevelName(level).lower() if marked else "", line))
        return invocation

    def output_of(self, invocation: str) -> tuple[LogLine, ...]:
        """The lines the drain kept of `invocation` (once the worker has ended: all of them)."""
        of, kept = self._tail
        return tuple(kept) if of == invocation else ()

    def kill(self) -> None:
        """End the worker and every process its handler started (`kill_worker`)."""
        kill_worker(self.pid)

    def finish(self, wait: float) -> int | None:
        """Blocking: reap the worker (killed after `wait`), and end its output drain.

        Call it once the channel is closed (the worker sees EOF and exits).
        The worker's guard kills what its handler started before it exits;
        a guard that does not exit within `wait` of being killed is SIGKILLed
        (its runner dies with it).
        """
        try:
            code = self.handle.wait(wait)
        except TimeoutError:
            self.kill()
            try:
                code = self.handle.wait(wait)
            except TimeoutError:
                kill_group(self.pid)
                code = self.handle.wait()
        self._drain.join(1.0)
        return code
