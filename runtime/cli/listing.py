"""`fnrun ls` asks a running supervisor what it serves (`runtime.http.catalog`
describes both sides).

`fnrun ls` describes what the project declares and, when a supervisor
answers at the project's address, takes `workers` and the webhook URLs from
that supervisor's `GET /_/functions` (`with_live`), so that both give the
same keys with the same meanings; `workers` is null for a function no
supervisor there runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from runtime.http.catalog import base_url
from runtime.specs import HttpSettings

LIVE_TIMEOUT = 2.0
"""Seconds `fnrun ls` waits for a running supervisor's answer (it reads the store to give it)."""


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
