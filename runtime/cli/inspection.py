"""The commands that read what was stored and deliver it again: `history`,
`dead-letters` and `replay`. None of them creates a store (see
`arguments.existing_store`)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from runtime import plugins
from runtime.cli import arguments, views
from runtime.errors import UsageError
from runtime.http.records import MAX_LIMIT, dead_letter_json, invocation_json, iso
from runtime.store.base import Store
from runtime.units import parse_since


def cmd_history(args: argparse.Namespace) -> int:
    settings = arguments.settings(args)
    if not 1 <= args.limit <= MAX_LIMIT:
        raise UsageError(f"--limit must be from 1 to {MAX_LIMIT}, got {args.limit}")
    filters = run_filters(args)

    async def work(store: Store | None) -> int:
        found = await store.runs(**filters, limit=args.limit) if store else []
        if not found:
            arguments.check_function_name(settings, args.function)
        if args.json:  # what GET /_/invocations answers, in its order
            arguments.print_json([invocation_json(r) for r in found])
            return 0
        views.print_history(found, utc=args.utc, width=views.output_width())
        return 0

    return arguments.existing_store(args, settings, work)


def run_filters(args: argparse.Namespace) -> dict[str, Any]:
    """`Store.runs` filters of `--function`, `--status`, `--type`, `--event`, `--since`.

    Raises:
        UsageError: a --type that is no pattern, a --since that is no time.
    """
    filters: dict[str, Any] = {"function": args.function}
    for name, key in (("status", "status"), ("type", "event_type"), ("event", "event_id")):
        filters[key] = getattr(args, name, None)
    if filters["event_type"] is not None:
        problem = plugins.load(plugins.TRIGGERS["event"]).check_pattern(filters["event_type"])
        if problem:
            raise UsageError(f"--type: {problem}")
    if getattr(args, "since", None) is not None:
        try:
            filters["since"] = parse_since(args.since, datetime.now().timestamp())
        except ValueError as exc:
            raise UsageError(f"--since: {exc}") from None
    return filters


def cmd_dead_letters(args: argparse.Namespace) -> int:
    settings = arguments.settings(args)
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
                arguments.check_function_name(settings, args.function)
            if args.json:
                arguments.print_json(letters)
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
            arguments.check_function_name(settings, args.function)
        verb = "replayed" if args.action == "replay" else "dropped"
        print(json.dumps({verb: count}) if args.json else f"{verb} {count} dead letter(s)")
        return 0

    return arguments.existing_store(args, settings, work)


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


def cmd_replay(args: argparse.Namespace) -> int:
    project = arguments.project(args)
    arguments.function(project, args.function)
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
    # A store not there yet holds nothing to replay (or is named wrongly): no question.
    asks = args.since is None and not args.all and not plugins.missing_file(project.settings.store)
    if asks and not _confirmed(args.function, patterns):
        print("nothing replayed", file=sys.stderr)
        return 1

    def matches(event_type: str) -> bool:
        return any(event_module.matches(p, event_type) for p in patterns)

    async def work(store: Store | None) -> int:
        count = await store.replay(args.function, since, matches, now) if store else 0
        print(f"replaying {count} event(s) to {args.function} (since {iso(since)})")
        return 0

    return arguments.existing_store(args, project.settings, work)


def _confirmed(function: str, patterns: list[str]) -> bool:
    """Replaying everything retained, asked for without --all: ask on a terminal.

    Without one (a script, a pipe) there is no one to ask, so it is refused:
    a forgotten --since re-ran a week of events.

    Raises:
        UsageError: not on a terminal.
    """
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(f"replay --function {function} without --since delivers every "
                         "retained event again: add --all to mean that, or --since 1h")
    kinds = ", ".join(patterns)
    try:
        answer = input(f"Deliver every retained event ({kinds}) to {function} again? [y/N] ")
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")
