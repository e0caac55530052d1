"""What `fnrun ls --json` and `GET /_/functions` show: each function, its
triggers (next fire times, webhook URLs), limits, delivery counts and workers.

The supervisor describes what it runs: `workers` is its live worker count of
each function. `fnrun ls` describes what the project declares and, when a
supervisor answers at the project's address, takes `workers` and the webhook
URLs from that supervisor's `GET /_/functions` (`with_live`), so that both
give the same keys with the same meanings; `workers` is null for a function
no supervisor there runs.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from runtime import plugins
from runtime.specs import FunctionSpec, HttpSettings, Project, TriggerSpec
from runtime.store.base import Counts

LIVE_TIMEOUT = 2.0
"""Seconds `fnrun ls` waits for a running supervisor's answer (it reads the store to give it)."""


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


def ask_supervisor(http: HttpSettings, path: str, token: str | None) -> tuple[int, Any] | None:
    """(status, JSON body) of GET `path` from the supervisor at `http`'s address;
    None when nothing answers there with JSON (no supervisor, or not one)."""
    import urllib.error  # only `fnrun ls` asks: the supervisor never loads a client
    import urllib.request
    from http.client import HTTPException

    try:
        request = urllib.request.Request(f"{base_url(http)}{path}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        # No proxy: one from HTTP_PROXY would be asked for our own 127.0.0.1.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=LIVE_TIMEOUT) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as answer:  # 401 without the token, 503 while starting
        try:
            return answer.code, json.loads(answer.read() or b"null")
        except (OSError, ValueError, HTTPException):
            return None
    # A host no URL can hold (`FNRUN_HOST="a b"`) has no supervisor either.
    except (OSError, ValueError, HTTPException):
        return None


def live_functions(
    http: HttpSettings, token: str | None
) -> tuple[list[dict[str, Any]] | None, str | None]:
    """(GET /_/functions of the supervisor at `http`'s address, or None; a note on why
    it would not tell, if it refused)."""
    answer = ask_supervisor(http, "/_/functions", token)
    if answer is None:
        return None, None
    status, body = answer
    if status == 401:
        state = "wrong" if token else "not set"
        return None, (f"{base_url(http)} wants FNRUN_TOKEN ({state}) for /_/functions: "
                      "workers shown as null")
    if status != 200 or not isinstance(body, list):
        return None, None
    return [f for f in body if isinstance(f, dict)], None


def with_live(
    listing: Sequence[dict[str, Any]], live: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """`listing` (as declared) with the running supervisor's `workers` and webhook URLs.

    A function counts as running there when the supervisor has one of that
    name and handler; any other keeps `workers` null and its configured URLs.
    """
    running = {f.get("name"): f for f in live}
    out = []
    for function in listing:
        served = running.get(function["name"])
        if served is None or served.get("handler") != function["handler"]:
            out.append(function)
            continue
        urls = {
            t.get("path"): t.get("url") for t in served.get("triggers") or []
            if isinstance(t, dict) and t.get("kind") == "webhook"
        }
        triggers = [
            {**t, "url": urls.get(t["path"], t["url"])} if t["kind"] == "webhook" else t
            for t in function["triggers"]
        ]
        workers = served.get("workers")
        error = served.get("load_error")
        out.append({**function, "triggers": triggers,
                    "workers": workers if isinstance(workers, int) else None,
                    "load_error": error if isinstance(error, str) else None})
    return out


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
