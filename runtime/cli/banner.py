"""What `fnrun dev` says to a person when it starts: the banner.

Pure text from data (`describe_functions` output), so the wording is tested
without a terminal; colour is added only when asked. The CLI hands `show` to
the supervisor, which calls it once it serves (before any reload line).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from runtime.cli.logs import colour_wanted
from runtime.dashboard.session import CODE_TTL, login_path
from runtime.http.catalog import base_url
from runtime.specs import HttpSettings, Settings

BOLD, DIM, RED, RESET = "\033[1m", "\033[2m", "\033[31m", "\033[0m"
MAX_LISTED = 200
"""Functions shown in the banner; a bigger project gets a count (its list is `fnrun ls`)."""


class Shown(Protocol):
    """What the banner shows of a running supervisor."""

    @property
    def settings(self) -> Settings: ...

    @property
    def declaration_errors(self) -> tuple[str, ...]: ...

    @property
    def served(self) -> HttpSettings: ...

    async def functions_json(self) -> list[dict[str, Any]]: ...


async def show(running: Shown) -> None:
    """Print the start banner of `running` on stderr, in colour on a terminal."""
    listing = await running.functions_json()
    text = render_banner(listing, running.settings, colour=colour_wanted(sys.stderr),
                         served=running.served, errors=running.declaration_errors)
    print(text, file=sys.stderr, flush=True)


def _paint(text: str, code: str, colour: bool) -> str:
    return f"{code}{text}{RESET}" if colour else text


def dashboard_link() -> str:
    """The dashboard's path; with FNRUN_TOKEN set, a one-time login link (SPEC 11)."""
    token = os.environ.get("FNRUN_TOKEN")
    hint = f"  (one-time login link, {CODE_TTL / 60:.0f} min)" if token else ""
    return login_path(token, time.time()) + hint


def trigger_line(trigger: Mapping[str, Any]) -> str:
    """One trigger of `describe_functions`, as a person reads it."""
    kind = trigger.get("kind")
    if kind == "event":
        backfill = " (backfills retained events)" if trigger.get("start") == "beginning" else ""
        return f"event    {trigger.get('pattern')}{backfill}"
    if kind == "schedule":
        zone = trigger.get("timezone") or "UTC"
        nxt = trigger.get("next")
        when = f"next {nxt}" if nxt else "never fires again"
        return f"schedule {trigger.get('cron')} ({zone}), {when}"
    if kind == "webhook":
        methods = ",".join(trigger.get("methods") or ["POST"])
        signed = ", signed" if trigger.get("secret_env") else ""
        return f"webhook  {methods} {trigger.get('url')} ({trigger.get('mode')}{signed})"
    return str(kind)


def render_banner(
    listing: Sequence[Mapping[str, Any]],
    settings: Settings,
    *,
    colour: bool = False,
    served: HttpSettings | None = None,
    errors: Sequence[str] = (),
) -> str:
    """The start banner: where fnrun serves, each function and its triggers, and what
    did not load.

    Args:
        served: where the supervisor listens, if known (the real port of `--port 0`).
        errors: declaration errors (FILE:LINE:COL lines): their files' functions are out.
    """
    watched = str(settings.functions)
    if settings.config_file is not None:
        watched += f" and {settings.config_file.name}"
    url = base_url(served or settings.http)
    lines = [
        _paint(f"fnrun dev  {settings.project}", BOLD, colour),
        f"  http   {url}  (health: /_/health, events: POST /_/events)",
        f"  ui     {url}{dashboard_link()}",
        f"  store  {settings.store}",
        "",
    ]
    if not listing:
        lines.append("  no functions yet: add one with `fnrun new hello --event demo.hello`")
    for function in listing[:MAX_LISTED]:
        name = _paint(str(function["name"]), BOLD, colour)
        lines.append(f"  {name}  {_paint(str(function['handler']), DIM, colour)}")
        triggers = function.get("triggers") or []
        if not triggers:
            lines.append("      (no triggers: run it with `fnrun invoke`)")
        lines.extend(f"      {trigger_line(t)}" for t in triggers)
        if function.get("load_error"):
            problem = f"does not load: {function['load_error']}"
            lines.append(f"      {_paint(problem, RED, colour)}")
    if len(listing) > MAX_LISTED:
        lines.append(f"  ... and {len(listing) - MAX_LISTED} more (see `fnrun ls`)")
    if errors:
        lines += ["", _paint(f"  {len(errors)} error{'' if len(errors) == 1 else 's'}"
                             " (the functions of these files are not loaded):", RED, colour)]
        lines.extend(f"  {line}" for line in errors)
    broken = sum(1 for f in listing if f.get("load_error"))
    if errors or broken:
        lines += ["", "  save a fix and it is picked up; deliveries wait in the store meanwhile"]
    lines += ["", f"  watching {watched}: save a file to reload"]
    return "\n".join(lines)
