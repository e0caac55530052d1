"""The fork server's template: a clean interpreter that forks workers on request.

Starting a worker as a fresh interpreter costs ~11 ms of interpreter start
before any of our code runs; forking a template that already holds
`runtime.worker.child` costs ~1 ms. The template is itself a fresh `python -S`
interpreter started like a worker (`runtime.pool.launcher.ForkServer`), never a
fork of the supervisor (SPEC 6), and it imports only what a worker imports
(plus this module, `select` and `_socket`), so a handler sees the same
`sys.modules` either way.

The supervisor talks to it over a SOCK_SEQPACKET socket, one message per
`runtime.worker.protocol` frame:

- supervisor -> template: an 8-byte request id, then a `fork` frame
  {argv, env, cwd, path}, carrying the worker's protocol socket and the
  write end of its output pipe (SCM_RIGHTS);
- template -> supervisor `forked` {id, pid} right after the fork, or
  `fork_error` {id, error};
- template -> supervisor `exited` {pid, code} once it has reaped a worker
  (`code` as `subprocess.Popen.returncode`: negative for a signal).

The template exits when the socket closes or the supervisor dies (its
lifeline closes). It is a child subreaper, as each worker's guard is
(`runtime.worker.guard`): should a guard die by SIGKILL, what its handler started
is re-parented here, not to init, and killed. Standard library only, like the worker: see
`runtime.worker.protocol` for why.
"""

from __future__ import annotations

import _socket
import os
import select
import sys

from runtime.worker import child as worker
from runtime.worker import guard, protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_REQUEST = 128 * 1024
"""Largest `fork` message; the supervisor spawns directly beyond it."""
ID_SIZE = 8
INT_SIZE = 4


