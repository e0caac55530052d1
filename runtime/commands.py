"""The `fnrun` commands. Each takes parsed arguments and returns an exit code.

User mistakes raise `UsageError` (or `ManifestErrors`); the CLI turns those
into one line and an exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from runtime import logs, plugins, views
from runtime.cli import read_data
from runtime.errors import UsageError
from runtime.events import Event, Outcome
from runtime.manifest import load_project, load_settings
from runtime.specs import FunctionSpec, Project, Settings
from runtime.store.base import Store
from runtime.units import parse_since
from runtime.views import MAX_LIMIT, dead_letter_json, invocation_json, iso

Command = Callable[[argparse.Namespace], int]


def run_command(args: argparse.Namespace) -> int:
    return COMMANDS[args.command](args)


# -- shared pieces -------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        Path(args.project),
        functions=args.functions,
        store=args.store,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
    )


def _project(args: argparse.Namespace) -> Project:
    return load_project(_settings(args))


def _function(project: Project, name: str) -> FunctionSpec:
    if name not in project.functions:
        known = ", ".join(sorted(project.functions)) or "none"
        raise UsageError(f"no such function {name!r} (known: {known})")
    return project.functions[name]


def _check_type(what: str, value: str) -> None:
    """An event type as `ctx.emit` and `POST /_/events` take one (SPEC 4)."""
    from runtime.cloudevents import check_type  # imports the worker's rule: only when needed

    if not value.strip():  # CloudEvents requires a non-empty type
        raise UsageError(f"{what} must not be empty")
    check_type(what, value)


def _check_id(value: str) -> None:
    """An event id as `ctx.emit` and `POST /_/events` take one, and not blank."""
    from runtime.cloudevents import check_id

    if not value.strip():
        raise UsageError("--id must not be empty")
    check_id("--id", value)


def _with_store(settings: Settings, work: Callable[[Store], Awaitable[int]]) -> int:
    async def main() -> int:
        async with plugins.store_for(settings.store) as store:
            return await work(store)

    return anyio.run(main)


def _existing_store(
    args: argparse.Namespace, settings: Settings, work: Callable[[Store | None], Awaitable[int]]
) -> int:
    """`work` on a store that already exists: a command that reads creates none.

    The project's own store not made yet (nothing stored, nothing to show)
    gives `work` None; one that --store or FNRUN_STORE names and is not
    there is one line: a typo made folders and an empty database.
    """
    missing = plugins.missing_file(settings.store)
    if missing is None:
        return _with_store(settings, work)
    if args.store is None and not os.environ.get("FNRUN_STORE"):
        return anyio.run(work, None)
    given = "--store" if args.store is not None else "FNRUN_STORE"
    raise UsageError(f"{given}: no store at {missing} (fnrun emit or fnrun run creates it)")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


# -- run -----------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from runtime.supervisor import Supervisor

    if not (math.isfinite(args.grace) and args.grace >= 0):
        raise UsageError(f"--grace must be 0 or more seconds, got {args.grace:g}")
    settings = _settings(args)
    human = args.command == "dev"
    logs.configure(human=human)
    supervisor = Supervisor(
        settings, grace=args.grace, reload=human or args.reload, freeze_heap=True
    )
    anyio.run(supervisor.run, backend_options={"use_uvloop": True})
    return 0


# -- invoke, emit --------------------------------------------------------------


def cmd_invoke(args: argparse.Namespace) -> int:
    from runtime.pool import WorkerPool

    _check_type("--type", args.type)
    project = _project(args)
    spec = _function(project, args.name)
    data = read_data(args.data, project.settings.http.max_body)
    event = Event(type=args.type, data=data, source="fnrun/invoke")
    logs.configure()

    stopped_by: list[int] = []

    async def main() -> Outcome | None:
        pool = WorkerPool(spec, log=logging.getLogger(f"fnrun.fn.{spec.name}"))
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(_cancel_on_signal, group.cancel_scope, stopped_by)
                outcome = await pool.invoke(event, 1)
                group.cancel_scope.cancel()
                return outcome
            return None  # a signal cancelled the invocation
        finally:
            await pool.aclose(grace=0)  # kills the worker's process group too

    outcome = anyio.run(main)
    if outcome is None:
        return 128 + stopped_by[0]  # as a shell reports a command killed by that signal
    if not outcome.ok:
        print(outcome.traceback or outcome.error or outcome.status, file=sys.stderr)
        return 1
    _print_json(views.plain_result(outcome.result))
    return 0


async def _cancel_on_signal(scope: anyio.CancelScope, received: list[int]) -> None:
    """SIGTERM or SIGHUP (`timeout`, a closed terminal): record it and stop the invocation.

    Workers run in their own process groups, so without this they would
    outlive the command. SIGINT already arrives as KeyboardInterrupt.
    """
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            received.append(signum)
            scope.cancel()
            return


def cmd_emit(args: argparse.Namespace) -> int:
    _check_type("event type", args.type)
    if args.id is not None:
        _check_id(args.id)
    project = _project(args)
    kwargs: dict[str, Any] = {"id": args.id} if args.id is not None else {}
    data = read_data(args.data, project.settings.http.max_body)
    event = Event(type=args.type, data=data, subject=args.subject, source="fnrun/cli", **kwargs)
    router = plugins.load(f"{plugins.TRIGGERS['event']}:Router")(project)

    async def work(store: Store) -> int:
        [new] = await store.publish([(event, router.targets(event.type))])
        print(event.id)
        if not new:  # a retry of the same emit is fine; a reused id by mistake is silent
            print(f"fnrun: event {event.id!r} was already stored; nothing new was published",
                  file=sys.stderr)
        return 0

    return _with_store(project.settings, work)


# -- inspection ----------------------------------------------------------------


def cmd_ls(args: argparse.Namespace) -> int:
    from runtime import listing

    project = _project(args)
    http, token = project.settings.http, os.environ.get("FNRUN_TOKEN") or None
    live, note = listing.live_functions(http, token)
    if note:
        print(f"fnrun: {note}", file=sys.stderr)

    async def work(store: Store | None) -> int:
        now = datetime.now().timestamp()
        counts = await store.counts() if store else {}
        functions = listing.describe_functions(project, counts, now)
        if live is not None:
            functions = listing.with_live(functions, live)
        if args.json:
            _print_json(functions)
            return 0
        views.print_functions(functions)
        answered = live is not None or note is not None  # no second wait on a silent port
        pending = listing.reload_error(http, token) if answered else None
        if pending:
            print("\nthe running supervisor keeps its last good version; its reload failed:")
            print(pending)
        return 0

    return _existing_store(args, project.settings, work)


def cmd_validate(args: argparse.Namespace) -> int:
    project = _project(args)
    count = len(project.functions)
    print(f"ok: {count} function{'s' if count != 1 else ''} in {project.settings.functions}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not 1 <= args.limit <= MAX_LIMIT:
        raise UsageError(f"--limit must be from 1 to {MAX_LIMIT}, got {args.limit}")

    async def work(store: Store | None) -> int:
        found = await store.history(args.function, args.limit) if store else []
        records = [invocation_json(r) for r in found]
        if not records:
            _check_function_name(settings, args.function)
        if args.json:
            _print_json(records)
            return 0
        views.print_history(records)
        return 0

    return _existing_store(args, settings, work)


# -- dead letters, replay --------------------------------------------------------


def cmd_dead_letters(args: argparse.Namespace) -> int:
    settings = _settings(args)
    ids = args.ids or None
    if args.action != "list" and not (ids or args.all or args.function):
        raise UsageError(f"dead-letters {args.action} needs IDs, --all or --function")
    if ids and args.all:
        raise UsageError("give IDs or --all, not both")

    async def work(store: Store | None) -> int:
        if ids:
            await _check_dead_letter_ids(store, args.function, ids)
        if args.action == "list":
            found = await store.dead_letters(args.function, ids) if store else []
            letters = [dead_letter_json(d) for d in found]
            if not letters:
                _check_function_name(settings, args.function)
            if args.json:
                _print_json(letters)
            else:
                views.print_dead_letters(letters)
            return 0
        if store is None:
            count = 0
        elif args.action == "replay":
            count = await store.replay_dead(datetime.now().timestamp(), args.function, ids)
        else:
            count = await store.drop_dead(args.function, ids)
        if not count:
            _check_function_name(settings, args.function)
        verb = "replayed" if args.action == "replay" else "dropped"
        print(json.dumps({verb: count}) if args.json else f"{verb} {count} dead letter(s)")
        return 0

    return _existing_store(args, settings, work)


async def _check_dead_letter_ids(
    store: Store | None, function: str | None, ids: list[str]
) -> None:
    """Every ID given names a dead letter (of `function`), else nothing is done."""
    letters = await store.dead_letters(function, ids, limit=len(ids)) if store else []
    found = {d.id for d in letters}
    missing = [i for i in dict.fromkeys(ids) if i not in found]
    if missing:
        of = f" of function {function!r}" if function else ""
        raise UsageError(f"no such dead letter{of}: {', '.join(missing)}")


def _check_function_name(settings: Settings, name: str | None) -> None:
    """A --function filter that matched nothing must at least name a declared function.

    Records of a removed function stay listable: only a name the project does
    not know *and* that matched nothing is a mistake (a typo, most likely).
    Said only when the project loads cleanly, so a broken file cannot hide one.
    """
    if name is None:
        return
    from runtime.manifest import scan_project

    scan = scan_project(settings)
    if not scan.errors and name not in scan.project.functions:
        _function(scan.project, name)


def cmd_replay(args: argparse.Namespace) -> int:
    project = _project(args)
    _function(project, args.function)
    now = datetime.now().timestamp()
    try:
        since = parse_since(args.since, now)
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None
    event_module = plugins.load(plugins.TRIGGERS["event"])
    problem = None if args.type is None else event_module.check_pattern(args.type)
    if problem:
        raise UsageError(f"--type: {problem}")
    # By default only what the function subscribes to, as an EventBridge archive
    # replays through the rule's pattern: not every retained event of every type.
    patterns = [args.type] if args.type is not None else [
        p for name, p in event_module.patterns_of(project) if name == args.function
    ]
    if not patterns:
        raise UsageError(f"function {args.function!r} has no event triggers; "
                         "say which events to replay with --type PATTERN")

    def matches(event_type: str) -> bool:
        return any(event_module.matches(p, event_type) for p in patterns)

    async def work(store: Store | None) -> int:
        count = await store.replay(args.function, since, matches, now) if store else 0
        print(f"replaying {count} event(s) to {args.function} (since {iso(since)})")
        return 0

    return _existing_store(args, project.settings, work)


# -- new -------------------------------------------------------------------------


def cmd_new(args: argparse.Namespace) -> int:
    from runtime.scaffold import scaffold

    settings = _settings(args)
    for path in scaffold(settings, args.name, args.event, args.cron, args.webhook):
        print(f"created {path}")
    return 0


COMMANDS: dict[str, Command] = {
    "run": cmd_run,
    "dev": cmd_run,
    "invoke": cmd_invoke,
    "emit": cmd_emit,
    "ls": cmd_ls,
    "validate": cmd_validate,
    "history": cmd_history,
    "dead-letters": cmd_dead_letters,
    "replay": cmd_replay,
    "new": cmd_new,
}
