"""`bench/run ab REV_A REV_B`: two revisions alternated round by round, on four paths.

A change worth a few percent is lost in this kind of host's run-to-run spread
(about +-25% for the async webhook), so the bench's medians of back-to-back
runs cannot show it. Here every round measures A and B back to back on each
scenario, both seeing the same host, and the side that goes first alternates
(A then B in odd rounds, B then A in even ones), so neither side always
inherits the other's leftovers (a warm page cache, a WAL being checkpointed,
a host slowing down). Scenarios: the async and the sync webhook (wrk: req/s,
p99, the supervisor's own CPU per request), drain (a SQLite backlog, events/s
from the handlers' stamps) and latency (POST /_/events -> handler start at
200 events/s). It prints every run, then per scenario and metric the medians,
the median of the per-round B/A ratios and how many rounds B won. Both
revisions are checked out as detached git worktrees under a temporary folder
and removed at the end; `fnrun run` and the drain's preload load fnrun from
each worktree (PYTHONPATH), the benchmark's code is this checkout's.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.harness import Context
from bench.procs import REPO, checkout
from bench.scenarios import drain, latency, webhook

Measure = Callable[[Context, Path, argparse.Namespace], dict[str, float]]
SCENARIOS: dict[str, Measure] = {
    "webhook-async": lambda ctx, tree, args: webhook.fnrun_webhook(
        ctx, "async", tree, (args.warm, args.seconds)),
    "webhook-sync": lambda ctx, tree, args: webhook.fnrun_webhook(
        ctx, "sync", tree, (args.warm, args.seconds)),
    "drain": lambda ctx, tree, args: drain.fnrun_drain(ctx, tree),
    "latency": lambda ctx, tree, args: latency.fnrun_latency(ctx, tree, args.seconds),
}
HIGHER_IS_BETTER = {"req/s": True, "events/s": True}
"""Every other metric (ms, us per request) is better lower."""
Runs = dict[str, dict[str, list[dict[str, float] | None]]]
"""scenario -> side ("A", "B") -> one {metric: value} per round, None where it failed."""
LOGS = REPO / "bench" / "results" / "logs"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run ab", description=__doc__.splitlines()[0])
    parser.add_argument("a", metavar="REV_A", help="the baseline (a commit, tag or branch)")
    parser.add_argument("b", metavar="REV_B", help="the candidate")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    parser.add_argument("--scenario", nargs="+", choices=list(SCENARIOS), metavar="NAME",
                        help=f"scenarios to run (default all: {', '.join(SCENARIOS)})")
    parser.add_argument("--seconds", type=float, default=10,
                        help="measured wrk run, and the latency run's sending time "
                             "(default 10; latency reports a p99 from 5 s up)")
    parser.add_argument("--warm", type=float, default=2, help="wrk warm-up (default 2)")
    parser.add_argument("--drain-events", type=int, default=30_000, metavar="N",
                        help="drain backlog (default 30,000: about 1 s at 30,000/s)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds < 1 or args.drain_events < 100:
        parser.error("--rounds >= 1, --seconds >= 1 and --drain-events >= 100")
    return args


def order(index: int) -> tuple[str, str]:
    """Which side runs first in round `index` (0-based): A,B then B,A, and so on."""
    return ("A", "B") if index % 2 == 0 else ("B", "A")


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    names = args.scenario or list(SCENARIOS)
    with tempfile.TemporaryDirectory(prefix="fnrun-ab-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # workers may run as another user: they must reach their projects
        ctx = Context(quick=False, logs=LOGS, tmp=root, drain_events=args.drain_events)
        runs: Runs = {name: {"A": [], "B": []} for name in names}
        with contextlib.ExitStack() as trees_kept:
            trees = {label: trees_kept.enter_context(checkout(rev, root / label))
                     for label, rev in (("A", args.a), ("B", args.b))}
            for index in range(args.rounds):
                for name in names:
                    for label in order(index):
                        runs[name][label].append(measure(ctx, name, trees[label], args,
                                                         f"{index + 1}/{args.rounds}", label))
    print(f"\n{args.rounds} rounds, A = {args.a}, B = {args.b}; B/A per round is the median "
          "of each round's B/A (A and B of a round ran back to back):")
    for name in names:
        report(name, runs[name])


def measure(ctx: Context, name: str, tree: Path, args: argparse.Namespace, round_: str,
            label: str) -> dict[str, float] | None:
    """One run, printed; None if it failed (that round then counts for neither side)."""
    try:
        numbers = SCENARIOS[name](ctx, tree, args)
    except Exception as exc:  # noqa: BLE001 - printed; one broken run must not lose the others
        print(f"  round {round_} {name} {label}: failed: {type(exc).__name__}: {exc}",
              flush=True)
        return None
    shown = ", ".join(f"{m}={v:,.4g}" for m, v in numbers.items())
    print(f"  round {round_} {name} {label}: {shown}", flush=True)
    return numbers


def report(name: str, runs: dict[str, list[dict[str, float] | None]]) -> None:
    """One line per metric: medians, the median per-round B/A, rounds B won; only the
    rounds where both sides ran count."""
    pairs = [(x, y) for x, y in zip(runs["A"], runs["B"], strict=True) if x and y]
    if not pairs:
        print(f"  {name}: no round where both sides ran")
        return
    for metric in pairs[0][0]:
        a = [x[metric] for x, _ in pairs]
        b = [y[metric] for _, y in pairs]
        higher = HIGHER_IS_BETTER.get(metric, False)
        wins = sum((y > x) if higher else (y < x) for x, y in zip(a, b, strict=True))
        # A and B of one round ran back to back: their ratio is what a host
        # drifting over minutes (often +-40% here) disturbs least.
        paired = statistics.median(y / x for x, y in zip(a, b, strict=True))
        better = "higher" if higher else "lower"
        print(f"  {name} {metric} ({better} is better): A {statistics.median(a):,.4g}, "
              f"B {statistics.median(b):,.4g}; B/A per round {paired:.3f}; "
              f"B better in {wins} of {len(a)} rounds")
    if len(pairs) < len(runs["A"]):
        print(f"  {name}: {len(runs['A']) - len(pairs)} rounds failed and are left out")


if __name__ == "__main__":
    main()
