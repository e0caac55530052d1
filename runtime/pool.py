"""A function's pool of worker processes: spawn lazily, reuse warm, recycle, kill.

Each worker is a fresh interpreter (`python -S`, see `child_command`) in its
own session, so a timeout or crash kills its whole process group,
grandchildren included (SPEC 5.3, 6). The pool speaks `runtime.protocol` to
it over a socketpair; the child's stdout and stderr share one pipe that a
drain thread per worker reads continuously into the supervisor's log, so
neither output volume nor garbage can touch the protocol.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import anyio
from anyio.abc import UNIXSocketStream

from runtime import protocol
from runtime.errors import WorkerError
from runtime.events import Event, Outcome, Status, new_event_id
from runtime.specs import FunctionSpec

ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "TZ", "VIRTUAL_ENV")
ENV_PREFIXES = ("LC_", "PYTHON")
MAX_LINE = 8192
"""Longest handler output line logged as one record; longer ones are split."""
LOAD_TIMEOUT = 60.0
"""How long a worker may take to import its handler, beyond the function's timeout."""
LOAD_ERROR_TTL = 10.0
"""How long a load failure is answered from memory before one new worker tries again."""
STOP_WAIT = 5.0
"""How long a retiring worker may take to exit before its group is killed."""
RUNTIME_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


def child_command(spec: FunctionSpec, proto_fd: int) -> list[str]:
    """The worker's command line.

    `-S` skips `site` (about 25 ms with the editable install's import hook);
    the child gets this interpreter's resolved `sys.path` instead, so
    site-packages still import, and `runtime` comes first.
    """
    paths = [RUNTIME_ROOT] + [p for p in sys.path if p and p != RUNTIME_ROOT]
    boot = (
        f"import sys;sys.path[0:1]={paths!r};"
        "from runtime.worker import main;main(sys.argv[1:])"
    )
    return [
        sys.executable, "-S", "-c", boot,
        f"proto={proto_fd}", f"lifeline={lifeline()}",
        f"file={spec.handler_file}", f"attr={spec.handler_attr}",
        f"function={spec.name}", f"memory_mb={spec.memory_mb or 0}",
    ]


def worker_env(
    spec: FunctionSpec, base: Mapping[str, str], log: logging.Logger
) -> dict[str, str]:
    """The allowlist of `base`, then the function's `env`, then its `secrets` (SPEC 6)."""
    env = {
        key: value
        for key, value in base.items()
        if key in ENV_ALLOWLIST or key.startswith(ENV_PREFIXES)
    }
    env.update(spec.env)
    missing = [name for name in spec.secrets if name not in base]
    env.update({name: base[name] for name in spec.secrets if name in base})
    if missing:
        log.warning("function %s: secrets not set in the environment: %s",
                    spec.name, ", ".join(missing))
    return env


def describe_exit(code: int) -> str:
    """A worker's exit status in words."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"worker died from signal {name}"
    return f"worker exited with code {code}"


class WorkerProcess:
    """One live worker: its process, protocol stream and output drain."""

    def __init__(
        self, popen: subprocess.Popen[bytes], sock: socket.socket, stream: UNIXSocketStream,
        function: str, log: logging.Logger,
    ) -> None:
        self.popen = popen
        self.sock = sock
        self.stream = stream
        self._buffer = bytearray()
        self.function = function
        self.log = log
        self.uses = 0
        self.invocation = "-"
        self._drain = threading.Thread(
            target=self._drain_output, name=f"fnrun-output-{function}-{popen.pid}", daemon=True
        )
        self._drain.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _drain_output(self) -> None:
        """Log every output line, tagged with the invocation running when it was read."""
        stdout = self.popen.stdout
        assert stdout is not None
        with stdout:
            for raw in iter(lambda: stdout.readline(MAX_LINE), b""):
                line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
                self.log.info("[%s %s] %s", self.function, self.invocation, line)

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one message and wait for the answer."""
        await self.stream.send(protocol.pack(message))
        return await self.receive()

    async def receive(self) -> dict[str, Any]:
        """The next message; EndOfStream if the worker closed its end."""
        while True:
            message = self._next_frame()
            if message is not None:
                return message
            self._buffer += await self.stream.receive(1 << 20)

    def _next_frame(self) -> dict[str, Any] | None:
        """Take one whole frame off the buffer (usually one receive holds it all)."""
        buffer = self._buffer
        if len(buffer) < protocol.HEADER:
            return None
        end = protocol.HEADER + protocol.frame_size(buffer[: protocol.HEADER])
        if len(buffer) < end:
            return None
        payload = bytes(buffer[protocol.HEADER : end])
        del buffer[:end]
        return protocol.unpack(payload)

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (it leads its own session)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # already gone

    def finish(self, wait: float) -> int:
        """Blocking: end the worker (EOF, then SIGKILL after `wait`), reap it, close up.

        Whatever is left of its process group (grandchildren) is killed too:
        a worker's lifetime bounds what its handler started.
        """
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            code = self.popen.wait(wait)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.popen.wait()
        self.kill()
        self.sock.close()
        self._drain.join(1.0)
        return code


