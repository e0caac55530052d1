"""What one async webhook request costs the supervisor under wrk's 32 connections.

    python bench/webhook_cost.py [--mode callgrind|strace|cpu] [--seconds S] REV [REV ...]

The A/B (`bench/run ab`) times the async webhook with wrk at 32 connections; the
instruction counts of bench/README's "Drain cost of issue 17, placed" sent one
request at a time, which batches nothing (one request per commit, per claim,
per worker round trip) and so missed what concurrency changes. This runs the
A/B's project (bench/scenarios/webhook.py) and load (bench/wrk.py) against
`fnrun run` of each revision (a detached worktree, fnrun from PYTHONPATH) and
counts, per request answered, over a measured wrk run after a warm-up one,
from the measured run's start until the deliveries it stored have run and
settled:

- callgrind: the supervisor's instructions (every thread) under valgrind's
  callgrind, instrumented only for that window (`callgrind_control -i`);
  its workers run natively. Under valgrind the supervisor is ~50x slower,
  so it answers tens of requests a second, each of 32 connections waiting
  its turn: commits and claims batch as they do natively when wrk keeps
  every connection busy. The callgrind file is kept (--keep) for
  `callgrind_annotate --inclusive=yes`.
- strace: the supervisor's system calls (every thread), natively, by
  `strace -c -f` attached for the window; fdatasync/fsync are its commits.
- cpu: the supervisor's own CPU time per request from /proc (the A/B's
  measure), natively: noisy on a shared host, a cross-check only.
- calls: Python function calls per request (every thread, cProfile), the
  counts taken between two snapshots (SIGUSR1, SIGUSR2), written to
  `--keep`'s folder as REV.calls.json: where the instructions go by
  Python function, which callgrind cannot name.

Requests are counted by the handler's runs in the window (each run stamps a
memory-mapped slot, bench/peers/stamps.py): every request answered 202 is
one delivery, run and settled before the window closes.

The interpreter is this one for every revision. Needs valgrind, strace, wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WARM_SECONDS = {"callgrind": 20, "strace": 3, "cpu": 3, "calls": 5}
"""wrk's warm-up run per mode (valgrind's start-up JIT wants longer)."""


DECLARATIONS = """\
functions:
  hook-async:
    handler: hooks.py:noop
    concurrency: 2
    env: {{BENCH_STAMPS: "{stamps}"}}
    triggers:
      - webhook: {{path: /hooks/async, methods: [POST], mode: async}}
"""


def profiled(argv: list[str]) -> None:
    """`python -m runtime ARGV` with a cProfile in every thread; SIGUSR1 takes a first
    snapshot of the call counts, SIGUSR2 a second one and writes their difference to
    $WEBHOOK_COST_CALLS (JSON: "file:line(function)" -> calls)."""
    import cProfile
    import runpy
    import threading

    profilers: list[cProfile.Profile] = []
    statements: dict[str, int] = {}
    connect = sqlite3.connect

    def count_statement(sql: str) -> None:
        text = " ".join(sql.split())
        text = re.sub(r"'[^']*'|-?\b\d+(\.\d+)?(e-?\d+)?\b", "?", text)
        text = re.sub(r"\(\?(, (\?|NULL))*\)(, \(\?(, (\?|NULL))*\))*", "(...)", text)[:160]
        statements[text] = statements.get(text, 0) + 1

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = connect(*args, **kwargs)
        conn.set_trace_callback(count_statement)
        return conn

    def counts() -> dict[str, int]:
        found = {f"SQL {text}": n for text, n in statements.items()}
        for profiler in list(profilers):
            for entry in profiler.getstats():
                code = entry.code
                label = (code if isinstance(code, str) else
                         f"{code.co_filename}:{code.co_firstlineno}({code.co_name})")
                found[label] = found.get(label, 0) + entry.callcount
        return found

    first: dict[str, int] = {}

    def snapshot(signum: int, frame: object) -> None:
        nonlocal first
        if signum == signal.SIGUSR1:
            first = counts()
            return
        second = counts()
        delta = {k: v - first.get(k, 0) for k, v in second.items() if v != first.get(k, 0)}
        Path(os.environ["WEBHOOK_COST_CALLS"]).write_text(json.dumps(delta))

    def start(*_: object) -> None:
        profiler = cProfile.Profile()
        profilers.append(profiler)
        profiler.enable()  # replaces this hook for the rest of the thread

    sqlite3.connect = traced  # type: ignore[assignment]
    signal.signal(signal.SIGUSR1, snapshot)
    signal.signal(signal.SIGUSR2, snapshot)
    threading.setprofile(start)
    start()
    sys.argv = ["runtime", *argv]
    runpy.run_module("runtime", run_name="__main__", alter_sys=True)


def _wrk(url: str, seconds: int, script: Path) -> int:
    """Requests wrk got a 2xx answer to in `seconds` at the A/B's 32 connections."""
    from bench import wrk

    argv = ["wrk", f"-t{wrk.THREADS}", f"-c{wrk.CONNECTIONS}", f"-d{seconds}s",
            "--timeout", "30s", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120,
                         check=True).stdout
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if total is None or bad or "Socket errors" in out:
        raise SystemExit(f"wrk: {out}")
    return int(total.group(1))


