"""A worker's guard: the process the pool knows as the worker, parent of the handler's.

A handler can start processes that leave its process group and session
(`os.fork(); os.setsid(); os.fork()`), so killing the worker's group misses
them (SPEC 6: every process a handler started dies with its worker). The
guard is the first process of a worker; it makes itself a child subreaper
(`PR_SET_CHILD_SUBREAPER`, Linux >= 3.4, no privilege needed) and forks
the runner, which loads and runs the handler. Anything the handler starts
stays below the guard however it detaches: an orphan is re-parented to the
guard, not to init. The guard reaps those orphans as they exit (no zombies
pile up in a long-lived worker), and once the runner has ended (exit,
crash, timeout kill, recycle, the supervisor's death through the runner's
lifeline) it kills every process left below it, waits until none is left,
and exits as the runner did (same code or signal).

Killing a worker is SIGTERM to its guard, which SIGKILLs the runner's
process group and then sweeps; the runner dies with its guard
(`PR_SET_PDEATHSIG`), so a SIGKILL of the guard cannot leave it running.

A runner that died from a fault signal (SIGSEGV, SIGBUS, ...) wrote a
`faulthandler` dump to a pipe only the guard reads, never to the handler's
stdout or the protocol socket it was using; the guard sends that text to
the pool as one `crashed` frame, so the dead letter says which signal and
where (the handler's file and line), and handler output cannot forge it.

Standard library only, like the worker (`runtime.worker.protocol` says why);
`_ctypes` rather than `ctypes` for prctl: ~1 ms to import, not ~5 ms.
"""

from __future__ import annotations

import _ctypes
import os

from runtime.worker import protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
else:
    import _signal  # `signal` itself imports enum: ~3 ms of a worker's start

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
SIGKILL = 9
SIGTERM = 15
FAULT_SIGNALS = frozenset({4, 6, 7, 8, 11})
"""SIGILL, SIGABRT, SIGBUS, SIGFPE, SIGSEGV: the signals `faulthandler` dumps on."""
MAX_FAULT = 32 * 1024
"""Most of a fault dump sent (a dump of hundreds of threads is cut)."""
SWEEP_PAUSE = (0.001, 0.1)
"""First and longest pause between sweeps while a killed process has not exited yet."""


def prctl(option: int, value: int) -> bool:
    """`prctl(option, value)` through libc; whether it succeeded."""
    try:
        libc = _ctypes.dlopen(None)  # type: ignore[arg-type]  # None: the loaded libraries
        prctl = _ctypes.dlsym(libc, "prctl")
        return bool(_ctypes.call_function(prctl, (option, value, 0, 0, 0)) == 0)
    except (AttributeError, OSError):  # an interpreter without these internals, or no libc
        import ctypes

        return bool(ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0)


class Guard:
    """The guard's side: the runner's pid, then waiting, reporting, sweeping."""

    def __init__(self, runner: int, proto: int, fault: int) -> None:
        self.runner = runner
        self.proto = proto
        self.fault = fault
        self.pid = os.getpid()

    def stop(self, signum: int = 0, frame: object = None) -> None:
        """SIGTERM: kill the runner's group (the sweep that follows kills the rest)."""
        try:
            os.killpg(self.runner, SIGKILL)
        except OSError:
            pass  # already gone

    def wait(self) -> int:
        """Reap adopted orphans until the runner ends; its wait status."""
        while True:
            pid, status = os.waitpid(-1, 0)
            if pid == self.runner:
                return status

    def report(self, status: int) -> None:
        """After a fault signal: the runner's fault dump to the pool, as a `crashed` frame."""
        if not os.WIFSIGNALED(status) or os.WTERMSIG(status) not in FAULT_SIGNALS:
            return
        chunks, size = [], 0
        try:
            while size < MAX_FAULT and (chunk := os.read(self.fault, MAX_FAULT - size)):
                chunks.append(chunk)
                size += len(chunk)
        except BlockingIOError:
            pass  # all of it read: writers are the runner and what it started
        text = b"".join(chunks).decode("utf-8", "backslashreplace")
        try:
            protocol.write_frame(self.proto, {
                "kind": "crashed", "code": -os.WTERMSIG(status), "fault": text})
        except OSError:
            pass  # the pool closed its end: nobody waits for this worker's answer

    def sweep(self) -> None:
        """Kill every process left below the guard and reap it; return once none is left."""
        from time import sleep

        pause = SWEEP_PAUSE[0]
        while True:
            for pid in children(self.pid):
                try:
                    os.kill(pid, SIGKILL)
                except OSError:
                    pass  # exited meanwhile
            try:
                reaped = False
                while os.waitpid(-1, os.WNOHANG)[0]:
                    reaped = True
            except ChildProcessError:
                return  # no child left
            if not reaped:
                sleep(pause)  # killed, not yet exited (or just re-parented here)
                pause = min(pause * 2, SWEEP_PAUSE[1])

    def exit_like_the_runner(self, status: int) -> None:
        """End with the runner's exit code, or by its signal (as `describe_exit` words it)."""
        if os.WIFSIGNALED(status):
            signum = os.WTERMSIG(status)
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the runner dumped already
            if signum != SIGKILL:
                _signal.signal(signum, _signal.SIG_DFL)
            os.kill(self.pid, signum)
            os._exit(128 + signum)  # a signal whose default is not to terminate
        os._exit(os.waitstatus_to_exitcode(status))


def children(parent: int) -> list[int]:
    """Pids whose parent is `parent` (this process): its tasks' `children` lists,
    or a scan of /proc where the kernel has no CONFIG_PROC_CHILDREN."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{parent}/task"):
            found += map(int, _read(f"/proc/{parent}/task/{task}/children").split())
        return found
    except (OSError, ValueError):
        found = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            stat = _read(f"/proc/{name}/stat")
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split(b" ", 2)
        if len(fields) > 1 and int(fields[1]) == parent:
            found.append(int(name))
    return found


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def split(proto: int, lifeline: int) -> int:
    """Become a guard and fork the runner; returns only in the runner, with its fault fd.

    Call before any thread starts (`PR_SET_PDEATHSIG` follows the thread
    that forked). The guard never returns: it exits as the runner did.
    """
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    fault_read, fault_write = os.pipe()
    guard: Guard | None = None
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if guard is not None:
            guard.stop()

    _signal.signal(SIGTERM, on_term)  # before the fork: a SIGTERM is never lost
    parent = os.getpid()
    runner = os.fork()
    if runner == 0:
        _signal.signal(SIGTERM, _signal.SIG_DFL)
        os.setpgid(0, 0)  # the guard's kill takes the runner's group, never the guard
        prctl(PR_SET_PDEATHSIG, SIGKILL)
        if os.getppid() != parent:
            os._exit(1)  # the guard died before the line above
        os.close(fault_read)
        os.set_blocking(fault_write, False)  # a dump never blocks a dying runner
        return fault_write
    try:
        os.setpgid(runner, runner)  # as the runner does: whichever runs first, no kill misses
    except OSError:
        pass  # the runner did it first, or has already exited
    os.close(fault_write)
    os.close(lifeline)  # the runner watches it; its end ends this guard
    os.set_blocking(fault_read, False)
    guard = Guard(runner, proto, fault_read)
    if stopping:
        guard.stop()
    status = guard.wait()
    guard.report(status)
    os.close(proto)
    guard.sweep()
    guard.exit_like_the_runner(status)
    raise AssertionError("unreachable")
