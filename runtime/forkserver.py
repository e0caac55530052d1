"""The fork server's template: a clean interpreter that forks workers on request.

Starting a worker as a fresh interpreter costs ~11 ms of interpreter start
before any of our code runs; forking a template that already holds
`runtime.worker` costs ~1 ms. The template is itself a fresh `python -S`
interpreter started like a worker (`runtime.process.ForkServer`), never a
fork of the supervisor (SPEC 6), and it imports only what a worker imports,
so a handler sees the same `sys.modules` either way.

The supervisor talks to it over a SOCK_SEQPACKET socket, one message per
`runtime.protocol` frame:

- supervisor -> template `fork` {id, argv, env, cwd, path}, carrying the
  worker's protocol socket and the write end of its output pipe (SCM_RIGHTS);
- template -> supervisor `forked` {id, pid} right after the fork, or
  `fork_error` {id, error};
- template -> supervisor `exited` {pid, code} once it has reaped a worker
  (`code` as `subprocess.Popen.returncode`: negative for a signal).

The template exits when the socket closes or the supervisor dies (its
lifeline closes). Standard library only, like the worker: see
`runtime.protocol` for why.
"""

from __future__ import annotations

import _socket
import os
import select
import sys

from runtime import protocol, worker

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_REQUEST = 1024 * 1024
"""Largest `fork` message read; the supervisor spawns directly beyond it."""
INT_SIZE = 4


def _receive(sock: _socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """One request and the fds it carries; None once the supervisor closed the socket."""
    # socket.recv_fds would do this, but `socket` imports enum and selectors
    # (~3 ms, and modules every handler would then see in sys.modules).
    data, ancillary, _, _ = sock.recvmsg(MAX_REQUEST, _socket.CMSG_SPACE(2 * INT_SIZE))
    fds: list[int] = []
    for level, kind, raw in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(raw) - len(raw) % INT_SIZE
            fds += [int.from_bytes(raw[i : i + INT_SIZE], sys.byteorder, signed=True)
                    for i in range(0, usable, INT_SIZE)]
    if not data:
        for fd in fds:
            os.close(fd)
        return None
    return protocol.unpack(data[protocol.HEADER :]), fds


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
                received = _receive(self.sock)
                if received is None:
                    return None
                job = self._fork(*received)
                if job is not None:
                    return job

    def _fork(
        self, request: dict[str, Any], fds: list[int]
    ) -> tuple[dict[str, Any], int, int] | None:
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            _reply(self.sock, {"kind": "fork_error", "id": request.get("id"),
                               "error": f"expected 2 fds, got {len(fds)}"})
            return None
        proto, output = fds
        led, leading = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in (proto, output, led, leading):
                os.close(fd)
            _reply(self.sock, {"kind": "fork_error", "id": request["id"], "error": str(exc)})
            return None
        if pid == 0:
            # Its own session before the supervisor learns the pid, so that a
            # killpg(pid) from there can never miss (there is no group before).
            os.setsid()
            os.close(led)
            os.close(leading)
            self._forget()
            return request, proto, output
        os.close(leading)
        os.read(led, 1)  # EOF once the child leads its session (or died)
        os.close(led)
        os.close(proto)
        os.close(output)
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = pid
        self.poller.register(pidfd, select.POLLIN)
        _reply(self.sock, {"kind": "forked", "id": request["id"], "pid": pid})
        return None

    def _reap(self, pidfd: int) -> None:
        pid = self.children.pop(pidfd)
        self.poller.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        _reply(self.sock, {"kind": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status)})

    def _forget(self) -> None:
        """In a new worker: drop the template's fds (the lifeline stays: it is the worker's too)."""
        for pidfd in self.children:
            os.close(pidfd)
        self.children.clear()
        self.sock.close()


def become_worker(request: dict[str, Any], proto: int, output: int, lifeline: int) -> None:
    """In a forked child: set up what a spawned worker gets, then run `worker.main`.

    Its own session is already there (see `Template._fork`); then exactly the function's
    environment, cwd, `sys.path` and `sys.argv` as a direct start would have
    them, stdout and stderr on the output pipe. Hash randomization is the
    template's (one seed for all forked workers): a per-process seed only
    exists at interpreter start.
    """
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
    """Run as `python -S -c ... control=FD lifeline=FD` by `runtime.process`."""
    options = dict(arg.partition("=")[::2] for arg in argv)
    template = Template(int(options["control"]), int(options["lifeline"]))
    job = template.serve()
    if job is not None:
        become_worker(*job, template.lifeline)
