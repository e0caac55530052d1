"""Processes the benchmark starts: own process group, logged, always stopped.

Every service runs in a new session so that stopping it (SIGTERM, then SIGKILL
after a grace period) reaches its children too, by process group id only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def checkout(rev: str, tree: Path) -> Iterator[Path]:
    """`rev` checked out as a detached git worktree at `tree`, removed on leaving
    (revision A/Bs and counts load fnrun from it through PYTHONPATH)."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), rev],
                   check=True, capture_output=True)
    try:
        yield tree
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                       check=False, capture_output=True)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Timeout(Exception):
    """A condition the benchmark waited for did not hold before its deadline."""


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, every: float = 0.01
) -> None:
    """Poll `condition` until it holds; raise `Timeout` naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """A long-running child process with its output in a log file."""

    def __init__(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path = REPO) -> None:
        self.argv = list(argv)
        self.log = log
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=full_env, cwd=cwd, start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 5) -> str:
        """The last lines of the log, to explain a failure in one place."""
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after `grace`."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # Children may outlive a leader that exited on SIGTERM.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


@contextlib.contextmanager
def services() -> Iterator[list[Service]]:
    """A list to append started services to; all are stopped on the way out."""
    started: list[Service] = []
    try:
        yield started
    finally:
        for service in reversed(started):
            service.stop()


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_mb(pid: int) -> float:
    """Resident set size (VmRSS) of `pid` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ProcessLookupError(pid)


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of `values` (not interpolated)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, int(round(pct / 100 * len(ordered) + 0.4999)))
    return ordered[min(rank, len(ordered)) - 1]


P99_SAMPLES = 1000
"""Fewer samples than this cannot place a p99 (it would be one of the top few values)."""


def high_ms(values: Sequence[float], prefix: str = "") -> dict[str, float]:
    """The tail of `values` (ms): `{prefix}p99 ms` from 1,000 samples or more, else the
    maximum, named `{prefix}max ms`, so a table never calls the worst of 20 a p99."""
    if len(values) >= P99_SAMPLES:
        return {f"{prefix}p99 ms": percentile(values, 99)}
    return {f"{prefix}max ms": max(values)}
