"""`bench/run ab REV_A REV_B`: the webhook path of two revisions, alternated round by round.

A change worth a few percent is lost in this kind of host's run-to-run spread
(about +-25% for the async webhook), so the bench's medians of back-to-back
runs cannot show it. Here each round runs A, then B, on the same project
(`scenarios/webhook.py`'s), so both see the same host; it prints each run's
req/s, p99 and the supervisor's own CPU per request (from /proc, its children
excluded), then the medians and how many rounds B won. Both revisions are
checked out as detached git worktrees under a temporary folder and removed
at the end; `fnrun run` loads each from its worktree (PYTHONPATH).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench import fnrun_app, wrk
from bench.harness import Context
from bench.procs import REPO, cpu_seconds
from bench.scenarios.webhook import DECLARATIONS, HANDLER


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run ab", description=__doc__.splitlines()[0])
    parser.add_argument("a", metavar="REV_A", help="the baseline (a commit, tag or branch)")
    parser.add_argument("b", metavar="REV_B", help="the candidate")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    parser.add_argument("--mode", choices=("async", "sync"), default="async")
    parser.add_argument("--seconds", type=float, default=10, help="measured wrk run (default 10)")
    return parser.parse_args(argv)


def measure(ctx: Context, tree: Path, mode: str, seconds: float) -> dict[str, float]:
    """One `fnrun run` of `tree`: wrk for 2 s to warm up, then `seconds` measured."""
    project = fnrun_app.write_project(ctx.scratch("ab"), DECLARATIONS, {"hooks.py": HANDLER})
    supervisor = fnrun_app.Supervisor(ctx, project, fnrun_app.sqlite_url(project),
                                      name=f"ab-{tree.name}", tree=tree)
    try:
        supervisor.wait_ready()
        url = f"{supervisor.base}/hooks/{mode}"
        wrk.load(url, 2, ctx.tmp)
        before = cpu_seconds(supervisor.pid)
        numbers = wrk.load(url, seconds, ctx.tmp)
        used = cpu_seconds(supervisor.pid) - before
        numbers["cpu us/req"] = used / (numbers["req/s"] * seconds) * 1e6
        return numbers
    finally:
        supervisor.stop()


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="fnrun-ab-") as tmp:
        root = Path(tmp)
        ctx = Context(quick=False, logs=root / "logs", tmp=root)
        trees = {"A": root / "A", "B": root / "B"}
        for label, rev in (("A", args.a), ("B", args.b)):
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q",
                            str(trees[label]), rev], check=True)
        runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
        try:
            for index in range(args.rounds):
                for label, tree in trees.items():
                    numbers = measure(ctx, tree, args.mode, args.seconds)
                    runs[label].append(numbers)
                    shown = ", ".join(f"{m}={v:,.4g}" for m, v in numbers.items())
                    print(f"  round {index + 1}/{args.rounds} {label}: {shown}", flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                str(tree)], check=False)
        report(args, runs)


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, float]]]) -> None:
    print(f"{args.mode} webhook, {args.rounds} rounds, medians (A = {args.a}, B = {args.b}):")
    for metric, higher_is_better in (("req/s", True), ("p99 ms", False), ("cpu us/req", False)):
        a = [run[metric] for run in runs["A"]]
        b = [run[metric] for run in runs["B"]]
        wins = sum((y > x) == higher_is_better for x, y in zip(a, b, strict=True))
        ratio = statistics.median(b) / statistics.median(a)
        # A and B of one round ran back to back: their ratio is what a host
        # drifting over minutes (often +-40% here) disturbs least.
        paired = statistics.median(y / x for x, y in zip(a, b, strict=True))
        print(f"  {metric}: A {statistics.median(a):,.4g}, B {statistics.median(b):,.4g}"
              f" (B/A {ratio:.2f}, per round {paired:.2f}; B better in {wins} of {len(a)}"
              " rounds)")


if __name__ == "__main__":
    main()
