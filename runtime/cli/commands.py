"""The `fnrun` commands. Each takes parsed arguments and returns an exit code.

User mistakes raise `UsageError` (or `ManifestErrors`); the CLI turns those
into one line and an exit code. `invoke` lives in `runtime.cli.invocation`;
`history`, `dead-letters` and `replay` in `runtime.cli.inspection`.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from runtime import plugins
from runtime.cli import arguments, logs, views
from runtime.cli.arguments import print_json
from runtime.cli.inspection import cmd_dead_letters, cmd_history, cmd_replay
from runtime.cli.invocation import cmd_invoke
from runtime.cli.logbook import cmd_logs, cmd_trace
from runtime.errors import ManifestErrors, UsageError
from runtime.events import Event
from runtime.project.manifest import scan_project
from runtime.specs import HttpSettings, Project
from runtime.store.base import Store
from runtime.tracing import otel
from runtime.tracing.context import trace_extensions

Command = Callable[[argparse.Namespace], int]


def run_command(args: argparse.Namespace) -> int:
    return COMMANDS[args.command](args)


def _loadable(args: argparse.Namespace) -> Project:
    """The functions of the valid files; the others' errors on stderr, as warnings.

    For commands that touch no handler (emit, ls): one broken file must not
    stop them. Without a functions folder there is nothing to do: that stays
    an error.
    """
    from runtime.project.manifest import scan_files

    scan = scan_files(arguments.settings(args))
    if scan.unusable:
        raise ManifestErrors(scan.errors)
    for error in scan.errors:
        print(f"{error} (skipped: its file's functions are left out)", file=sys.stderr)
    return scan.project


# -- run -----------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from runtime.cli import banner
    from runtime.supervisor import Supervisor

    if not (math.isfinite(args.grace) and args.grace >= 0):
        raise UsageError(f"--grace must be 0 or more seconds, got {args.grace:g}")
    settings = arguments.settings(args)
    human = args.command == "dev"
    logs.configure(human=human, style=None if human else args.log_format)
    reload = human or args.reload
    supervisor = Supervisor(
        settings, grace=args.grace, reload=reload, freeze_heap=True, isolate=True,
        announce=banner.show if reload else None,
    )
    spans = otel.install()  # each attempt a span, when OTEL_EXPORTER_OTLP_ENDPOINT is set
    try:
        anyio.run(supervisor.run, backend_options={"use_uvloop": True})
    finally:
        if spans is not None:
            spans.close()
    return 0


# -- emit --------------------------------------------------------------------


def cmd_emit(args: argparse.Namespace) -> int:
    arguments.check_type("event type", args.type)
    if args.id is not None:
        arguments.check_id(args.id)
    project = _loadable(args)
    kwargs: dict[str, Any] = {"id": args.id} if args.id is not None else {}
    extensions: dict[str, Any] = trace_extensions()  # a new trace starts here
    if args.key is not None:
        extensions["partitionkey"] = args.key
    data = arguments.read_data(args.data, project.settings.http.max_body)
    event = Event(type=args.type, data=data, subject=args.subject, source="fnrun/cli",
                  extensions=extensions, **kwargs)
    router = plugins.load(f"{plugins.TRIGGERS['event']}:Router")(project)

    targets = router.targets(event.type)

    async def work(store: Store) -> int:
        [new] = await store.publish([(event, targets)])
        print(event.id)
        if not new:  # a retry of the same emit is fine; a reused id by mistake is silent
            print(f"fnrun: event {event.id!r} was already stored; nothing new was published",
                  file=sys.stderr)
        elif not targets:
            print(f"fnrun: {unmatched(project, event.type)}", file=sys.stderr)
        return 0

    return arguments.with_store(project.settings, work)


def unmatched(project: Project, event_type: str) -> str:
    """Why an event reached nobody (a typo, most likely), with the nearest pattern."""
    patterns = sorted({p for _, p in plugins.load(plugins.TRIGGERS["event"]).patterns_of(project)})
    near = difflib.get_close_matches(event_type, patterns, n=1)
    hint = f"; did you mean {near[0]}?" if near else ""
    return (f"no function subscribes to {event_type}: the event is stored, "
            f"but nothing runs it{hint}")


# -- ls, validate ----------------------------------------------------------------


def cmd_ls(args: argparse.Namespace) -> int:
    from runtime.cli import listing
    from runtime.http import catalog

    project = _loadable(args)
    http, token = project.settings.http, os.environ.get("FNRUN_TOKEN") or None
    live, note = listing.live_functions(http, token)
    if note:
        print(f"fnrun: {note}", file=sys.stderr)

    async def work(store: Store | None) -> int:
        now = datetime.now().timestamp()
        counts = await store.counts() if store else {}
        functions = catalog.describe_functions(project, counts, now)
        if live is not None:
            functions = listing.with_live(functions, live)
        if args.json:
            print_json(functions)
            return 0
        views.print_functions(functions)
        views.print_brokers(_broker_sections(project, counts, http, token))
        broken = [f for f in functions if f.get("load_error")]
        if broken:  # only a supervisor knows: it loads handlers in workers
            print("\nhandlers that do not load (each keeps its last good version, if any):")
            for function in broken:
                print(f"  {function['name']}: {function['load_error']}")
        return 0

    return arguments.existing_store(args, project.settings, work)


def _broker_sections(
    project: Project, counts: Mapping[str, Any], http: HttpSettings, token: str | None
) -> dict[str, Any]:
    """Brokers, sources and sinks as declared, with the running supervisor's state."""
    from runtime.brokers.hub import declared
    from runtime.cli import listing

    if not (project.brokers or project.sources or project.sinks):
        return {}
    sections = declared(project.brokers, project.sources, project.sinks)
    for name, sink in sections["sinks"].items():
        found = counts.get(name)  # not yet exported: waiting or being published
        sink["pending"] = found.pending + found.running if found else 0
    answer = listing.ask_supervisor(http, "/_/brokers", token)
    live = answer[1] if answer is not None and answer[0] == 200 else None
    if isinstance(live, dict):
        for section in ("brokers", "sources"):
            for name, entry in sections[section].items():
                running = (live.get(section) or {}).get(name)
                if isinstance(running, dict):
                    entry.update({k: running.get(k) for k in entry if k in running})
    return sections


