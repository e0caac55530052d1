"""`fnrun logs` and `fnrun trace`: what runs wrote and what an event caused, read
back from the store (SPEC 11). Neither needs the supervisor, nor this machine
to be the one it runs on: both read only the store, which `--follow` polls."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import anyio

from runtime.cli import arguments, views
from runtime.cli.logs import run_line
from runtime.errors import NotFound, UsageError
from runtime.http.records import MAX_LIMIT, log_json
from runtime.store.base import RunRecord, Store
from runtime.tracing import tree

FOLLOW_POLL = 0.5
"""Seconds between two reads of the store while following."""
MIN_PREFIX = 6
"""Fewest characters of an invocation id taken as its prefix (`fnrun dev` shows 8)."""


def cmd_logs(args: argparse.Namespace) -> int:
    settings = arguments.settings(args)
    if args.invocation is not None and args.follow:
        raise UsageError("--follow follows new runs (of --function, or all); "
                         "one invocation is over once it is stored")
    if not 1 <= args.limit <= MAX_LIMIT:
        raise UsageError(f"--limit must be from 1 to {MAX_LIMIT}, got {args.limit}")

    async def work(store: Store | None) -> int:
        if store is None:
            if args.invocation is not None:
                raise NotFound(f"no run {args.invocation!r}: nothing is stored yet")
            if args.follow:
                raise UsageError("nothing is stored yet: start the project (fnrun dev) first")
            return 0
        if args.invocation is not None:
            _show([await find_run(store, args.invocation, args.function)], args)
            return 0
        runs = await store.runs(function=args.function, limit=args.limit)
        if not runs:
            arguments.check_function_name(settings, args.function)
        _show(runs[::-1], args)
        if args.follow:
            await _follow(store, args, max((r.seq for r in runs), default=0))
        return 0

    return arguments.existing_store(args, settings, work)


async def find_run(store: Store, invocation: str, function: str | None) -> RunRecord:
    """The run of an invocation id, or of a unique prefix of one among recent runs.

    Raises:
        NotFound: no such run kept (or no recent one starts so).
        UsageError: the prefix names several runs.
    """
    run = await store.run(invocation)
    if run is not None:
        return run
    if len(invocation) >= MIN_PREFIX:
        recent = await store.runs(function=function, limit=MAX_LIMIT)
        found = [r for r in recent if r.invocation.startswith(invocation)]
        if len(found) > 1:
            names = ", ".join(r.invocation for r in found[:5])
            raise UsageError(f"invocation {invocation!r} is the start of several: {names}")
        if found:
            return found[0]
    raise NotFound(f"no run {invocation!r} (not stored, or past retention)")


async def _follow(store: Store, args: argparse.Namespace, cursor: int) -> None:
    """Print the lines of each run stored after `cursor`, until interrupted."""
    while True:
        await anyio.sleep(FOLLOW_POLL)
        while True:
            fresh = await store.runs(function=args.function, after_seq=cursor, limit=MAX_LIMIT)
            if not fresh:
                break
            fresh.sort(key=lambda r: r.seq)
            _show(fresh, args)
            cursor = fresh[-1].seq
            if len(fresh) < MAX_LIMIT:
                break


def _show(runs: Sequence[RunRecord], args: argparse.Namespace) -> None:
    """Each run's header and lines (or, with --json, one JSON object per log line)."""
    for run in runs:
        if args.json:
            for line in run.logs:
                print(json.dumps({**log_json(line), "function": run.function,
                                  "invocation": run.invocation, "event_id": run.event_id},
                                 ensure_ascii=False))
            continue
        print(views.clean(f"{run.function} {run.invocation}  {run_line(run)}"))
        for line in run.logs:
            print(f"  {_when(line.at, args.utc)} {line.level or line.stream:<7} "
                  f"{views.clean(line.text)}")
    sys.stdout.flush()


def _when(at: float, utc: bool) -> str:
    if utc:
        return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    return datetime.fromtimestamp(at).strftime("%H:%M:%S.%f")[:-3]


def cmd_trace(args: argparse.Namespace) -> int:
    settings = arguments.settings(args)

    async def work(store: Store | None) -> int:
        found: dict[str, Any] | None = await tree.trace(store, args.event) if store else None
        if found is None:
            raise NotFound(f"no event {args.event!r} (not stored, or past retention)")
        if args.json:  # what GET /_/traces/{event} answers
            arguments.print_json(found)
        else:
            for line in tree.lines(found):
                print(views.clean(line))
        return 0

    return arguments.existing_store(args, settings, work)
