"""Render results as one markdown table (medians, ratios fnrun/peer, targets) and JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import Result, Scenario

HEADER = (
    "| scenario | system | metric | median | runs (min-max) | load | fnrun/peer | target |\n"
    "| --- | --- | --- | ---: | --- | ---: | --- | --- |"
)


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratios(row: Result, metric: str, peers: list[Result]) -> str:
    mine = row.median(metric)
    parts = []
    for peer in peers:
        theirs = peer.median(metric)
        if mine is not None and theirs:
            parts.append(f"{mine / theirs:.2f}x {peer.system}")
    return "; ".join(parts)


def _shares(theirs: str, mine: str) -> bool:
    """Whether two cases' groups meet (a group may name several, comma-separated)."""
    return bool(set(theirs.split(",")) & set(mine.split(",")))


def _rows(scenario: Scenario, results: list[Result]) -> list[str]:
    is_fnrun = {case.system: case.is_fnrun for case in scenario.cases}
    group = {case.system: case.group for case in scenario.cases}
    lines = []
    for row in results:
        if row.na and not row.values:
            lines.append(f"| {scenario.name} | {row.system} | - | n/a ({row.na}) | | | | |")
            continue
        for metric, runs in row.values.items():
            median = row.median(metric)
            assert median is not None
            spread = f"{_fmt(min(runs))}-{_fmt(max(runs))} (n={len(runs)})"
            peers = [r for r in results if not is_fnrun[r.system] and r.values
                     and _shares(group[r.system], group[row.system])]
            ratio = _ratios(row, metric, peers) if is_fnrun[row.system] else ""
            target = scenario.targets.get((row.system, metric))
            goal = f"{target.text} {'met' if target.met(median) else 'NOT met'}" if target else ""
            load = f"{statistics.median(row.loads):.1f}" if row.loads else ""
            lines.append(f"| {scenario.name} | {row.system} | {metric} | {_fmt(median)} | "
                         f"{spread} | {load} | {ratio} | {goal} |")
    return lines


def markdown(done: list[tuple[Scenario, list[Result]]], runs: int, quick: bool) -> str:
    """The results table with a header saying when, where and how it was measured."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "--quick (1 run, short)" if quick else f"{runs} runs per case"
    lines = [
        f"# fnrun benchmark, {when}",
        "",
        f"Machine: {platform.machine()}, {_cores()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}. Mode: {mode}.",
        "",
        "`load` is the median 1-minute load average before each run: above 2 (the core "
        "count), other work on the machine competed with the benchmark.",
        "",
        HEADER,
    ]
    for scenario, results in done:
        lines.extend(_rows(scenario, results))
    notes = [f"- **{s.name}**: {s.notes}" for s, _ in done if s.notes]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def as_json(done: list[tuple[Scenario, list[Result]]], runs: int, quick: bool) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(),
        "cores": _cores(),
        "runs": runs,
        "quick": quick,
        "results": [
            {"scenario": r.scenario, "system": r.system, "na": r.na, "values": r.values,
             "load1": r.loads,
             "medians": {m: r.median(m) for m in r.values}}
            for _, results in done for r in results
        ],
    }


def write(done: list[tuple[Scenario, list[Result]]], runs: int, quick: bool, out: Path) -> str:
    """Write latest.md and latest.json under `out`; return the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(done, runs, quick)
    (out / "latest.md").write_text(text)
    (out / "latest.json").write_text(json.dumps(as_json(done, runs, quick), indent=2))
    return text
