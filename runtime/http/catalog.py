"""What `GET /_/functions`, `fnrun ls --json` and the start log show of each
function: its triggers (next fire times, webhook URLs), limits, delivery
counts and workers.

The supervisor describes what it runs: `workers` is its live worker count of
each function. `fnrun ls` describes what the project declares
(`workers` null) and merges in a running supervisor's answer (`runtime.cli.listing`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from runtime import plugins
from runtime.specs import FunctionSpec, HttpSettings, Project, TriggerSpec
from runtime.store.base import Counts


def base_url(http: HttpSettings) -> str:
    """`http://HOST:PORT` of a supervisor serving with `http` (an IPv6 host in brackets)."""
    host = f"[{http.host}]" if ":" in http.host else http.host
    return f"http://{host}:{http.port}"


def describe_trigger(
    spec: TriggerSpec, project: Project, now: float, http: HttpSettings | None = None
) -> dict[str, Any]:
    """One trigger as JSON: its declaration plus what its module adds (next tick, URL).

    Webhook URLs are on `http` (where a supervisor listens), else on the project's settings.
    """
    fields = {
        f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name != "where"
    }
    out: dict[str, Any] = {"kind": spec.kind, **_jsonable(fields)}
    module = plugins.load(plugins.TRIGGERS[spec.kind])
    describe = getattr(module, "describe", None)
    if describe is not None:
        out.update(describe(spec, now))
    if spec.kind == "webhook":
        out["url"] = f"{base_url(http or project.settings.http)}{fields['path']}"
    return out


def describe_function(
    spec: FunctionSpec, project: Project, counts: Counts, now: float, workers: int | None,
    http: HttpSettings | None = None,
) -> dict[str, Any]:
    return {
        "name": spec.name,
        "handler": f"{spec.handler_file.relative_to(project.settings.functions)}"
        f":{spec.handler_attr}",
        "triggers": [describe_trigger(t, project, now, http) for t in spec.triggers],
        "concurrency": spec.concurrency,
        "timeout": spec.timeout,
        "max_attempts": spec.retry.max_attempts,
        "pending": counts.pending,
        "running": counts.running,
        "dead": counts.dead,
        "workers": workers,
        "load_error": None,
    }


def describe_functions(
    project: Project,
    counts: Mapping[str, Counts],
    now: float,
    workers: Mapping[str, int] | None = None,
    http: HttpSettings | None = None,
) -> list[dict[str, Any]]:
    """Every function of `project`, sorted by name; webhook URLs on `http` if given."""
    return [
        describe_function(
            spec, project, counts.get(name, Counts()), now,
            None if workers is None else workers.get(name, 0), http,
        )
        for name, spec in sorted(project.functions.items())
    ]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def webhook_lines(project: Project, http: HttpSettings) -> list[str]:
    """`webhook GET,POST http://127.0.0.1:8080/hello -> hello-webhook (sync)`, one per
    declared webhook: what `fnrun run` serves, said when it starts."""
    lines = []
    for name, spec in sorted(project.functions.items()):
        for trigger in spec.triggers_of("webhook"):
            fields = describe_trigger(trigger, project, 0.0, http)
            methods = ",".join(fields.get("methods") or [])
            lines.append(f"webhook {methods} {fields['url']} -> {name} ({fields.get('mode')})")
    return lines