def _callgrind_total(folder: Path) -> int:
    total = 0
    for path in folder.glob("cg.*"):
        found = re.search(r"^totals: (\d+)", path.read_text(errors="replace"), re.MULTILINE)
        total += int(found.group(1)) if found else 0
    return total


def _strace_counts(path: Path) -> dict[str, int]:
    """syscall -> calls, from `strace -c`'s table."""
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
            try:
                counts[fields[-1]] = int(fields[3])
            except ValueError:
                continue
    return counts


def _cpu(pid: int) -> dict[str, float]:
    """utime and stime (s) of the process, and its threads' context switches so far."""
    from bench.procs import CLOCK_TICKS

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    found = {"user": int(fields[11]) / CLOCK_TICKS, "system": int(fields[12]) / CLOCK_TICKS,
             "switches": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:
            continue  # the thread ended
        found["switches"] += sum(int(n) for n in re.findall(r"ctxt_switches:\s+(\d+)", status))
    return found


class Meter:
    """What one mode counts over the window: `begin` at its start, `end` once settled."""

    def __init__(self, mode: str, process: subprocess.Popen[bytes], scratch: Path) -> None:
        self.mode, self.process, self.scratch = mode, process, scratch
        self._tracer: subprocess.Popen[bytes] | None = None
        self._cpu: dict[str, float] = {}

    def begin(self) -> None:
        pid = str(self.process.pid)
        if self.mode == "callgrind":
            subprocess.run(["callgrind_control", "-i", "on", pid], check=True,
                           capture_output=True)
        elif self.mode == "strace":
            self._tracer = subprocess.Popen(
                ["strace", "-c", "-f", "-o", str(self.scratch / "strace.txt"), "-p", pid],
                stderr=subprocess.DEVNULL)
            time.sleep(1)  # attached to every thread
        elif self.mode == "calls":
            self.process.send_signal(signal.SIGUSR1)
        else:
            self._cpu = _cpu(self.process.pid)

    def end(self, requests: int) -> dict[str, object]:
        return getattr(self, f"_end_{self.mode}")(requests)  # type: ignore[no-any-return]

    def _end_callgrind(self, requests: int) -> dict[str, object]:
        for step in (["-i", "off"], ["-d"]):
            subprocess.run(["callgrind_control", *step, str(self.process.pid)], check=True,
                           capture_output=True)
        return {"instructions/request": round(_callgrind_total(self.scratch) / requests)}

    def _end_strace(self, requests: int) -> dict[str, object]:
        assert self._tracer is not None
        self._tracer.send_signal(signal.SIGINT)
        self._tracer.wait(60)
        counts = _strace_counts(self.scratch / "strace.txt")
        return {"syscalls/request": round(sum(counts.values()) / requests, 2),
                "by call": {name: round(n / requests, 3) for name, n in
                            sorted(counts.items(), key=lambda kv: -kv[1])[:12]}}

    def _end_calls(self, requests: int) -> dict[str, object]:
        self.process.send_signal(signal.SIGUSR2)
        while not (self.scratch / "calls").exists():
            time.sleep(0.2)
        time.sleep(0.5)  # written whole
        calls = json.loads((self.scratch / "calls").read_text())
        (self.scratch / "calls.json").write_text(json.dumps(
            {k: round(v / requests, 3) for k, v in calls.items()}, indent=0))
        python = sum(v for k, v in calls.items() if not k.startswith("SQL "))
        return {"calls/request": round(python / requests, 1),
                "statements/request": round((sum(calls.values()) - python) / requests, 2)}

    def _end_cpu(self, requests: int) -> dict[str, object]:
        used = {k: v - self._cpu[k] for k, v in _cpu(self.process.pid).items()}
        return {"cpu us/request": round((used["user"] + used["system"]) / requests * 1e6, 1),
                "system us/request": round(used["system"] / requests * 1e6, 1),
                "switches/request": round(used["switches"] / requests, 3)}

    def close(self) -> None:
        if self._tracer is not None and self._tracer.poll() is None:
            self._tracer.kill()


def _command(mode: str, tree: Path, scratch: Path, project: Path, port: int) -> list[str]:
    from bench import fnrun_app

    run = ["run", "--project", str(project), "--port", str(port), "--store",
           fnrun_app.sqlite_url(project)]
    run = ([sys.executable, __file__, "profiled", *run] if mode == "calls"
           else [sys.executable, "-m", "runtime", *run])
    if mode == "callgrind":
        run = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=no",
               f"--callgrind-out-file={scratch}/cg.%p", *run]
    return run


