"""What `fnrun ls --json` and `GET /_/functions` show: each function, its
triggers (next fire times, webhook URLs), limits and delivery counts."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from runtime import plugins
from runtime.specs import FunctionSpec, Project, TriggerSpec
from runtime.store.base import Counts


def describe_trigger(spec: TriggerSpec, project: Project, now: float) -> dict[str, Any]:
    """One trigger as JSON: its declaration plus what its module adds (next tick, URL)."""
    fields = {
        f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name != "where"
    }
    out: dict[str, Any] = {"kind": spec.kind, **_jsonable(fields)}
    module = plugins.load(plugins.TRIGGERS[spec.kind])
    describe = getattr(module, "describe", None)
    if describe is not None:
        out.update(describe(spec, now))
    if spec.kind == "webhook":
        http = project.settings.http
        out["url"] = f"http://{http.host}:{http.port}{fields['path']}"
    return out


def describe_function(
    spec: FunctionSpec, project: Project, counts: Counts, now: float, workers: int | None
) -> dict[str, Any]:
    return {
        "name": spec.name,
        "handler": f"{spec.handler_file.relative_to(project.settings.functions)}"
        f":{spec.handler_attr}",
        "triggers": [describe_trigger(t, project, now) for t in spec.triggers],
        "concurrency": spec.concurrency,
        "timeout": spec.timeout,
        "max_attempts": spec.retry.max_attempts,
        "pending": counts.pending,
        "running": counts.running,
        "dead": counts.dead,
        "workers": workers,
    }


def describe_functions(
    project: Project,
    counts: Mapping[str, Counts],
    now: float,
    workers: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Every function of `project`, sorted by name."""
    return [
        describe_function(
            spec, project, counts.get(name, Counts()), now,
            None if workers is None else workers.get(name, 0),
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