def _fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The fds an SCM_RIGHTS message carried."""
    fds: list[int] = []
    for level, kind, raw in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(raw) - len(raw) % INT_SIZE
            fds += [int.from_bytes(raw[i : i + INT_SIZE], sys.byteorder, signed=True)
                    for i in range(0, usable, INT_SIZE)]
    return fds


def _reply(sock: _socket.socket, message: dict[str, Any]) -> None:
    sock.send(protocol.pack(message))


class Template:
    """The fork loop: one request at a time, reaping children in between."""

    def __init__(self, control: int, lifeline: int) -> None:
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, control)
        self.lifeline = lifeline
        self.poller = select.poll()
        self.poller.register(control, select.POLLIN)
        self.poller.register(lifeline, select.POLLIN)
        self.children: dict[int, int] = {}
        """pidfd -> pid of every worker forked and not yet reaped."""
        self.strays: dict[int, int] = {}
        """pidfd -> pid of processes re-parented here (see `_sweep`), killed, not yet reaped."""
        guard.prctl(guard.PR_SET_CHILD_SUBREAPER, 1)
        self.buffer = bytearray(MAX_REQUEST)

    def serve(self) -> tuple[dict[str, Any], int, int] | None:
        """Fork workers until told to stop (None); in a forked worker, its job.

        The worker's job is returned rather than run here, so the worker ends
        the way a freshly started interpreter would: by returning from the
        `-c` program (atexit handlers, non-daemon threads, flushing).
        """
        control = self.sock.fileno()
        while True:
            for fd, _ in self.poller.poll():
                if fd == self.lifeline:
                    return None  # the supervisor is gone (its end closed)
                if fd != control:
                    self._reap(fd)
                    continue
                # socket.recv_fds would do this, but `socket` imports enum and
                # selectors: ~3 ms, and modules every handler would then see.
                size, ancillary, _, _ = self.sock.recvmsg_into(
                    [self.buffer], _socket.CMSG_SPACE(2 * INT_SIZE))
                fds = _fds(ancillary)
                if not size:
                    for fd in fds:
                        os.close(fd)
                    return None  # the supervisor closed the socket: stop
                job = self._fork(size, fds)
                if job is not None:
                    return job

    def _fork(self, size: int, fds: list[int]) -> tuple[dict[str, Any], int, int] | None:
        """Fork the worker a request of `size` bytes in `buffer` asks for.

        The template never decodes a request: only the worker it is for does.
        The buffer is zeroed once the worker is forked, so no function's
        environment or secrets stay in memory that later workers inherit.
        """
        request_id = int.from_bytes(self.buffer[:ID_SIZE], "big")
        if len(fds) != 2 or size < ID_SIZE + protocol.HEADER:
            for fd in fds:
                os.close(fd)
            self.buffer[:size] = bytes(size)
            _reply(self.sock, {"kind": "fork_error", "id": request_id,
                               "error": f"bad request ({size} bytes, {len(fds)} fds)"})
            return None
        proto, output = fds
        led, leading = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in (proto, output, led, leading):
                os.close(fd)
            self.buffer[:size] = bytes(size)
            _reply(self.sock, {"kind": "fork_error", "id": request_id, "error": str(exc)})
            return None
        if pid == 0:
            # Its own session before the supervisor learns the pid, so that a
            # killpg(pid) from there can never miss (there is no group before).
            os.setsid()
            os.close(led)
            os.close(leading)
            request = protocol.unpack(self.buffer[ID_SIZE + protocol.HEADER : size])
            self._forget()
            return request, proto, output
        self.buffer[:size] = bytes(size)
        os.close(leading)
        os.read(led, 1)  # EOF once the child leads its session (or died)
        os.close(led)
        os.close(proto)
        os.close(output)
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = pid
        self.poller.register(pidfd, select.POLLIN)
        _reply(self.sock, {"kind": "forked", "id": request_id, "pid": pid})
        return None

    def _reap(self, pidfd: int) -> None:
        stray = pidfd in self.strays
        pid = (self.strays if stray else self.children).pop(pidfd)
        self.poller.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        if not stray:
            _reply(self.sock, {"kind": "exited", "pid": pid,
                               "code": os.waitstatus_to_exitcode(status)})
        self._sweep()

    def _sweep(self) -> None:
        """Kill children of the template that are not its workers.

        Only a dead guard's processes get here (a live guard is the
        subreaper of its own): its runner, which dies with it, and what the
        runner started, re-parented when the runner dies. Each is watched
        until it is reaped, and reaping one sweeps again for its own orphans.
        """
        known = {*self.children.values(), *self.strays.values()}
        for pid in guard.children(os.getpid()):
            if pid in known:
                continue
            try:
                os.kill(pid, guard.SIGKILL)
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue  # reaped meanwhile: it was not ours to watch
            self.strays[pidfd] = pid
            self.poller.register(pidfd, select.POLLIN)

    def _forget(self) -> None:
        """In a new worker: drop the template's fds (the lifeline stays: it is the worker's too)."""
        for pidfd in [*self.children, *self.strays]:
            os.close(pidfd)
        self.children.clear()
        self.strays.clear()
        self.sock.close()
        self.buffer = bytearray()


def become_worker(
    request: dict[str, Any], proto: int, output: int, lifeline: int, sealed: bool = False
) -> None:
    """In a forked child: set up what a spawned worker gets, then run `worker.main`.

    With `sealed`, the child first takes a Landlock domain of its own
    (`runtime.worker.confine.nest`; not dumpable and no new privileges it has from
    the template) before its environment and secrets exist, so no other
    worker can read them at any moment.
    Its own session is already there (see `Template._fork`); then exactly
    the function's environment, cwd, `sys.path` and `sys.argv` as a direct
    start would have them, stdout and stderr on the output pipe. Hash randomization is the
    template's (one seed for all forked workers): a per-process seed only
    exists at interpreter start.
    """
    if sealed:
        from runtime.worker import confine  # imported already: the template entered it

        confine.nest()
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    os.chdir(request["cwd"])
    os.environ.clear()  # putenv/unsetenv: the C environment follows, for subprocesses too
    os.environ.update(request["env"])
    sys.path[:] = request["path"]
    argv = [f"proto={proto}", f"lifeline={lifeline}", *request["argv"]]
    sys.argv[:] = ["-c", *argv]
    if "random" in sys.modules:  # not imported today; reseed if that ever changes
        sys.modules["random"].seed()
    if "time" in sys.modules:
        sys.modules["time"].tzset()  # TZ may differ from the template's
    worker.main(argv)


def main(argv: list[str]) -> None:
    """Run as `python -S -c ... control=FD lifeline=FD` by `runtime.pool.launcher`."""
    options = dict(arg.partition("=")[::2] for arg in argv)
    # The first compile() of a process builds the AST types (~1.5 ms in a
    # forked child, where it also copies pages): every worker compiles its
    # handler, so build them once here. No module is imported by this.
    compile("", "<fnrun template>", "exec")
    template = Template(int(options["control"]), int(options["lifeline"]))
    if options.get("confine") == "1":
        from runtime.worker import confine  # imported already: the template entered it

        confine.keep_ruleset()
    job = template.serve()
    if job is not None:
        become_worker(*job, template.lifeline, options.get("confine") == "1")
