"""Log setup for the supervisor: plain lines when piped, colour for `fnrun dev` on a
terminal (never with NO_COLOR set, https://no-color.org), or one JSON object a line
(`fnrun run --log-format json`).

`fnrun dev` shows a line per finished run from the `fnrun.runs` record the
settling code logs after each outcome commit (`extra={"run": RunRecord}`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import zlib
from datetime import UTC, datetime
from typing import IO, Any, Literal

_COLOURS = {
    logging.DEBUG: "\033[2m",
    logging.INFO: "",
    logging.WARNING: "\033[33m",
    logging.ERROR: "\033[31m",
    logging.CRITICAL: "\033[1;31m",
}
_DIM, _RESET = "\033[2m", "\033[0m"
_NAME_COLOURS = ("\033[36m", "\033[35m", "\033[34m", "\033[32m", "\033[96m", "\033[95m")
# What the pool logs for each line a handler writes: "[function invocation] text",
# at the line's level (ctx.log's own, WARNING for stderr, INFO for stdout).
_HANDLER_LINE = re.compile(r"\[(?P<fn>[^\s\]]+) (?P<inv>[^\s\]]+)\] (?P<text>.*)", re.S)


RUNS = "fnrun.runs"
"""The logger of one record per finished run (its `run` attribute is the RunRecord)."""
Format = Literal["plain", "human", "json"]


def colour_wanted(stream: IO[str]) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set to anything but ""."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def short_id(event_id: str) -> str:
    """An event id for a line of `fnrun dev`: whole when short, else its last 8
    characters (a UUIDv7's first ones are a clock, the same for events close in time)."""
    return event_id if len(event_id) <= 12 else event_id[-8:]


def run_line(run: Any) -> str:
    """`greet.requested  3f2a9c1b  ok  12 ms` (the function and invocation are the
    line's tags), with the error's first line when it failed."""
    ms = run.duration * 1000
    took = f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"
    if ms >= 10_000:
        took = f"{ms / 1000:.1f} s"
    text = f"{run.event_type}  {short_id(run.event_id)}  {run.status}  {took}"
    if run.attempt > 1:
        text += f"  (attempt {run.attempt})"
    if run.error:
        text += f"  {run.error.partition(chr(10))[0]}"
    return text


class HumanFormatter(logging.Formatter):
    """Short time, a column per function and invocation, level colours; for people."""

    def __init__(self, colour: bool) -> None:
        super().__init__(datefmt="%H:%M:%S")
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        name = record.name.removeprefix("fnrun.fn.").removeprefix("fnrun.")
        level, invocation = record.levelno, ""
        run = getattr(record, "run", None)
        line = None if run is not None else _HANDLER_LINE.fullmatch(record.getMessage())
        if run is not None:
            name, invocation, text = run.function, run.invocation[:8], run_line(run)
            if run.status != "ok":
                level = logging.WARNING
        elif line is not None:
            name, invocation, text = line["fn"], line["inv"][:8], line["text"]
        else:  # fnrun's own: "reload skipped" under the name "reload" read "reload reload"
            text = record.getMessage().removeprefix(f"{name} ")
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        when = self.formatTime(record, self.datefmt)
        if not self.colour:
            tag = f" {invocation}" if invocation else ""
            word = f"{logging.getLevelName(level)} " if level >= logging.WARNING else ""
            return f"{when} {name:>14}{tag} {word}{text}"
        hue = _NAME_COLOURS[zlib.crc32(name.encode()) % len(_NAME_COLOURS)]
        level_colour = _COLOURS.get(level, "")
        tag = f" {_DIM}{invocation}{_RESET}" if invocation else ""
        return (
            f"{_DIM}{when}{_RESET} {hue}{name:>14}{_RESET}{tag} "
            f"{level_colour}{text}{_RESET if level_colour else ''}"
        )


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and where known the
    function, invocation and event id (for log shippers; no colour, no tracebacks
    over several lines)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        run = getattr(record, "run", None)
        line = None if run is not None else _HANDLER_LINE.fullmatch(out["message"])
        if run is not None:
            out.update(function=run.function, invocation=run.invocation,
                       event_id=run.event_id, event_type=run.event_type, attempt=run.attempt,
                       outcome=run.status, duration_ms=round(run.duration * 1000, 3))
            out["message"] = run_line(run)
        elif line is not None:
            out.update(function=line["fn"], invocation=line["inv"], message=line["text"])
        elif record.name.startswith("fnrun.fn."):
            out["function"] = record.name.removeprefix("fnrun.fn.")
        for key in ("function", "invocation", "event_id"):
            value = getattr(record, key, None)
            if isinstance(value, str):
                out.setdefault(key, value)
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(
    human: bool = False, level: int = logging.INFO, style: Format | None = None
) -> None:
    """Send fnrun's logs to stderr: readable for people when `human` is set, else as
    `style` says (plain lines by default). A line per run goes to people and to
    JSON logs, not to plain ones: a supervisor writing one per event unasked
    would spend its time logging."""
    chosen: Format = style or ("human" if human else "plain")
    handler = logging.StreamHandler(sys.stderr)
    if chosen == "human":
        handler.setFormatter(HumanFormatter(colour=colour_wanted(sys.stderr)))
    elif chosen == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        # Not even when the span export turns the run records on.
        handler.addFilter(lambda record: record.name != RUNS)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger(RUNS).setLevel(logging.WARNING if chosen == "plain" else logging.INFO)
    for noisy in ("uvicorn", "uvicorn.error", "uvicorn.access", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A line per finished run in `fnrun dev` (SPEC 11), not in `fnrun run`'s log.
    logging.getLogger("fnrun.runs").setLevel(logging.INFO if human else logging.WARNING)
