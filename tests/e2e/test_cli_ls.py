"""`fnrun ls --json` and `GET /_/functions`: the same keys with the same meanings.

The supervisor reports what it runs; `ls` what the project declares, with
the running supervisor's live `workers` and served webhook URLs when one
answers at the project's address, and `workers` null when none does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest

from tests.e2e.harness import Project, fnrun, wait_until

FUNCTIONS = """
    functions:
      echo:
        handler: fns.py:handle
        triggers: [{event: "ping.*"}]
        concurrency: 2
      hook:
        handler: fns.py:handle
        triggers: [{webhook: {path: /hook, mode: sync}}, {event: hook.poke}]
      yearly:
        handler: fns.py:handle
        triggers: [{schedule: "0 0 1 1 *"}]
"""
CODE = """
    def handle(event, ctx):
        record(event, ctx)
        return {"ok": True}
"""
INHERENTLY_LIVE: frozenset[str] = frozenset()
"""Fields that may change between the two calls. None here: nothing is in flight
when they run (pending and running are 0, warm workers stay warm, and the yearly
schedule's `next` moves only at new year), so every field must match exactly."""


@pytest.fixture
def fns(project: Project) -> Project:
    project.add("fns", FUNCTIONS, CODE)
    return project


def ls_json(project: Project, *args: str, env: dict[str, str] | None = None) -> Any:
    proc = fnrun("ls", "--json", *args, "--project", str(project.root),
                 env={**os.environ, **(env or {})})
    assert proc.stderr == ""
    return json.loads(proc.stdout)


def api_functions(project: Project, host: str = "127.0.0.1") -> Any:
    url = f"http://{'[::1]' if host == '::1' else host}:{project.port}/_/functions"
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    return response.json()


def quiescent(project: Project, host: str = "127.0.0.1") -> Any:
    """GET /_/functions once nothing is pending or running and the used workers are warm."""
    def settled() -> Any:
        listing = api_functions(project, host)
        done = all(f["pending"] == 0 and f["running"] == 0 for f in listing)
        warm = {f["name"]: f["workers"] for f in listing} == {"echo": 1, "hook": 1, "yearly": 0}
        return listing if done and warm else None

    return wait_until(settled)


def assert_same(cli: list[dict[str, Any]], api: list[dict[str, Any]]) -> None:
    """Field by field, so a difference names its function and key."""
    assert [f["name"] for f in cli] == [f["name"] for f in api]
    for mine, theirs in zip(cli, api, strict=True):
        assert mine.keys() == theirs.keys(), mine["name"]
        for key in mine.keys() - INHERENTLY_LIVE - {"triggers"}:
            assert mine[key] == theirs[key], (mine["name"], key)
        assert len(mine["triggers"]) == len(theirs["triggers"])
        for a, b in zip(mine["triggers"], theirs["triggers"], strict=True):
            assert a.keys() == b.keys(), mine["name"]
            for key in a.keys() - INHERENTLY_LIVE:
                assert a[key] == b[key], (mine["name"], a["kind"], key)


def _make_work(project: Project, host: str = "127.0.0.1") -> None:
    base = f"http://{'[::1]' if host == '::1' else host}:{project.port}"
    assert httpx.post(f"{base}/hook", json={"n": 1}).json() == {"ok": True}
    fnrun("emit", "ping.one", "--project", str(project.root))
    wait_until(lambda: project.handled("echo"))


def test_ls_json_is_get_functions_of_the_running_supervisor(fns: Project) -> None:
    fns.start()
    _make_work(fns)
    api = quiescent(fns)
    cli = ls_json(fns, "--port", str(fns.port))
    assert_same(cli, api)
    assert {f["name"]: f["workers"] for f in cli} == {"echo": 1, "hook": 1, "yearly": 0}
    [hook] = [f for f in cli if f["name"] == "hook"]
    assert hook["triggers"][0]["url"] == f"http://127.0.0.1:{fns.port}/hook"
    # FNRUN_PORT finds it too, as fnrun.yaml's http.port does.
    assert_same(ls_json(fns, env={"FNRUN_PORT": str(fns.port)}), api)


def test_served_urls_come_from_the_supervisor(fns: Project) -> None:
    """Bound to ::1, it serves http://[::1]:PORT (a bare ::1 in a URL is no URL)."""
    fns.write("fnrun.yaml", f"http: {{host: '::1', port: {fns.port}}}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime", "run", "--project", str(fns.root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    fns.procs.append(proc)
    _wait_healthy(fns, "::1")
    _make_work(fns, "::1")
    api = quiescent(fns, "::1")
    cli = ls_json(fns)
    assert_same(cli, api)
    [hook] = [f for f in cli if f["name"] == "hook"]
    assert hook["triggers"][0]["url"] == f"http://[::1]:{fns.port}/hook"
    httpx.post(hook["triggers"][0]["url"], json={}).raise_for_status()


def _wait_healthy(project: Project, host: str) -> None:
    def healthy() -> bool:
        try:
            url = f"http://[{host}]:{project.port}/_/health"
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy)


def test_ls_json_workers_is_null_when_no_supervisor_runs(fns: Project) -> None:
    cli = ls_json(fns, "--port", str(fns.port))
    assert {f["name"]: f["workers"] for f in cli} == {"echo": None, "hook": None, "yearly": None}
    [hook] = [f for f in cli if f["name"] == "hook"]
    assert hook["triggers"][0]["url"] == f"http://127.0.0.1:{fns.port}/hook"


def test_a_function_the_supervisor_does_not_run_has_null_workers(fns: Project) -> None:
    """Declared after the supervisor started (no --reload): listed, but not running."""
    fns.start()
    _make_work(fns)
    quiescent(fns)
    fns.add("late", """
        functions:
          late: {handler: late.py:handle, triggers: [{event: late.x}]}
    """, CODE)
    cli = {f["name"]: f for f in ls_json(fns, "--port", str(fns.port))}
    assert {n: f["workers"] for n, f in cli.items()} == {
        "echo": 1, "hook": 1, "late": None, "yearly": 0,
    }
    assert "late" not in {f["name"] for f in api_functions(fns)}


def test_a_supervisor_that_wants_a_token_is_named_and_workers_stay_null(
    fns: Project,
) -> None:
    fns.start("--host", "0.0.0.0", env={"FNRUN_TOKEN": "s3cret"})
    wait_until(lambda: httpx.get(fns.url("/_/health")).status_code == 200)
    with_token = ls_json(fns, "--port", str(fns.port), env={"FNRUN_TOKEN": "s3cret"})
    # The three share a handler: it is loaded once at start, in echo's first worker.
    assert {f["name"]: f["workers"] for f in with_token} == {"echo": 1, "hook": 0, "yearly": 0}
    assert with_token[1]["triggers"][0]["url"] == f"http://0.0.0.0:{fns.port}/hook"
    for token, state in (("", "not set"), ("wrong", "wrong")):
        proc = fnrun("ls", "--json", "--port", str(fns.port), "--project", str(fns.root),
                     env={**os.environ, "FNRUN_TOKEN": token})
        assert proc.stderr == (f"fnrun: http://127.0.0.1:{fns.port} wants FNRUN_TOKEN ({state}) "
                               "for /_/functions: workers shown as null\n")
        assert {f["workers"] for f in json.loads(proc.stdout)} == {None}


def test_a_proxy_in_the_environment_is_not_asked_for_the_supervisor(fns: Project) -> None:
    """HTTP_PROXY is for the world; the supervisor is on our own address."""
    fns.start()
    proxy = "http://127.0.0.1:1"  # nothing listens: asking it would find no supervisor
    env = {"http_proxy": proxy, "HTTP_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""}
    cli = ls_json(fns, "--port", str(fns.port), env=env)
    assert {f["name"]: f["workers"] for f in cli} == {"echo": 1, "hook": 0, "yearly": 0}


@pytest.mark.parametrize("host", ["bad host", "[::1]"])
def test_a_host_no_url_can_hold_means_no_supervisor_not_a_traceback(
    fns: Project, host: str
) -> None:
    for args in (["ls"], ["ls", "--json"]):
        proc = fnrun(*args, "--project", str(fns.root), env={**os.environ, "FNRUN_HOST": host})
        assert proc.stderr == ""
    assert {f["workers"] for f in ls_json(fns, "--host", host)} == {None}
