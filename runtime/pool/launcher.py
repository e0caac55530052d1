"""Starting worker processes: forked from the fork server's template, else spawned.

A fresh `python -S` interpreter takes ~11 ms to start before any of our
code runs, so a spawned worker cannot be ready within the 25 ms cold-start
budget on a loaded machine. One template per supervisor (a fresh interpreter
holding `runtime.worker.child`, see `runtime.worker.forkserver`) forks workers instead:
fresh interpreters in every way a handler can see, never forks of the
supervisor (SPEC 6).

The template is an optimisation, never a dependency: a worker whose
environment must act at interpreter start (PYTHON*, LANG, LC_* differing
from the template's), or any worker while the template is missing, slow or
dead, is spawned directly as before, and a dead template is restarted for
the next one.

Under `fnrun run` both ways start confined (`runtime.pool.sandbox`): the
template and spawned workers inside bubblewrap's mount namespace as the
unprivileged user, and every worker sealed (`runtime.worker.confine.seal`) before
its environment exists.
"""

from __future__ import annotations

import array
import atexit
import itertools
import json
import logging
import os
import select
import socket
import subprocess
import threading
import weakref
from collections.abc import Mapping
from typing import Any, BinaryIO, cast

from runtime.pool.process import (
    WorkerHandle,
    allowed_env,
    boot_command,
    child_command,
    child_path,
    kill_worker,
    lifeline,
    worker_options,
)
from runtime.pool.sandbox import NONE, Sandbox
from runtime.specs import FunctionSpec
from runtime.worker import protocol
from runtime.worker.forkserver import ID_SIZE, MAX_REQUEST

FORK_WAIT = 2.0
"""How long a fork request may wait for the template before the worker is spawned directly."""
REPORT_WAIT = 1.0
"""How long a worker's exit code may take to come from the template once it has ended."""
STARTUP_PREFIXES = ("PYTHON", "LC_", "LANG")
"""Environment read at interpreter start: a worker whose own (from the allowlist or
its function's `env`) differs from the template's is spawned. This decides how a
worker starts, never what it gets (`runtime.pool.process.ENV_ALLOWLIST` does)."""
MAX_INFO = 4096
"""Most of bubblewrap's `--info-fd` report read (a few lines of JSON)."""
SIGNALLED = 128
"""bubblewrap exits 128 + N when the worker it ran died from signal N."""

log = logging.getLogger("fnrun.launcher")


class Spawned:
    """A worker started directly: `subprocess.Popen` as a `WorkerHandle`."""

    def __init__(self, popen: subprocess.Popen[bytes], pid: int | None = None) -> None:
        assert popen.stdout is not None
        self.popen = popen
        self.pid = popen.pid if pid is None else pid
        """The worker's (its guard's): under bubblewrap, bubblewrap's child, not `popen`."""
        self.output = cast(BinaryIO, popen.stdout)
        self.wrapped = pid is not None

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"worker {self.pid} still running") from None
        if self.wrapped and SIGNALLED < code < SIGNALLED + 65:
            return SIGNALLED - code  # as Popen reports a signal: -N
        return code


class Forked:
    """A worker forked by the template, which reports its exit code.

    The worker is not our child, so its end is also watched through a pidfd:
    if the template dies or hangs, the worker's exit is still seen, with an
    unknown code (None).
    """

    def __init__(self, pid: int, output: BinaryIO) -> None:
        self.pid = pid
        self.output = output
        self.code: int | None = None
        self._ended = threading.Event()
        try:
            self.pidfd: int | None = os.pidfd_open(pid)
        except OSError:  # reaped already (its `exited` report is on its way), or out of fds
            self.pidfd = None
        else:
            weakref.finalize(self, os.close, self.pidfd)

    def ended(self, code: int | None) -> None:
        self.code = code
        self._ended.set()

    def wait(self, timeout: float | None = None) -> int | None:
        if self._ended.wait(REPORT_WAIT if timeout is None else timeout):
            return self.code
        if timeout is not None:
            raise TimeoutError(f"worker {self.pid} still running")
        if self.pidfd is not None:  # the template is slow, hung or gone: watch the process
            poller = select.poll()
            poller.register(self.pidfd, select.POLLIN)
            poller.poll()  # readable once the process has ended
        self._ended.wait(REPORT_WAIT)  # give the template a moment to report its code
        return self.code


def startup_env(env: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key.startswith(STARTUP_PREFIXES)}


