"""`fnrun invoke`: one invocation in an isolated worker, shaped as its trigger would shape it.

A function with only webhook triggers gets a webhook-shaped event by default
(type `fnrun.webhook`, `event.http` set, as the webhook trigger builds it),
since its handler reads `event.http`; `--method`, `--path`, `--query` and
`--header` shape one for any function. The events the handler emitted are
shown, and stored (fanned out as `fnrun emit` does) only with `--publish`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

import anyio

from runtime import plugins
from runtime.cli import arguments, logs, views
from runtime.errors import StoreError, UsageError
from runtime.events import Event, HttpInfo, Outcome
from runtime.specs import FunctionSpec, Project
from runtime.store.base import Store
from runtime.tracing.context import emitted, trace_extensions

WEBHOOK_TYPE = "fnrun.webhook"
"""The type the webhook trigger gives its events (triggers/webhook.py)."""


def cmd_invoke(args: argparse.Namespace) -> int:
    from runtime.pool.workerpool import WorkerPool

    if args.type is not None:
        arguments.check_type("--type", args.type)
    project = arguments.project(args)
    spec = arguments.function(project, args.name)
    data = arguments.read_data(args.data, project.settings.http.max_body)
    event = build_event(args, spec, data)
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
    _record(project, spec, event, outcome)
    if not outcome.ok:
        print(outcome.traceback or outcome.error or outcome.status, file=sys.stderr)
        return 1
    arguments.print_json(views.plain_result(outcome.result))
    if outcome.emits:
        emits = emitted(outcome.emits, event, spec.name, 1)  # they continue its trace
        _show_emits(project, emits, publish=args.publish)
    return 0


def _record(project: Project, spec: FunctionSpec, event: Event, outcome: Outcome) -> None:
    """Keep the run's record (SPEC 11: its logs, its traceback) in a store that exists;
    a store that cannot take it costs the invocation nothing but a line."""
    if plugins.missing_file(project.settings.store) is not None:
        return  # nothing ran here yet: an invoke creates no store

    async def work(store: Store) -> int:
        await store.record([(spec.name, event, outcome)])
        return 0

    try:
        arguments.with_store(project.settings, work)
    except StoreError as exc:
        print(f"fnrun: the run was not recorded: {exc}", file=sys.stderr)


def build_event(args: argparse.Namespace, spec: FunctionSpec, data: Any) -> Event:
    """The event to invoke `spec` with: webhook-shaped (`--type` or fnrun.webhook) when
    asked, or when only webhooks trigger it, as only such events reach its handler;
    otherwise a plain event of `--type` (default fnrun.invoke)."""
    hooks = list(spec.triggers_of("webhook"))
    asked = any(v for v in (args.method, args.path, args.query, args.header))
    only_webhooks = bool(hooks) and len(hooks) == len(spec.triggers)
    if not (asked or only_webhooks):
        return Event(type=args.type or "fnrun.invoke", data=data, subject=args.subject,
                     source="fnrun/invoke", extensions=trace_extensions())
    path = args.path or (getattr(hooks[0], "path", "/") if hooks else "/")
    declared: dict[str, tuple[str, ...]] = {
        getattr(h, "path", ""): tuple(getattr(h, "methods", ())) for h in hooks
    }
    if not path.startswith("/"):
        raise UsageError(f"--path {path!r} must start with /")
    if hooks and path not in declared:
        raise UsageError(f"--path {path!r}: {spec.name} serves {', '.join(sorted(declared))}")
    methods = declared.get(path) or ("POST",)
    method = (args.method or methods[0]).upper()
    if not method.isascii() or not method.isalpha():
        raise UsageError(f"--method {method!r} is not an HTTP method")
    if hooks and method not in methods:
        raise UsageError(f"--method {method}: {path} takes {', '.join(methods)}")
    headers = _headers(args.header)
    if data is not None:
        headers.setdefault("content-type", "application/json")
    http = HttpInfo(method, path, _query(args.query), headers)
    return Event(type=args.type or WEBHOOK_TYPE, data=data, subject=args.subject or path,
                 source="fnrun/invoke", http=http, extensions=trace_extensions())


def _query(items: Sequence[str] | None) -> dict[str, str]:
    """`--query a=1 --query b=2`, or `--query 'a=1&b=2'`, as the webhook trigger reads a query."""
    out: dict[str, str] = {}
    for item in items or ():
        if "=" not in item:
            raise UsageError(f"--query {item!r}: use NAME=VALUE")
        out.update(parse_qsl(item, keep_blank_values=True))
    return out


def _headers(items: Sequence[str] | None) -> dict[str, str]:
    """`--header 'Name: value'` as the webhook trigger gives headers: names lower-cased,
    repeats joined with ", " (RFC 9110 5.3)."""
    out: dict[str, str] = {}
    for item in items or ():
        name, colon, value = item.partition(":")
        name = name.strip().lower()
        if not colon or not name or any(c in name for c in " \t"):
            raise UsageError(f"--header {item!r}: use 'Name: value'")
        value = value.strip()
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _show_emits(project: Project, emits: Sequence[Event], *, publish: bool) -> None:
    """Name each emitted event and who would get it, on stderr (stdout is the result);
    store them, fanned out as `fnrun emit` does, with `--publish`."""
    router = plugins.load(f"{plugins.TRIGGERS['event']}:Router")(project)
    routed = [(event, router.targets(event.type)) for event in emits]
    for event, targets in routed:
        to = ", ".join(targets) if targets else "no function"
        print(f"emitted {event.type} {event.id} -> {to}", file=sys.stderr)
    if not publish:
        print(f"fnrun: {len(emits)} emitted event(s) not stored (--publish stores them)",
              file=sys.stderr)
        return

    async def work(store: Any) -> int:
        await store.publish(routed)
        return 0

    arguments.with_store(project.settings, work)
    print(f"published {len(emits)} event(s) to {project.settings.store}", file=sys.stderr)


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
