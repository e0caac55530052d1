"""`python -m bench [--quick] [--runs N] [--only NAME ...]`: run scenarios, write the table.

Use `bench/run`, which first prepares bench/.env (peers + fnrun) and wrk.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import redis

from bench import redisdb
from bench.harness import Context, Result, Scenario, run_cases
from bench.procs import REPO
from bench.report import write

SCENARIOS = ["drain", "latency", "coldstart", "webhook", "schedules", "reload", "redis_scale",
             "redis_durable", "brokers", "brokers_sinks", "brokers_memory", "dashboard", "flow"]
RESULTS = REPO / "bench" / "results"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short run per case")
    parser.add_argument("--runs", type=int, default=5, help="runs per case (default 5)")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, metavar="NAME",
                        help=f"scenarios to run (default all: {', '.join(SCENARIOS)})")
    parser.add_argument("--system", nargs="+", metavar="PREFIX",
                        help="only cases whose system starts with one of these")
    parser.add_argument("--keep", action="store_true",
                        help="fill cases not run now from the previous bench/results/latest.json")
    parser.add_argument("--drain-events", type=int, default=10_000, metavar="N",
                        help="backlog of the drain scenarios (default 10,000; --quick: 2,000)")
    parser.add_argument("--redis", metavar="URL",
                        help="a Redis database of your own, flushed, for the cases whose Redis "
                             "keeps nothing (default: a private redis-server per run)")
    args = parser.parse_args(argv)
    if args.drain_events < 100:
        parser.error("--drain-events: at least 100")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.redis:
        check_redis(args.redis)
    runs = 1 if args.quick else args.runs
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="fnrun-bench-"))
    tmp.chmod(0o755)  # workers may run as another user: they must reach their projects
    servers = redisdb.Servers(tmp, logs, args.redis)
    ctx = Context(quick=args.quick, logs=logs, tmp=tmp, servers=servers,
                  drain_events=args.drain_events)
    try:
        kept = previous(RESULTS / "latest.json") if args.keep else {}
        names = SCENARIOS if args.keep else args.only or SCENARIOS
        done = run_all(ctx, names, args, runs, kept)
    finally:
        servers.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(write(done, runs, args.quick, RESULTS))
    print(f"written: {Path(RESULTS / 'latest.md').relative_to(REPO)} and latest.json")


def check_redis(url: str) -> None:
    """Refuse a --redis that is database 0 or keeps data: its figures say it keeps nothing."""
    if url.rstrip("/").endswith(("/0", ":6379")):
        raise SystemExit("bench: refusing to flush Redis database 0; pass another with --redis")
    try:
        redisdb.client(url).ping()
    except redis.RedisError as exc:
        raise SystemExit(f"bench: --redis {url}: {exc}") from exc
    kept = redisdb.describe(url)
    if kept != redisdb.LABELS[redisdb.NOTHING]:
        raise SystemExit(f"bench: --redis {url}: {kept}; the figures it gives say 'Redis keeps "
                         'nothing\': start it with --save "" --appendonly no')


def previous(path: Path) -> dict[tuple[str, str], Result]:
    """Results of the last run by (scenario, system), for --keep."""
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())["results"]
    return {(r["scenario"], r["system"]): Result(r["scenario"], r["system"], r["values"], r["na"],
                                                 r.get("load1", [])) for r in rows}


def selected(args: argparse.Namespace, scenario: str, system: str) -> bool:
    """Whether this run measures `system` of `scenario` (--only, --system)."""
    if args.only and scenario not in args.only:
        return False
    return not args.system or system.startswith(tuple(args.system))


def run_all(ctx: Context, names: list[str], args: argparse.Namespace, runs: int,
            kept: dict[tuple[str, str], Result]) -> list[tuple[Scenario, list[Result]]]:
    """Run each selected case, or take it from `kept`; rewrite the results after each scenario."""
    done: list[tuple[Scenario, list[Result]]] = []
    for name in names:
        scenario: Scenario = importlib.import_module(f"bench.scenarios.{name}").SCENARIO
        print(f"== {scenario.name}: {scenario.title}", flush=True)
        started = time.monotonic()
        chosen = [case for case in scenario.cases if selected(args, name, case.system)]
        measured = {r.system: r for r in run_cases(scenario, chosen, ctx, runs)}
        results = [
            measured.get(case.system) or kept[(name, case.system)]
            for case in scenario.cases
            if case.system in measured or (name, case.system) in kept
        ]
        done.append((scenario, results))
        print(f"   ({time.monotonic() - started:.0f}s)", flush=True)
        write(done, runs, ctx.quick, RESULTS)
    return done


if __name__ == "__main__":
    main()