def _counted(items: Mapping[str, Any], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def cmd_validate(args: argparse.Namespace) -> int:
    scan = scan_project(arguments.settings(args))
    if scan.errors:
        raise ManifestErrors(scan.errors)
    for warning in scan.warnings:  # exit stays 0: see manifest.unset_secrets
        print(warning, file=sys.stderr)
    project = scan.project
    count = len(project.functions)
    where = f"{count} function{'s' if count != 1 else ''} in {project.settings.functions}"
    if project.brokers:
        where += (f"; {_counted(project.sources, 'source')} and {_counted(project.sinks, 'sink')}"
                  f" on {_counted(project.brokers, 'broker')}")
    if not args.load:
        print(f"ok: {where}")
        return 0
    from runtime.pool.warmup import probe

    failed = anyio.run(probe, list(project.functions.values()))
    by_line: dict[str, list[str]] = {}
    for name, line in sorted(failed.items()):
        by_line.setdefault(line, []).append(name)
    for line, names in sorted(by_line.items()):
        print(f"{line} (function{'s' if len(names) > 1 else ''} {', '.join(names)})",
              file=sys.stderr)
    if failed:
        return 1
    print(f"ok: {where}, every handler loads")
    return 0


# -- new -------------------------------------------------------------------------


def cmd_new(args: argparse.Namespace) -> int:
    from runtime.cli.scaffold import DEFAULT_EVENT, scaffold

    settings = arguments.settings(args, creates=True)
    trigger = (args.event, args.cron, args.webhook)
    for path in scaffold(settings, args.name, *trigger):
        print(f"created {path}")
    if trigger == (None, None, None):
        print(f"fnrun: no trigger given: {args.name} handles the event {DEFAULT_EVENT} "
              f"(fnrun emit {DEFAULT_EVENT}); --event, --cron or --webhook picks another",
              file=sys.stderr)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from runtime.cli.scaffold import init_project

    folder = Path(args.dir)
    for path in init_project(folder):
        print(f"created {path}")
    go = "" if folder.resolve() == Path.cwd() else f"cd {args.dir} && "
    print(f"\nnext: {go}fnrun dev   (then, in another terminal: fnrun emit greet.requested "
          "--data '{\"name\": \"Ada\"}')")
    return 0


COMMANDS: dict[str, Command] = {
    "run": cmd_run,
    "dev": cmd_run,
    "invoke": cmd_invoke,
    "emit": cmd_emit,
    "ls": cmd_ls,
    "validate": cmd_validate,
    "history": cmd_history,
    "logs": cmd_logs,
    "trace": cmd_trace,
    "dead-letters": cmd_dead_letters,
    "replay": cmd_replay,
    "new": cmd_new,
    "init": cmd_init,
}
