"""Instructions per drained event, supervisor and worker, for revisions side by side.

    python bench/instructions.py [--events N] REV [REV ...]

Wall-clock A/B runs of the drain could not place a 7% cost on a shared host
(bench/README.md, "Drain cost of issue 17, placed"). Instruction counts do
not move with the host's load, so this counts them with valgrind's callgrind,
per process, for each revision checked out in a detached worktree:

- supervisor: `fnrun run` on a SQLite store under callgrind, instrumented
  only from the moment it is ready (plus 3 s) until N events published
  then have run and been settled (`callgrind_control -i on/off`); the
  instructions of every thread, divided by N. Its dispatcher's batching is
  pinned to what a native drain uses (batches of MAX_BATCH, prefetch
  MAX_PREFETCH): under valgrind the supervisor is ~50x slower, sees long
  invocations and would otherwise claim and batch in small steps, which
  no native drain does. Workers run natively.
- worker: `runtime.worker.child.main` of the revision under callgrind, fed batches
  of 64 no-op invocations by a native process over its socket, run for
  2,000 and for N + 2,000 invocations; the difference of the two counts of
  the process that serves (a revision with a guard has two) divided by N.

Both use the drain scenario's stamping no-op. The interpreter is this one
(`sys.executable`) for every revision, fnrun's code is the revision's
(PYTHONPATH). Needs valgrind (apt-get install valgrind). A revision takes
about 3 minutes on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 64
"""Invocations per batch fed to the worker (the dispatcher's MAX_BATCH)."""
BASE = 2_000
"""Invocations of the worker's baseline run (its start and end cancel out)."""


def pinned(argv: list[str]) -> None:
    """`python -m runtime` with the dispatcher's batching pinned to a native drain's."""
    import runpy

    from runtime.delivery import dispatcher

    size = dispatcher.batch_size
    dispatcher.batch_size = lambda mean, buffered, runners, *rest: size(  # (rest: pipelined)
        1e-6, buffered, runners, *rest)
    dispatcher.Dispatcher._prefetch = lambda self: dispatcher.MAX_PREFETCH  # type: ignore
    sys.argv = ["runtime", *argv]
    runpy.run_module("runtime", run_name="__main__", alter_sys=True)


def serve(argv: list[str]) -> None:
    """In callgrind: become a worker of the no-op in `folder`, fed by a native `feed`."""
    count, lifeline, folder = int(argv[0]), int(argv[1]), argv[2]
    ours, theirs = socket.socketpair()
    subprocess.Popen([sys.executable, __file__, "feed", str(ours.fileno()), str(count)],
                     pass_fds=[ours.fileno()])
    ours.close()
    os.environ["BENCH_STAMPS"] = folder
    from runtime.worker import child as worker

    worker.main([f"proto={theirs.fileno()}", f"lifeline={lifeline}",
                 f"file={folder}/noop.py", "attr=noop", "function=noop"])


def feed(argv: list[str]) -> None:
    """Send `count` no-op invocations in batches of `BATCH`, reading every answer."""
    from runtime.worker import protocol

    fd, count = int(argv[0]), int(argv[1])
    if protocol.read_frame(fd) != {"kind": "ready"}:
        raise SystemExit("feed: the worker did not load the no-op")
    event = {"type": "bench.noop", "source": "bench", "specversion": "1.0",
             "time": "2026-01-01T00:00:00+00:00", "data": None}
    for start in range(0, count, BATCH):
        items = [{"event": {**event, "id": f"e{i}"}, "attempt": 1, "invocation": f"{i:012x}"}
                 for i in range(start, min(count, start + BATCH))]
        protocol.write_frame(fd, {"kind": "invoke", "function": "noop", "timeout": 30.0,
                                  "items": items})
        for _ in items:
            done = protocol.read_frame(fd)
            if not done or not done.get("ok"):
                raise SystemExit(f"feed: {done}")


def _totals(folder: Path) -> dict[int, int]:
    """pid -> instructions of each callgrind output in `folder` (parts summed)."""
    found: dict[int, int] = {}
    for path in folder.glob("cg.*"):
        pid = int(path.name.split(".")[1])
        match = re.search(r"^totals: (\d+)", path.read_text(errors="replace"), re.MULTILINE)
        found[pid] = found.get(pid, 0) + (int(match.group(1)) if match else 0)
    return found


def worker_count(tree: Path, scratch: Path, count: int) -> int:
    """Instructions of the worker process that served `count` invocations."""
    from bench.scenarios.drain import HANDLER

    out = scratch / f"worker-{count}"
    out.mkdir(parents=True)
    (out / "noop.py").write_text(HANDLER)
    read, write = os.pipe()  # the lifeline: open until the worker has finished
    argv = ["valgrind", "--tool=callgrind", "--trace-children=no",
            f"--callgrind-out-file={out}/cg.%p", sys.executable, __file__, "serve",
            str(count), str(read), str(out)]
    subprocess.run(argv, pass_fds=[read], env={**os.environ, "PYTHONPATH": str(tree)},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    os.close(read)
    os.close(write)
    return max(_totals(out).values())  # the runner, not its guard


def supervisor_count(tree: Path, scratch: Path, count: int) -> int:
    """Instructions of `fnrun run` while it drains `count` events."""
    import httpx

    from bench import fnrun_app
    from bench.peers import stamps
    from bench.procs import free_port
    from bench.scenarios.drain import DECLARATIONS, HANDLER

    out = scratch / "supervisor"
    folder = out / "stamps"
    folder.mkdir(parents=True)
    folder.chmod(0o1777)  # workers of a root supervisor run as nobody
    project = fnrun_app.write_project(out / "project", DECLARATIONS.format(stamps=folder),
                                      {"noop.py": HANDLER})
    project.chmod(0o1777)
    url, port = fnrun_app.sqlite_url(project), free_port()
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=no",
            f"--callgrind-out-file={out}/cg.%p", sys.executable, __file__, "pinned", "run",
            "--project", str(project), "--port", str(port), "--store", url]
    with open(out / "fnrun.log", "wb") as log:
        process = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(tree)},
                                   cwd=project, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

    def answer(path: str) -> object:
        if process.poll() is not None:
            raise SystemExit(f"fnrun run exited, see {out}/fnrun.log")
        try:
            response = http.get(path)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def outstanding() -> int | None:
        listing = answer("/_/functions")
        if listing is None:
            return None
        counts = fnrun_app._entry(listing, "noop").get("counts", {})
        return int(counts.get("pending", 0)) + int(counts.get("running", 0))

    def instrument(state: str) -> None:
        subprocess.run(["callgrind_control", "-i", state, str(process.pid)], check=True,
                       capture_output=True)

    try:
        while answer("/_/health") is None:
            time.sleep(0.5)
        time.sleep(3)  # the start's own work (workers warming, first idle polls) is done
        instrument("on")
        fnrun_app.preload(url, "bench.noop", ["noop"], count, tree)
        while stamps.summary(str(folder))[0] < count:
            time.sleep(0.5)
        while outstanding() != 0:  # the outcomes too are written
            time.sleep(1)
        instrument("off")
        subprocess.run(["callgrind_control", "-d", str(process.pid)], check=True,
                       capture_output=True)
    finally:
        http.close()
        process.send_signal(signal.SIGTERM)
        process.wait(300)
    return sum(_totals(out).values())


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench/instructions.py", description=__doc__)
    parser.add_argument("revs", nargs="+", metavar="REV")
    parser.add_argument("--events", type=int, default=10_000, metavar="N")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.procs import checkout

    with tempfile.TemporaryDirectory(prefix="fnrun-instructions-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        for index, rev in enumerate(args.revs):
            tree, scratch = root / f"tree{index}", root / f"run{index}"
            with checkout(rev, tree):
                scratch.mkdir(mode=0o755)
                supervisor = supervisor_count(tree, scratch, args.events)
                base = worker_count(tree, scratch, BASE)
                worker = worker_count(tree, scratch, BASE + args.events) - base
            print(json.dumps({"rev": rev, "events": args.events,
                              "supervisor/event": round(supervisor / args.events),
                              "worker/event": round(worker / args.events)}), flush=True)


if __name__ == "__main__":
    roles = {"pinned": pinned, "serve": serve, "feed": feed}
    if len(sys.argv) > 1 and sys.argv[1] in roles:
        roles[sys.argv[1]](sys.argv[2:])
    else:
        main(sys.argv[1:])