def measure(tree: Path, scratch: Path, mode: str, seconds: int) -> dict[str, object]:
    """One revision's counts per request in `mode`."""
    import httpx

    from bench import fnrun_app, wrk
    from bench.peers import stamps
    from bench.procs import free_port
    from bench.scenarios.drain import HANDLER

    folder = scratch / "stamps"
    folder.mkdir()
    folder.chmod(0o1777)  # workers of a root supervisor run as nobody
    project = fnrun_app.write_project(scratch / "project", DECLARATIONS.format(stamps=folder),
                                      {"hooks.py": HANDLER})
    project.chmod(0o1777)
    script = scratch / "post.lua"
    script.write_text(wrk.SCRIPT)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tree), "WEBHOOK_COST_CALLS": str(scratch / "calls")}
    with open(scratch / "fnrun.log", "wb") as log:
        process = subprocess.Popen(_command(mode, tree, scratch, project, port), env=env,
                                   cwd=project, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    url = f"http://127.0.0.1:{port}/hooks/async"

    def outstanding() -> int | None:
        if process.poll() is not None:
            raise SystemExit(f"fnrun run exited, see {scratch}/fnrun.log")
        try:
            listing = http.get("/_/functions").json()
        except (httpx.HTTPError, ValueError):
            return None
        entry = fnrun_app._entry(listing, "hook-async")
        counts = entry.get("counts", entry)  # a folder of counts in some revisions
        return int(counts.get("pending", 0)) + int(counts.get("running", 0))

    def settle() -> None:
        # The handlers' stamps until they stop moving, then one look at the API: a
        # poll of GET /_/functions counts the backlog's rows, on the supervisor's bill.
        while True:
            runs = -1
            while runs != (runs := stamps.summary(str(folder))[0]):
                time.sleep(2)
            if outstanding() == 0:
                return

    meter = Meter(mode, process, scratch)
    try:
        while outstanding() is None:
            time.sleep(0.5)
        _wrk(url, WARM_SECONDS[mode], script)
        settle()
        time.sleep(1)
        runs = stamps.summary(str(folder))[0]
        meter.begin()
        answered = _wrk(url, seconds, script)
        settle()
        requests = stamps.summary(str(folder))[0] - runs
        return {"requests": requests, "wrk answered": answered, **meter.end(requests)}
    finally:
        http.close()
        meter.close()
        process.send_signal(signal.SIGTERM)
        process.wait(300)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench/webhook_cost.py", description=__doc__)
    parser.add_argument("revs", nargs="+", metavar="REV")
    parser.add_argument("--mode", choices=["callgrind", "strace", "cpu", "calls"],
                        default="callgrind")
    parser.add_argument("--seconds", type=int, default=30, help="the measured wrk run")
    parser.add_argument("--keep", metavar="DIR", help="copy each callgrind file here")
    args = parser.parse_args(argv)
    needs = {"callgrind": "valgrind", "strace": "strace"}.get(args.mode, "wrk")
    if shutil.which(needs) is None or shutil.which("wrk") is None:
        raise SystemExit(f"{needs} and wrk are needed (apt-get install {needs} wrk)")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.procs import checkout

    with tempfile.TemporaryDirectory(prefix="fnrun-webhook-cost-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        for index, rev in enumerate(args.revs):
            tree, scratch = root / f"tree{index}", root / f"run{index}"
            with checkout(rev, tree):
                scratch.mkdir(mode=0o755)
                result = measure(tree, scratch, args.mode, args.seconds)
                if args.keep:
                    for path in [*scratch.glob("cg.*"), *scratch.glob("calls.json")]:
                        shutil.copy(path, Path(args.keep) / f"{rev}.{path.name}")
            print(json.dumps({"rev": rev, "mode": args.mode, **result}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["profiled"]:
        profiled(sys.argv[2:])
    else:
        main(sys.argv[1:])
