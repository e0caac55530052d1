"""Drive `fnrun` the way a user does: a project folder, the real command, HTTP.

Handlers in these projects append one line per attempt to a log file in the
project (`record(...)` below), so tests can count every event: attempts,
duplicates and losses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.runtime.procs import appended_lines

RECORDER = '''
import json, os, time

def record(event, ctx, **extra):
    """Append one line per attempt: the test's ground truth."""
    line = json.dumps({"id": event.id, "type": event.type, "fn": ctx.function,
                       "attempt": ctx.attempt, "pid": os.getpid(), "t": time.time(), **extra})
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "calls.log")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def fnrun(
    *args: str, cwd: Path | None = None, check: bool = True, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run the `fnrun` command (as `python -m runtime`) and capture its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "runtime", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60, **kw,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"fnrun {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@dataclass
class Project:
    """A project folder in tmp_path with a functions folder and a call log."""

    root: Path
    port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def functions(self) -> Path:
        return self.root / "functions"

    @property
    def log(self) -> Path:
        return self.root / "calls.log"

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        if not self.log.exists():
            # Workers of a root supervisor run as nobody (SPEC 6): handlers leave their
            # marks in the project (calls.log, marker files) as that user.
            self.root.chmod(0o1777)
            self.log.touch()
            self.log.chmod(0o666)
        return path

    def add(self, name: str, yaml_text: str, code: str) -> None:
        """Add functions/NAME.yaml and functions/NAME.py (with `record` available).

        `record` writes to PROJECT/calls.log, found from the handler's own path:
        workers get no test variables (their environment is an allowlist).
        """
        self.write(f"functions/{name}.yaml", yaml_text)
        self.write(f"functions/{name}.py", RECORDER + textwrap.dedent(code))

    # -- the supervisor ---------------------------------------------------------

    def launch(self, *extra: str, port: int | None = None,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `fnrun run` on `port` (default the project's) in a session of its own,
        its output in the next supervisor-N.log; not waited for."""
        full_env = {**os.environ, **(env or {})}
        with open(self.root / f"supervisor-{len(self.procs)}.log", "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "runtime", "run", "--project", str(self.root),
                 "--port", str(port or self.port), *extra],
                env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def start(self, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `fnrun run` and wait until /_/health answers 200."""
        proc = self.launch(*extra, env=env)
        wait_until(lambda: proc.poll() is not None or self.healthy(), timeout=30)
        if proc.poll() is not None:
            raise AssertionError(f"fnrun run exited {proc.returncode}:\n{self.output()}")
        return proc

    def output(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.root.glob("supervisor-*.log"))
        )

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url("/_/health"), timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def kill9(self, proc: subprocess.Popen[bytes]) -> None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 40) -> int:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def close(self) -> None:
        """Kill whatever this project started (supervisors and their process groups)."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)

    # -- events -----------------------------------------------------------------

    def publish(self, events: Iterable[dict[str, Any]], batch: int = 500) -> list[str]:
        """POST CloudEvents in batches; returns the ids the supervisor acknowledged."""
        ids: list[str] = []
        items = [
            {"specversion": "1.0", "source": "tests", "id": str(uuid.uuid4()), **e}
            for e in events
        ]
        with httpx.Client(timeout=30) as client:
            for start in range(0, len(items), batch):
                response = client.post(
                    self.url("/_/events"),
                    content=json.dumps(items[start:start + batch]),
                    headers={"content-type": "application/cloudevents-batch+json"},
                )
                assert response.status_code == 202, response.text
                ids.extend(response.json()["ids"])
        return ids

    def calls(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in appended_lines(self.log)]

    def history(self) -> list[dict[str, Any]]:
        """`fnrun history --json` of this project: every attempt recorded, newest first."""
        records: list[dict[str, Any]] = json.loads(
            fnrun("history", "--json", "--project", str(self.root)).stdout)
        return records

    def handled(self, fn: str | None = None) -> Counter[str]:
        """How many attempts each event id got (of `fn`, if given)."""
        return Counter(c["id"] for c in self.calls() if fn is None or c["fn"] == fn)


class RedisServer:
    """A private redis-server with the persistence we recommend: AOF, fsync always."""

    def __init__(self, folder: Path, port: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.port = folder, port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always",
             "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.wait_ready(self.port)

    @staticmethod
    def wait_ready(port: int) -> None:
        """Wait until the redis-server on `port` answers PING."""

        def ready() -> bool:
            try:
                with redis.Redis(port=port, socket_connect_timeout=0.5) as client:
                    return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(ready, timeout=15)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
