"""The `fnrun` command line's grammar: each command with a description and
examples, each option and argument with its help (defaults shown).

Only argparse here, so `fnrun --help` loads nothing else.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NoReturn

from runtime import __version__


class Parser(argparse.ArgumentParser):
    """argparse, its errors one line like every other mistake (not a usage dump)."""

    commands: tuple[str, ...] = ()
    """The command names (the top-level parser's), to say where options go."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"fnrun: {message} (see {self.prog} --help)\n")


def given(hint: str = "") -> Callable[[str], str]:
    """An argument type refusing "": `--functions ""` made the project root the
    functions folder, `--project ""` the current one, `--host ""` every interface."""

    def check(value: str) -> str:
        if not value:
            raise argparse.ArgumentTypeError(f"must not be empty{hint}")
        return value

    return check


class _Help(argparse.HelpFormatter):
    """Wraps descriptions; keeps the examples (the epilog) a command per line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(EXAMPLES):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


EXAMPLES = "examples:\n"


def _command(sub: Any, name: str, summary: str, description: str, examples: str) -> Parser:
    """A command with its summary (in `fnrun --help`), its description and examples
    (in `fnrun NAME --help`), and the options every command takes."""
    lines = "\n".join(f"  {line}" for line in examples.strip().splitlines())
    cmd: Parser = sub.add_parser(
        name, help=summary, description=description, epilog=f"{EXAMPLES}{lines}",
        formatter_class=_Help,
    )
    cmd.add_argument("--project", metavar="DIR", type=given(" (use . for the current folder)"),
                     help="project folder (default: the nearest folder from here up that "
                          "holds fnrun.yaml or functions/)")
    cmd.add_argument("--functions", metavar="DIR", type=given(),
                     help="functions folder (default: from fnrun.yaml, else PROJECT/functions)")
    cmd.add_argument("--store", metavar="URL", type=given(),
                     help="store URL, sqlite:///PATH or redis://HOST:PORT/DB "
                          "(default: from fnrun.yaml, else sqlite:///.fnrun/state.db)")
    return cmd


def _json_flag(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _data_flag(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--data", metavar="JSON|@FILE",
                     help="event data: JSON, or @FILE to read it from a file (at most "
                          "http.max_body)")


def _function_flag(cmd: argparse.ArgumentParser, required: bool = False) -> None:
    cmd.add_argument("--function", metavar="NAME", required=required,
                     help="the function" if required else "only this function's")


def _serving(sub: Any) -> None:
    for name, summary, description, examples in (
        ("run", "run the supervisor",
         "Run the supervisor in the foreground: load the functions, bind their triggers, "
         "serve HTTP. Ctrl-C stops taking work and lets running invocations finish "
         "(--grace); a second Ctrl-C stops at once.",
         "fnrun run\nfnrun run --port 0          # any free port, named in the 'ready' line\n"
         "fnrun run --store redis://127.0.0.1:6379/0\nfnrun run --log-format json"),
        ("dev", "run with hot reload and readable logs",
         "fnrun run --reload with logs for people: a banner of the functions and their "
         "triggers, a line per reload and per finished run (function, event type and id, "
         "outcome, duration), each handler line tagged with its function and invocation. "
         "Colour on a terminal, unless NO_COLOR is set.",
         "fnrun dev\nfnrun dev --port 9000"),
    ):
        cmd = _command(sub, name, summary, description, examples)
        cmd.add_argument("--host", type=given(), help="HTTP address (default: 127.0.0.1)")
        cmd.add_argument("--port", type=int, help="HTTP port, 0 for any free one (default: 8080)")
        cmd.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                         help="how long running invocations may finish on stop "
                              "(default: %(default)g)")
        if name == "run":
            cmd.add_argument("--reload", action="store_true",
                             help="reload on changes to the functions folder and fnrun.yaml")
            cmd.add_argument("--log-format", choices=["plain", "json"], default="plain",
                             help="plain lines, or one JSON object a line (time, level, "
                                  "logger, message, function, invocation, event id) with a "
                                  "line per finished run (default: %(default)s)")


def _producing(sub: Any) -> None:
    cmd = _command(
        sub, "invoke", "run one function once, without a supervisor",
        "Run one function once in an isolated worker and print its return value as JSON "
        "(exit 1 with the traceback on failure). A function triggered only by webhooks gets "
        "a webhook-shaped event (event.http); --method, --path, --query and --header shape "
        "one for any function. Events the handler emits are listed, not stored, unless "
        "--publish.",
        "fnrun invoke greet --data '{\"name\": \"Ada\"}'\n"
        "fnrun invoke hello-webhook --query name=Ada\n"
        "fnrun invoke hello-webhook --method POST --data '{\"name\": \"Ada\"}' "
        "--header 'X-Trace: 1'\n"
        "fnrun invoke welcome --data @user.json --publish",
    )
    cmd.add_argument("name", metavar="NAME", help="the function to run")
    _data_flag(cmd)
    cmd.add_argument("--type", help="event type (default: fnrun.invoke, or fnrun.webhook "
                                    "for a webhook-shaped event)")
    cmd.add_argument("--subject", help="event subject (default: none, or the webhook path)")
    cmd.add_argument("--method", help="webhook method (default: the webhook's first)")
    cmd.add_argument("--path", help="webhook path (default: the function's webhook path)")
    cmd.add_argument("--query", action="append", metavar="NAME=VALUE",
                     help="a webhook query parameter (repeatable)")
    cmd.add_argument("--header", action="append", metavar="'NAME: VALUE'",
                     help="a webhook request header (repeatable)")
    cmd.add_argument("--publish", action="store_true",
                     help="store the events the handler emitted, as fnrun emit would")

    cmd = _command(
        sub, "emit", "publish one event durably",
        "Publish one event into the project's store (no supervisor needed) and print its "
        "id. Each function whose event pattern matches gets a delivery; an event that "
        "matches none is stored, and said so on stderr.",
        "fnrun emit greet.requested --data '{\"name\": \"Ada\"}'\n"
        "fnrun emit order.created --data @order.json --subject order-1001 --id order-1001",
    )
    cmd.add_argument("type", metavar="TYPE", help="event type, like order.created")
    _data_flag(cmd)
    cmd.add_argument("--subject", help="event subject, e.g. what the event is about")
    cmd.add_argument("--id", help="event id; emitting one id twice stores it once "
                                  "(default: a new one)")
    cmd.add_argument("--key", help="the event's partitionkey extension: its key for "
                                   "functions with flow rules and no key: of their own")


def _inspecting(sub: Any) -> None:
    cmd = _command(
        sub, "ls", "list functions, triggers and queues",
        "List the functions, their triggers (next schedule times, webhook URLs) and "
        "their pending, running and dead deliveries; workers come from a supervisor "
        "running at the project's address.",
        "fnrun ls\nfnrun ls --json\nfnrun ls --port 9000",
    )
    cmd.add_argument("--host", type=given(),
                     help="where the running supervisor listens (default: 127.0.0.1)")
    cmd.add_argument("--port", type=int,
                     help="where the running supervisor listens (default: 8080)")
    _json_flag(cmd)

    cmd = _command(sub, "validate", "check every declaration and handler",
                   "Check every YAML declaration and handler reference without running any "
                   "code (--load: also import each handler in an isolated worker, as fnrun "
                   "run does at start): exit 0, or FILE:LINE:COL: message lines and exit 1.",
                   "fnrun validate\nfnrun validate --load\nfnrun validate --project samples/shop")
    cmd.add_argument("--load", action="store_true",
                     help="also load each handler in an isolated worker (runs its import code)")

    cmd = _command(
        sub, "history", "recent invocations",
        "Recent attempts, oldest first: when each started (local time), the function, "
        "event, attempt, outcome, duration, invocation id and error, fitted to the "
        "terminal's width. Filters combine; --json prints whole run records (logs, "
        "traceback, return value, emitted event ids).",
        "fnrun history\nfnrun history --function greet --limit 10\n"
        "fnrun history --status error --since 1h\nfnrun history --type 'order.*'\n"
        "fnrun history --event 0193a4b2-7c1d-7e5f-9a1b-3f2a9c1b7d4e\n"
        "fnrun history --utc\nfnrun history --json",
    )
    _function_flag(cmd)
    cmd.add_argument("--status", choices=["ok", "error", "timeout", "crash"],
                     help="only attempts with this outcome")
    cmd.add_argument("--type", metavar="PATTERN",
                     help="only events whose type matches this pattern (order.*, **)")
    cmd.add_argument("--event", metavar="EVENT_ID", type=given(),
                     help="only the attempts on this event")
    cmd.add_argument("--since", metavar="DURATION|TIME",
                     help="only attempts started since a duration ago (1h) or an ISO time")
    cmd.add_argument("--limit", type=int, default=50, metavar="N",
                     help="the N most recent attempts (default: %(default)s, at most 1000)")
    cmd.add_argument("--utc", action="store_true", help="exact start times in UTC")
    _json_flag(cmd)

    cmd = _command(
        sub, "logs", "log lines of runs",
        "The log lines of one run (INVOCATION, as fnrun dev and fnrun history show it; "
        "its first 8 characters do), or of the recent runs of a function or of every "
        "function, oldest first: ctx.log lines and the handler's stdout and stderr. "
        "--follow keeps printing new runs' lines as they are stored, from any machine "
        "that reaches the store.",
        "fnrun logs c36fb385\nfnrun logs --function greet\nfnrun logs --follow\n"
        "fnrun logs --function greet --follow",
    )
    cmd.add_argument("invocation", nargs="?", metavar="INVOCATION", type=given(),
                     help="one run's invocation id (or its first 8 or more characters)")
    _function_flag(cmd)
    cmd.add_argument("--follow", "-f", action="store_true",
                     help="keep printing the lines of new runs until Ctrl-C")
    cmd.add_argument("--limit", type=int, default=20, metavar="N",
                     help="runs to show (default: the %(default)s most recent)")
    cmd.add_argument("--utc", action="store_true", help="exact times in UTC")
    _json_flag(cmd)

    cmd = _command(
        sub, "trace", "the tree of what an event caused",
        "The trace of one event: the functions it was delivered to, each attempt "
        "(outcome, duration, invocation id, error), the events each attempt emitted, their "
        "deliveries, and so on; the same W3C trace id throughout.",
        "fnrun trace 0193a4b2-7c1d-7e5f-9a1b-3f2a9c1b7d4e\n"
        "fnrun trace order-1001 --json",
    )
    cmd.add_argument("event", metavar="EVENT_ID", type=given(), help="the event's id")
    _json_flag(cmd)


def _redelivering(sub: Any) -> None:
    cmd = _command(
        sub, "dead-letters", "inspect, replay or drop dead letters",
        "Deliveries that failed every attempt. list shows them; replay delivers them "
        "again (same event id); drop discards them.",
        "fnrun dead-letters list\nfnrun dead-letters replay --all\n"
        "fnrun dead-letters replay --function greet\nfnrun dead-letters drop ID ID",
    )
    cmd.add_argument("action", choices=["list", "replay", "drop"],
                     help="list, replay (deliver again) or drop (discard)")
    cmd.add_argument("ids", nargs="*", metavar="ID", type=given(),
                     help="dead letter ids, as list shows them (default: with --all or "
                          "--function)")
    cmd.add_argument("--all", action="store_true", help="every dead letter (with the filter)")
    _function_flag(cmd)
    _json_flag(cmd)

    cmd = _command(
        sub, "replay", "deliver retained events to a function again",
        "Deliver retained past events (by default those the function subscribes to) to "
        "one function again; they keep their ids. Say how far back with --since, or --all "
        "for everything retained.",
        "fnrun replay --function greet --since 1h\n"
        "fnrun replay --function greet --since 2026-05-01T12:00\n"
        "fnrun replay --function audit --type 'user.*' --all",
    )
    _function_flag(cmd, required=True)
    when = cmd.add_mutually_exclusive_group()
    when.add_argument("--since", metavar="DURATION|TIME",
                      help="a duration (1h) or an ISO time")
    when.add_argument("--all", action="store_true", help="every retained event")
    cmd.add_argument("--type", metavar="PATTERN",
                     help="only event types matching this pattern (default: the "
                          "function's event patterns)")


def _starting(sub: Any) -> None:
    cmd = _command(
        sub, "new", "scaffold a function",
        "Write NAME.py and NAME.yaml into the functions folder; refuses to overwrite. "
        "With no trigger option, the function handles the event demo.hello.",
        "fnrun new greet --event greet.requested\nfnrun new nightly --cron '0 3 * * *'\n"
        "fnrun new hook --webhook /hooks/github",
    )
    cmd.add_argument("name", metavar="NAME", help="function name: [a-z][a-z0-9-]{0,62}")
    kind = cmd.add_mutually_exclusive_group()
    kind.add_argument("--event", metavar="PATTERN", help="handle events of this type pattern")
    kind.add_argument("--cron", metavar="EXPR", help="run on this cron schedule")
    kind.add_argument("--webhook", metavar="PATH", help="answer POST requests to this path")

    cmd = sub.add_parser(
        "init", help="start a project", formatter_class=_Help,
        description="Write fnrun.yaml, a functions/ folder with one function per trigger "
        "kind (event, schedule, webhook) and a .gitignore for .fnrun/ (the store). "
        "Refuses a folder that already has fnrun.yaml or functions/.",
        epilog=f"{EXAMPLES}  fnrun init my-app && cd my-app && fnrun dev\n  fnrun init",
    )
    cmd.add_argument("dir", nargs="?", default=".", metavar="DIR",
                     help="the project folder, created if missing (default: %(default)s)")


def build_parser() -> Parser:
    parser = Parser(prog="fnrun", description="Run Python functions on events, schedules and "
                    "webhooks.", epilog="`fnrun COMMAND --help` shows a command's options "
                    "and examples. New here? `fnrun init my-app && cd my-app && fnrun dev`")
    parser.add_argument("--version", action="version", version=f"fnrun {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)
    for add in (_serving, _producing, _inspecting, _redelivering, _starting):
        add(sub)
    parser.commands = tuple(sub.choices)
    return parser
