"""Scenarios, cases and results: run each case several times, keep every number.

A scenario is a list of cases, one per system measured (fnrun, a peer, a
baseline). A case's `measure` runs once and returns `{metric: value}`; the
harness repeats it, and turns `NotAvailable` (or any failure) into an
"n/a (reason)" row so one missing part never sinks the whole run.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.procs import REPO

if TYPE_CHECKING:
    from bench.redisdb import Servers

FNRUN = "fnrun"


class NotAvailable(Exception):
    """This case cannot run here (a part of fnrun not landed yet, a tool missing)."""


@dataclass(frozen=True)
class Context:
    """What a case needs to know about this run."""

    quick: bool
    logs: Path
    tmp: Path
    """Parent of every scratch folder; the runner deletes it at the end."""
    servers: Servers | None = None
    """The Redis servers by persistence mode; None where a run uses no Redis (A/B)."""
    drain_events: int = 10_000
    """The backlog of the drain scenarios (--drain-events); --quick takes at most 2,000."""

    def scratch(self, name: str) -> Path:
        """A fresh temporary folder for one measurement, open to every user.

        Workers may run as another user than the benchmark (fnrun drops root to an
        unprivileged user): they must reach the project and write their records.
        """
        folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.tmp))
        folder.chmod(0o777)
        return folder

    def redis(self, mode: str) -> str:
        """The URL of the Redis server that keeps `mode` (see redisdb)."""
        if self.servers is None:
            raise NotAvailable("this run has no Redis")
        return self.servers.url(mode)

    def pick(self, full: float, quick: float) -> float:
        """A size or duration: `full` normally, `quick` under --quick."""
        return quick if self.quick else full


@dataclass(frozen=True)
class Target:
    """An issue's target for one fnrun metric: shown, never asserted."""

    text: str
    met: Callable[[float], bool]


@dataclass(frozen=True)
class Case:
    system: str
    measure: Callable[[Context], dict[str, float]]
    group: str = ""
    """fnrun's ratios compare it only with peers of its group (the same Redis, say); a peer
    may be in several groups, comma-separated."""

    @property
    def is_fnrun(self) -> bool:
        return self.system.startswith(FNRUN)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    cases: list[Case]
    targets: dict[tuple[str, str], Target] = field(default_factory=dict)
    """(system, metric) -> target."""
    notes: str = ""


@dataclass
class Result:
    """Every run of one case: values per metric, or why it could not run."""

    scenario: str
    system: str
    values: dict[str, list[float]] = field(default_factory=dict)
    na: str | None = None
    loads: list[float] = field(default_factory=list)
    """The machine's 1-minute load average before each run: other work skews numbers."""

    def median(self, metric: str) -> float | None:
        runs = self.values.get(metric)
        return statistics.median(runs) if runs else None


def run_cases(scenario: Scenario, cases: list[Case], ctx: Context, runs: int) -> list[Result]:
    """Measure each case `runs` times, interleaved: the first run of every case, then
    the second, and so on, so that a host that slows down or speeds up during the
    scenario skews every system alike instead of the one that ran then. A case stops
    at its first failure and says why."""
    results = [Result(scenario.name, case.system) for case in cases]
    for index in range(runs):
        for case, result in zip(cases, results, strict=True):
            if result.na is None:
                _run_once(scenario, case, ctx, result, index, runs)
    return results


def _run_once(
    scenario: Scenario, case: Case, ctx: Context, result: Result, index: int, runs: int
) -> None:
    started = time.monotonic()
    result.loads.append(os.getloadavg()[0])
    try:
        numbers = case.measure(ctx)
    except NotAvailable as exc:
        result.na = str(exc)
    except Exception as exc:  # noqa: BLE001 - a broken run is reported (its traceback saved)
        log = ctx.logs / f"{scenario.name}-{case.system.replace(' ', '_')}.error.txt"
        log.write_text(traceback.format_exc())
        where = log.relative_to(REPO)
        result.na = f"failed: {type(exc).__name__}: {str(exc)[:160]} (see {where})"
    if result.na:
        result.loads.pop()
        print(f"  {scenario.name} / {case.system}: n/a ({result.na})", flush=True)
        return
    for metric, value in numbers.items():
        result.values.setdefault(metric, []).append(value)
    shown = ", ".join(f"{m}={v:,.4g}" for m, v in numbers.items())
    took = time.monotonic() - started
    print(f"  {scenario.name} / {case.system} run {index + 1}/{runs}: {shown} ({took:.1f}s)",
          flush=True)
