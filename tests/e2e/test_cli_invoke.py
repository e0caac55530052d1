"""`fnrun invoke` simulates what a trigger would deliver: a webhook's request
(`event.http`) and the events a handler emits, shown and stored only on `--publish`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.harness import Project, fnrun

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]

HOOKS = """
    functions:
      hook:
        handler: hooks.py:show
        triggers: [{webhook: {path: /hooks/in, methods: [PUT, POST], mode: sync}}]
      both:
        handler: hooks.py:show
        triggers: [{event: both.x}, {webhook: /hooks/both}]
      relay:
        handler: hooks.py:relay
        triggers: [{event: relay.in}]
      listener:
        handler: hooks.py:show
        triggers: [{event: relayed}]
"""
HOOKS_CODE = """
    def show(event, ctx):
        http = event.http
        return {"type": event.type, "subject": event.subject, "data": event.data,
                "http": None if http is None else {"method": http.method, "path": http.path,
                                                   "query": dict(http.query),
                                                   "headers": dict(http.headers)}}

    def relay(event, ctx):
        ctx.emit("relayed", {"n": 1}, id="relayed-1")
        ctx.emit("nobody.listens", id="lost-1")
        return "relayed"
"""


@pytest.fixture
def hooks(project: Project) -> Project:
    project.add("hooks", HOOKS, HOOKS_CODE)
    return project


def invoke(project: Project, *args: str, check: bool = True) -> tuple[int, str, str]:
    proc = fnrun("invoke", *args, "--project", str(project.root), check=check)
    return proc.returncode, proc.stdout, proc.stderr


def test_the_bundled_webhook_function_runs_as_a_webhook(tmp_path: Path) -> None:
    """`fnrun invoke hello-webhook --data '{"name":"Ada"}'` crashed it on event.http."""
    proc = fnrun("invoke", "hello-webhook", "--data", '{"name": "Ada"}',
                 "--project", str(REPO), "--store", f"sqlite:///{tmp_path}/s.db")
    assert json.loads(proc.stdout) == {"hello": "Ada", "method": "GET"}
    query = fnrun("invoke", "hello-webhook", "--method", "post", "--query", "name=Bo",
                  "--project", str(REPO))
    assert json.loads(query.stdout) == {"hello": "Bo", "method": "POST"}


def test_a_webhook_only_function_gets_a_webhook_event_by_default(hooks: Project) -> None:
    _, out, _ = invoke(hooks, "hook", "--data", '{"a": 1}')
    assert json.loads(out) == {
        "type": "fnrun.webhook", "subject": "/hooks/in", "data": {"a": 1},
        "http": {"method": "PUT", "path": "/hooks/in", "query": {},
                 "headers": {"content-type": "application/json"}},
    }
    _, out, _ = invoke(hooks, "hook", "--type", "custom.t")  # still a request: all it gets
    assert json.loads(out)["type"] == "custom.t" and json.loads(out)["http"]["method"] == "PUT"


def test_method_path_query_and_headers_shape_the_request(hooks: Project) -> None:
    _, out, _ = invoke(hooks, "hook", "--method", "post", "--query", "a=1&b=two",
                       "--query", "c=", "--header", "X-Trace: 1", "--header", "x-trace:2",
                       "--header", "Accept: text/plain")
    assert json.loads(out)["http"] == {
        "method": "POST", "path": "/hooks/in", "query": {"a": "1", "b": "two", "c": ""},
        "headers": {"x-trace": "1, 2", "accept": "text/plain"},
    }


def test_a_function_with_an_event_trigger_too_gets_a_plain_event_unless_asked(
    hooks: Project,
) -> None:
    _, out, _ = invoke(hooks, "both")
    assert json.loads(out)["http"] is None and json.loads(out)["type"] == "fnrun.invoke"
    _, out, _ = invoke(hooks, "both", "--path", "/hooks/both", "--type", "custom.t")
    shown = json.loads(out)
    assert shown["type"] == "custom.t" and shown["http"]["path"] == "/hooks/both"


@pytest.mark.parametrize(("args", "message"), [
    (["--path", "/hooks/other"], "fnrun: --path '/hooks/other': hook serves /hooks/in\n"),
    (["--method", "GET"], "fnrun: --method GET: /hooks/in takes PUT, POST\n"),
    (["--header", "no colon"], "fnrun: --header 'no colon': use 'Name: value'\n"),
    (["--query", "novalue"], "fnrun: --query 'novalue': use NAME=VALUE\n"),
    (["--path", "hooks/in"], "fnrun: --path 'hooks/in' must start with /\n"),
    (["--method", "P OST"], "fnrun: --method 'P OST' is not an HTTP method\n"),
])
def test_a_request_the_webhook_would_not_take_is_one_line(
    hooks: Project, args: list[str], message: str
) -> None:
    code, out, err = invoke(hooks, "hook", *args, check=False)
    assert (code, out, err) == (2, "", message)


def test_emitted_events_are_shown_and_stored_only_with_publish(hooks: Project) -> None:
    code, out, err = invoke(hooks, "relay")
    assert (code, json.loads(out)) == (0, "relayed")
    assert err.splitlines() == [
        "emitted relayed relayed-1 -> listener",
        "emitted nobody.listens lost-1 -> no function",
        "fnrun: 2 emitted event(s) not stored (--publish stores them)",
    ]

    def pending() -> dict[str, int]:
        listing = json.loads(fnrun("ls", "--json", "--project", str(hooks.root)).stdout)
        return {f["name"]: f["pending"] for f in listing}

    assert pending()["listener"] == 0
    _, _, err = invoke(hooks, "relay", "--publish")
    assert err.splitlines()[-1].startswith("published 2 event(s) to sqlite:///")
    assert pending() == {"both": 0, "hook": 0, "listener": 1, "relay": 0}
