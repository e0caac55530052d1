"""One worker process: its command line, environment, output drain, and end.

Each worker is a fresh interpreter (`python -S`, see `child_command`) in its
own session, so a timeout or crash kills its whole process group,
grandchildren included (SPEC 5.3, 6). Its stdout and stderr share one pipe
that a drain thread reads continuously into the supervisor's log, so neither
output volume nor garbage can touch the protocol socket.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import py_compile
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping

from runtime.channel import Channel
from runtime.specs import FunctionSpec

ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "TZ", "VIRTUAL_ENV")
ENV_PREFIXES = ("LC_", "PYTHON")
MAX_LINE = 8192
"""Longest handler output line logged as one record; longer ones are split."""
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


@functools.cache
def compile_worker() -> None:
    """Write the worker's own bytecode once, so each worker start reads it.

    Python writes no bytecode cache under PYTHONDONTWRITEBYTECODE (set on this
    project's CI machines) or into a read-only install; every worker would then
    compile runtime/worker.py from source: about 10 ms of a 25 ms start.
    """
    for name in ("__init__", "protocol", "worker"):
        source = os.path.join(RUNTIME_ROOT, "runtime", f"{name}.py")
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


def child_command(spec: FunctionSpec, proto_fd: int) -> list[str]:
    """The worker's command line.

    `-S` skips `site` (about 25 ms with the editable install's import hook);
    the child gets this interpreter's resolved `sys.path` instead, so
    site-packages still import, and `runtime` comes first.
    """
    compile_worker()
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


def abandon(popen: subprocess.Popen[bytes]) -> None:
    """Kill a worker that never became a `WorkerProcess`, and reap it in the background."""
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # already gone

    def reap() -> None:
        popen.wait()
        if popen.stdout is not None:
            popen.stdout.close()

    threading.Thread(target=reap, daemon=True).start()


class WorkerProcess:
    """One live worker: its process, protocol channel and output drain."""

    def __init__(
        self, popen: subprocess.Popen[bytes], channel: Channel, function: str,
        log: logging.Logger,
    ) -> None:
        self.popen = popen
        self.channel = channel
        self.function = function
        self.log = log
        self.uses = 0
        self.replaced = False
        """Whether a replacement has been started for when this one is used up."""
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

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (it leads its own session)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # already gone

    def finish(self, wait: float) -> int:
        """Blocking: reap the worker (SIGKILL after `wait`), then what is left of its group.

        Call it once the channel is closed (the worker sees EOF and exits).
        Grandchildren are killed too: a worker's lifetime bounds what its
        handler started.
        """
        try:
            code = self.popen.wait(wait)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.popen.wait()
        self.kill()
        self._drain.join(1.0)
        return code