class WorkerPool:
    """Up to `spec.concurrency` warm workers running one function's invocations."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        log: logging.Logger,
        max_uses: int = 1000,
        env_base: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.log = log
        self.max_uses = max_uses
        self._env = worker_env(spec, os.environ if env_base is None else env_base, log)
        self._slots = anyio.Semaphore(spec.concurrency, fast_acquire=True)
        self._idle: list[WorkerProcess] = []
        self._workers: set[WorkerProcess] = set()
        self._running = 0
        self._quiet: anyio.Event | None = None
        self._closing = False
        self._exiting: set[threading.Thread] = set()
        self._load_error: tuple[str, str | None, float] | None = None

    @property
    def live_workers(self) -> int:
        """Worker processes alive now (busy or idle)."""
        return len(self._workers)

    @property
    def running(self) -> int:
        """Invocations in progress now."""
        return self._running

    @property
    def load_error(self) -> str | None:
        """The handler's last load failure while it is still being reused, else None."""
        if self._load_error is None or time.monotonic() > self._load_error[2]:
            return None
        return self._load_error[0]

    async def invoke(self, event: Event, attempt: int) -> Outcome:
        """Run one attempt in a worker; handler problems come back as the Outcome.

        Raises:
            WorkerError: the pool was closed or retired before this call.
        """
        if self._closing:
            raise WorkerError(f"the worker pool of {self.spec.name} is closed")
        async with self._slots:
            self._running += 1
            try:
                return await self._attempt(event, attempt)
            finally:
                self._running -= 1
                if self._running == 0 and self._quiet is not None:
                    self._quiet.set()

    async def _attempt(self, event: Event, attempt: int) -> Outcome:
        started, t0 = time.time(), time.monotonic()

        def outcome(status: Status, **fields: Any) -> Outcome:
            return Outcome(status, started, time.monotonic() - t0, **fields)

        worker = self._idle.pop() if self._idle else await self._spawn()
        if worker is None:
            assert self._load_error is not None
            return outcome("error", error=self._load_error[0], traceback=self._load_error[1])
        worker.invocation = invocation = os.urandom(6).hex()
        message = {
            "kind": "invoke", "event": event.to_dict(), "attempt": attempt,
            "deadline": started + self.spec.timeout, "function": self.spec.name,
            "invocation": invocation,
        }
        reply: dict[str, Any] | None = None
        try:
            with anyio.move_on_after(self.spec.timeout):
                reply = await worker.request(message)
        except (anyio.EndOfStream, anyio.BrokenResourceError, protocol.ProtocolError,
                OSError) as exc:
            self.log.debug("worker %s of %s: %r", worker.pid, self.spec.name, exc)
            code = await self._discard(worker, kill=False)
            return outcome("crash", error=describe_exit(code))
        except BaseException:
            # Cancelled mid-invocation: the worker's state is unknown, so it goes.
            self._retire_worker(worker, kill=True)
            raise
        if reply is None:
            await self._discard(worker, kill=True)
            return outcome("timeout", error=f"timed out after {self.spec.timeout:g}s")
        if reply.get("kind") != "done":
            await self._discard(worker, kill=True)
            return outcome("crash", error=f"worker sent {reply.get('kind')!r}, not 'done'")
        worker.uses += 1
        self._release(worker, fatal=bool(reply.get("fatal")))
        if not reply.get("ok"):
            return outcome("error", error=reply.get("error"), traceback=reply.get("traceback"))
        return outcome("ok", result=reply.get("result"), emits=self._emits(reply))

    def _emits(self, reply: dict[str, Any]) -> tuple[Event, ...]:
        source = f"fnrun/{self.spec.name}"
        return tuple(
            Event(
                type=raw["type"], data=raw.get("data"), id=raw.get("id") or new_event_id(),
                source=source, subject=raw.get("subject"),
            )
            for raw in reply.get("emits") or ()
        )

    async def _spawn(self) -> WorkerProcess | None:
        """Start a worker and wait for `ready`; None (and `_load_error` set) if it failed."""
        if self.load_error is not None:
            return None
        ours, theirs = socket.socketpair()
        try:
            popen = await anyio.to_thread.run_sync(self._popen, theirs.fileno())
        except OSError as exc:
            ours.close()
            self._fail_load(f"cannot start a worker: {exc}", None)
            return None
        finally:
            theirs.close()
        stream = await UNIXSocketStream.from_socket(ours)
        worker = WorkerProcess(popen, ours, stream, self.spec.name, self.log)
        self._workers.add(worker)
        first: dict[str, Any] | None = None
        with anyio.move_on_after(LOAD_TIMEOUT + self.spec.timeout):
            try:
                first = await worker.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, protocol.ProtocolError,
                    OSError):
                first = {"kind": "exit"}
        if first is not None and first["kind"] == "ready":
            return worker
        code = await self._discard(worker, kill=first is None)
        if first is None:
            self._fail_load(f"handler did not load within {LOAD_TIMEOUT:g}s", None)
        elif first["kind"] == "load_error":
            self._fail_load(str(first.get("error")), first.get("traceback"))
        else:
            self._fail_load(f"{describe_exit(code)} while loading the handler", None)
        return None

    def _popen(self, proto_fd: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            child_command(self.spec, proto_fd),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            pass_fds=(proto_fd, lifeline()), start_new_session=True, env=self._env,
        )

    def _fail_load(self, error: str, traceback: str | None) -> None:
        self.log.error("function %s: cannot load %s: %s", self.spec.name, self.spec.handler, error)
        self._load_error = (error, traceback, time.monotonic() + LOAD_ERROR_TTL)

    def _release(self, worker: WorkerProcess, *, fatal: bool) -> None:
        """Back to the idle list, or retired if used up, broken or the pool is closing."""
        if fatal or self._closing or worker.uses >= self.max_uses:
            self._retire_worker(worker, kill=False)
        else:
            self._idle.append(worker)

    async def _discard(self, worker: WorkerProcess, *, kill: bool) -> int:
        """Forget the worker and end it; its exit code."""
        self._workers.discard(worker)
        if kill:
            worker.kill()
        code = await anyio.to_thread.run_sync(worker.finish, 1.0 if not kill else STOP_WAIT)
        await worker.stream.aclose()
        return code

    def _retire_worker(self, worker: WorkerProcess, *, kill: bool) -> None:
        """End a worker in the background, so no invocation waits for its exit."""
        self._workers.discard(worker)
        if kill:
            worker.kill()
        thread = threading.Thread(target=worker.finish, args=(STOP_WAIT,), daemon=True)
        thread.start()
        self._exiting = {t for t in self._exiting if t.is_alive()}
        self._exiting.add(thread)

    def retire(self) -> None:
        """Take no new invocations; idle workers exit now, busy ones after their current one."""
        self._closing = True
        idle, self._idle = self._idle, []
        for worker in idle:
            self._retire_worker(worker, kill=False)

    async def aclose(self, grace: float = 30.0) -> None:
        """Stop: running invocations get `grace` seconds, then every worker is killed and reaped."""
        self.retire()
        with anyio.move_on_after(grace):
            await self._wait_quiet()
        for worker in list(self._workers):
            worker.kill()  # the running invocations see EOF and report a crash
        with anyio.move_on_after(STOP_WAIT):
            await self._wait_quiet()
        for worker in list(self._workers):
            self._retire_worker(worker, kill=True)
        exiting, self._exiting = self._exiting, set()
        for thread in exiting:
            await anyio.to_thread.run_sync(thread.join)

    async def _wait_quiet(self) -> None:
        while self._running:
            self._quiet = anyio.Event()
            await self._quiet.wait()
