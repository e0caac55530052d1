"""`fnrun new`: a working function in two files, picked up at once by `fnrun dev`."""

from __future__ import annotations

import re
from pathlib import Path

from runtime.errors import UsageError

NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")

_CODE = '''"""{name}: {what}."""


def handler(event, ctx):
    ctx.log.info("{name} got %s %s", event.type, event.id)
    return {{"ok": True, "function": ctx.function, "data": {data}}}
'''


def _trigger_yaml(event: str | None, cron: str | None, webhook: str | None) -> tuple[str, str]:
    """(the YAML trigger line, a phrase for the docstring)."""
    if cron is not None:
        return f"      - schedule: {_quote(cron)}", f"runs on the schedule {cron}"
    if webhook is not None:
        if not webhook.startswith("/") or webhook.startswith("/_/"):
            raise UsageError(f"--webhook {webhook!r} must start with / and not with /_/")
        return (
            f"      - webhook: {{path: {_quote(webhook)}, methods: [POST], mode: sync}}",
            f"answers POST {webhook}",
        )
    pattern = event or "demo.hello"
    return f"      - event: {_quote(pattern)}", f"handles {pattern} events"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def scaffold(
    functions: Path, name: str, event: str | None, cron: str | None, webhook: str | None
) -> list[Path]:
    """Write NAME.py and NAME.yaml into `functions`; refuse to overwrite."""
    if not NAME.match(name):
        raise UsageError(f"bad function name {name!r}: use [a-z][a-z0-9-]{{0,62}}")
    module = name.replace("-", "_")
    code, decl = functions / f"{module}.py", functions / f"{module}.yaml"
    for path in (code, decl):
        if path.exists():
            raise UsageError(f"{path} already exists")
    trigger, what = _trigger_yaml(event, cron, webhook)
    data = "event.data" if cron is None else "None"
    functions.mkdir(parents=True, exist_ok=True)
    code.write_text(_CODE.format(name=name, what=what, data=data), encoding="utf-8")
    decl.write_text(
        f"functions:\n  {name}:\n    handler: {module}.py:handler\n    triggers:\n{trigger}\n",
        encoding="utf-8",
    )
    return [code, decl]