class Template:
    """One template process, its control socket, and the workers it forked."""

    def __init__(self, sandbox: Sandbox) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # The allowlist only: its environment is readable where its workers' are.
        self.env = allowed_env(os.environ)
        self.sandbox = sandbox
        confined = ["confine=1"] if sandbox.confined else []
        try:
            self.popen = subprocess.Popen(
                [*sandbox.wrapper, *boot_command(
                    "runtime.worker.forkserver",
                    f"control={theirs.fileno()}", f"lifeline={lifeline()}",
                    *confined, confine=_user(sandbox))],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=sandbox.cwd,
                pass_fds=(theirs.fileno(), lifeline()), start_new_session=True, env=self.env,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.alive = True
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._replied = threading.Condition(self._lock)
        self._sending = threading.Lock()
        self._waiting: dict[int, BinaryIO] = {}
        """Requests not answered yet: the output pipe their worker will have."""
        self._replies: dict[int, Forked | dict[str, Any]] = {}
        self._workers: dict[int, Forked] = {}
        """Forked workers not reported `exited` yet, by pid."""
        threading.Thread(target=self._read, name="fnrun-forkserver", daemon=True).start()

    def fork(self, request: dict[str, Any], proto_fd: int) -> Forked | None:
        """Ask for a worker; None if the template failed to make one in time."""
        read_end, write_end = os.pipe()
        output = cast(BinaryIO, open(read_end, "rb"))  # the worker's drain closes it
        with self._lock:
            request_id = next(self._ids)
            self._waiting[request_id] = output
        try:
            frame = request_id.to_bytes(ID_SIZE, "big") + protocol.pack({"kind": "fork", **request})
            if len(frame) > MAX_REQUEST:
                raise protocol.ProtocolError(f"fork request of {len(frame)} bytes")
            fds = array.array("i", [proto_fd, write_end])
            with self._sending:  # never on a socket `_lost` closed (its fd may be reused)
                if self.sock.fileno() < 0:
                    raise ConnectionError("the fork server is gone")
                self.sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            reply = self._await(request_id)
        except (OSError, protocol.ProtocolError) as exc:
            log.debug("fork server: request failed: %r", exc)
            reply = None
        finally:
            os.close(write_end)
            with self._lock:
                self._waiting.pop(request_id, None)
        if not isinstance(reply, Forked):
            output.close()
            if reply is not None:
                log.warning("fork server: %s", reply.get("error"))
            return None
        return reply

    def _await(self, request_id: int) -> Forked | dict[str, Any] | None:
        """The reply to a request: its worker, a `fork_error`, or None (no answer in time)."""
        with self._lock:
            self._replied.wait_for(
                lambda: request_id in self._replies or not self.alive, FORK_WAIT
            )
            reply = self._replies.pop(request_id, None)
            # Without a reply, the request is forgotten now: a late `forked` finds no taker.
            self._waiting.pop(request_id, None)
        if reply is None and self.alive:
            log.warning("fork server: no answer within %gs; restarting it", FORK_WAIT)
            self.stop(kill=True)
        return reply

    def _read(self) -> None:
        """Route the template's reports until it is gone."""
        try:
            while True:
                try:
                    data = self.sock.recv(65536)
                    message = protocol.unpack(data[protocol.HEADER :]) if data else None
                except (OSError, protocol.ProtocolError):
                    message = None
                if message is None:
                    return
                self._route(message)
        except Exception:
            log.exception("fork server: cannot read its reports; restarting it")
        finally:
            self._lost()

    def _route(self, message: dict[str, Any]) -> None:
        kind = message["kind"]
        with self._lock:
            if kind == "exited":
                worker = self._workers.pop(message["pid"], None)
                if worker is not None:
                    worker.ended(message["code"])
                return
            output = self._waiting.pop(message["id"], None)
            if output is not None:
                reply: Forked | dict[str, Any] = message
                if kind == "forked":
                    reply = self._workers[message["pid"]] = Forked(message["pid"], output)
                self._replies[message["id"]] = reply
                self._replied.notify_all()
                return
        if kind == "forked":
            kill_worker(message["pid"])  # its requester gave up waiting: nobody owns it

    def _lost(self) -> None:
        """The template is gone: wake waiting requests, watch its workers' ends ourselves."""
        with self._lock:
            self.alive = False
            self._replied.notify_all()
            orphans, self._workers = list(self._workers.values()), {}
        with self._sending:
            self.sock.close()
        self.popen.kill()  # it exits on EOF anyway; this bounds the wait
        self.popen.wait()
        if orphans:
            threading.Thread(target=_watch, args=(orphans,), daemon=True).start()

    def stop(self, *, kill: bool = False) -> None:
        """Close the control socket (the template exits on EOF); SIGKILL it if `kill`."""
        if kill:
            self.popen.kill()  # only the template: its workers lead their own sessions
        with self._sending:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed


def _watch(workers: list[Forked]) -> None:
    """Mark orphaned workers ended (code unknown) as their pidfds become readable."""
    poller = select.poll()
    waiting = {}
    for worker in workers:
        if worker.pidfd is None:
            worker.ended(None)
        else:
            poller.register(worker.pidfd, select.POLLIN)
            waiting[worker.pidfd] = worker
    while waiting:
        for fd, _ in poller.poll():
            poller.unregister(fd)
            waiting.pop(fd).ended(None)


class ForkServer:
    """The supervisor's template: started on first use, restarted after it dies."""

    def __init__(self) -> None:
        self._template: Template | None = None
        self._lock = threading.Lock()
        self.sandbox = NONE
        """How workers start from now on (`configure`)."""

    def configure(self, sandbox: Sandbox) -> None:
        """Confine the workers started from now on; a template started otherwise stops."""
        template = self._template
        if template is not None and template.sandbox != sandbox:
            self.stop()  # workers it forked live on; the next start makes a confined one
        self.sandbox = sandbox

    @property
    def pid(self) -> int | None:
        """The running template's pid, if any."""
        template = self._template
        return template.popen.pid if template is not None and template.alive else None

    def start(self) -> None:
        """Start the template unless it runs (it takes requests once its imports are done).

        The supervisor may call this at start; otherwise the first worker
        starts it, and is itself spawned directly.
        """
        with self._lock:
            if self._template is not None and self._template.alive:
                return
            try:
                self._template = Template(self.sandbox)
            except OSError as exc:
                log.warning("fork server: cannot start the template: %s", exc)
                self._template = None

    def fork(self, spec: FunctionSpec, env: Mapping[str, str], proto_fd: int) -> Forked | None:
        """A worker forked from the template, or None: then spawn it directly."""
        template = self._template
        if template is None or not template.alive:
            return None
        if startup_env(env) != startup_env(template.env):
            return None
        try:
            cwd = template.sandbox.cwd or os.getcwd()
        except OSError:
            return None  # a deleted cwd: a spawned worker still inherits it
        request = {"argv": worker_options(spec), "env": dict(env), "cwd": cwd,
                   "path": child_path()}
        return template.fork(request, proto_fd)

    def stop(self, wait: float = 5.0) -> None:
        """Stop the template (workers it forked live on); the next `fork` starts a new one.

        It exits on its own once its socket closes; `wait` bounds how long
        this waits for that before killing it.
        """
        with self._lock:
            template, self._template = self._template, None
            self.sandbox = NONE
        if template is not None:
            template.stop()
            try:
                template.popen.wait(wait)
            except subprocess.TimeoutExpired:
                template.stop(kill=True)


FORK_SERVER = ForkServer()
atexit.register(FORK_SERVER.stop, 0.5)  # a short exit: the template goes on EOF anyway


def start_worker(spec: FunctionSpec, env: Mapping[str, str], proto_fd: int) -> WorkerHandle:
    """Blocking: a new worker for `spec` speaking on `proto_fd`, forked if possible.

    Raises:
        OSError: the worker could not be started.
    """
    forked = FORK_SERVER.fork(spec, env, proto_fd)
    if forked is not None:
        return forked
    sandbox = FORK_SERVER.sandbox
    command = child_command(spec, proto_fd, _user(sandbox))
    if not sandbox.wrapper:
        spawned = Spawned(subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            pass_fds=(proto_fd, lifeline()), start_new_session=True, env=dict(env),
        ))
    else:
        spawned = _spawn_wrapped(sandbox, command, proto_fd, env)
    FORK_SERVER.start()  # after this worker, so it never waits for the template
    return spawned


