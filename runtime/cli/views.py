"""How the command line shows records: tables for people, plain results.

Their JSON shapes (`--json`, and the HTTP API) are `runtime.http.records`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from runtime.http.records import iso
from runtime.store.base import RunRecord

MIN_ELIDED = 12
"""Narrowest a table's elided column gets, however narrow the terminal."""


def plain_result(encoded: Any) -> Any:
    """A worker-encoded return value as plain JSON for people and scripts."""
    if not isinstance(encoded, dict):
        return encoded
    if "json" in encoded:
        return encoded["json"]
    if "text" in encoded:
        return encoded["text"]
    if "bytes" in encoded:
        return {"base64": encoded["bytes"]}
    if "status" in encoded:
        return {
            "status": encoded["status"],
            "body": plain_result(encoded.get("body")),
            "headers": encoded.get("headers", {}),
        }
    return encoded


def output_width() -> int | None:
    """Columns a table may use: the terminal's (or $COLUMNS); None when piped (no limit)."""
    import os
    import shutil

    if os.environ.get("COLUMNS") or sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def print_table(
    rows: Sequence[Sequence[Any]],
    header: Sequence[str],
    width: int | None = None,
    elide: int | None = None,
) -> None:
    """Rows under a header, in columns padded to their widest cell.

    Args:
        width: most characters a line may take; column `elide` is cut to fit.
    """
    cells = [[_cell(c) for c in header]] + [[_cell(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    if width is not None and elide is not None:
        others = sum(widths) - widths[elide] + 2 * (len(header) - 1)
        room = max(width - others, len(header[elide]), MIN_ELIDED)
        widths[elide] = min(widths[elide], room)
        for row in cells:
            row[elide] = _elided(row[elide], room)
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _elided(text: str, room: int) -> str:
    return text if len(text) <= room else text[: room - 1] + "…"


def _cell(value: Any) -> str:
    """One line of text: a control character (from an event id a client chose) is shown
    escaped, so it can neither break the table nor reach the terminal."""
    return clean("" if value is None else str(value))


def clean(text: str) -> str:
    """`text` with its control characters escaped: what a handler or client wrote
    must not move the cursor or colour the terminal of who reads it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def print_functions(functions: Sequence[dict[str, Any]]) -> None:
    """`fnrun ls`: a row per function of `describe_functions`."""
    rows = [
        (f["name"], "; ".join(trigger_text(t) for t in f["triggers"]) or "-",
         f["concurrency"], f["pending"], f["running"], f["dead"])
        for f in functions
    ]
    print_table(rows, ("FUNCTION", "TRIGGERS", "CONC", "PENDING", "RUNNING", "DEAD"))


def print_brokers(sections: dict[str, Any]) -> None:
    """`fnrun ls`: brokers, sources and sinks (SPEC 10), each a table when there are any.

    State is the running supervisor's (`-` when none runs this project)."""
    brokers, sources, sinks = (sections.get(k) or {} for k in ("brokers", "sources", "sinks"))
    if brokers:
        print()
        print_table([(n, b["kind"] or "?", b["url"] or f"${b['url_env']}", b["state"] or "-",
                      b["error"] or "") for n, b in brokers.items()],
                    ("BROKER", "KIND", "URL", "STATE", "ERROR"))
    if sources:
        print()
        print_table([(n, s["broker"], s["type"], s["state"] or "-",
                      "-" if s["messages"] is None else s["messages"], s["error"] or "")
                     for n, s in sources.items()],
                    ("SOURCE", "BROKER", "TYPE", "STATE", "MESSAGES", "ERROR"))
    if sinks:
        print()
        print_table([(n, s["broker"], s["events"], s["format"], s["pending"])
                     for n, s in sinks.items()],
                    ("SINK", "BROKER", "EVENTS", "FORMAT", "PENDING"))


def print_history(records: Sequence[RunRecord], *, utc: bool, width: int | None) -> None:
    """`fnrun history`: a row per attempt, oldest first (the latest is nearest the
    prompt); local times to the second, or exact UTC with `utc`; the error cut to `width`.
    The invocation id is the one `fnrun dev` tags lines with and `fnrun logs` takes."""
    now = datetime.now()
    rows = [
        (iso(r.started) if utc else local_time(r.started, now), r.function, r.event_id,
         r.attempt, r.status, f"{r.duration * 1000:.1f}ms", r.invocation,
         (r.error or "").partition("\n")[0])
        for r in sorted(records, key=lambda r: (r.started, r.seq))
    ]
    header = ("STARTED (UTC)" if utc else "STARTED", "FUNCTION", "EVENT", "ATTEMPT", "OUTCOME",
              "DURATION", "INVOCATION", "ERROR")
    print_table(rows, header, width, elide=len(header) - 1)


def local_time(ts: float, now: datetime) -> str:
    """Epoch seconds as a person reads them here: `14:03:07` today, `Dec 06 14:03:07`
    this year, `2025-12-06 14:03` before."""
    moment = datetime.fromtimestamp(ts)
    if moment.date() == now.date():
        return moment.strftime("%H:%M:%S")
    if moment.year == now.year:
        return moment.strftime("%b %d %H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")


def print_dead_letters(letters: Sequence[dict[str, Any]]) -> None:
    """`fnrun dead-letters list`: a row per `dead_letter_json` record."""
    rows = [
        (d["id"], d["function"], d["event"]["id"], d["attempts"], d["failed_at"], d["error"])
        for d in letters
    ]
    print_table(rows, ("ID", "FUNCTION", "EVENT", "ATTEMPTS", "FAILED", "ERROR"))


def trigger_text(trigger: dict[str, Any]) -> str:
    """One trigger of `fnrun ls`, as a person reads it."""
    kind = str(trigger["kind"])
    if kind == "event":
        return f"event {trigger.get('pattern')}"
    if kind == "schedule":
        zone, local, utc = trigger.get("timezone"), trigger.get("next"), trigger.get("next_utc")
        when = f"next {local}" if zone == "UTC" else f"next {local} = {utc} UTC"
        return f"schedule {trigger.get('cron')} ({zone}) {when}"
    if kind == "webhook":
        methods = ",".join(trigger.get("methods") or [])
        return f"webhook {methods} {trigger.get('url')} ({trigger.get('mode')})"
    return kind