def _spawn_wrapped(
    sandbox: Sandbox, command: list[str], proto_fd: int, env: Mapping[str, str]
) -> Spawned:
    """A worker started by bubblewrap, known by its own pid (its guard's).

    bubblewrap stays as the worker's parent and passes on no signal, so the
    pool must signal the worker itself: `--info-fd` tells its pid, and
    `--new-session` makes it lead its own session and group, as a worker
    spawned directly does (`kill_group` needs that).
    """
    info, info_w = os.pipe()
    try:
        popen = subprocess.Popen(
            [*sandbox.wrapper[:-1], "--new-session", "--info-fd", str(info_w), "--", *command],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            pass_fds=(proto_fd, lifeline(), info_w), start_new_session=True, env=dict(env),
            cwd=sandbox.cwd,
        )
    finally:
        os.close(info_w)
    with open(info, "rb") as reader:  # bubblewrap writes it and closes it at once
        raw = reader.read(MAX_INFO)
    try:
        pid = int(json.loads(raw)["child-pid"])
    except (ValueError, KeyError, TypeError):  # bubblewrap failed before its child
        pid = popen.pid
    return Spawned(popen, pid)


def _user(sandbox: Sandbox) -> tuple[int | None, int | None] | None:
    """What a child's boot must enter (`runtime.worker.confine.enter`); None: it is not confined."""
    return (sandbox.uid, sandbox.gid) if sandbox.confined else None
