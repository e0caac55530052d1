"""Traces end to end: a webhook called with a W3C `traceparent` -> A (fails once, then
emits) -> B (emits) -> C, under `fnrun run --log-format json`; `fnrun trace`,
`GET /_/traces/{event}` and `GET /_/runs/{invocation}` show it all under one trace id."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import httpx
import pytest

from tests.e2e.harness import Project, fnrun, wait_until

pytestmark = pytest.mark.timeout(90)

TRACE = "0af7651916cd43dd8448eb211c80319c"
INCOMING = f"00-{TRACE}-b7ad6b7169203331-01"

YAML = """
functions:
  a:
    handler: chain.py:a
    triggers:
      - webhook: {path: /start}
    retry: {max_attempts: 3, backoff: 50ms}
  b:
    handler: chain.py:b
    triggers:
      - event: chain.b
  c:
    handler: chain.py:c
    triggers:
      - event: chain.c
"""

CODE = """
def a(event, ctx):
    record(event, ctx, traceparent=event.extensions.get("traceparent"))
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    ctx.emit("chain.b", {"from": "a"})

def b(event, ctx):
    record(event, ctx, traceparent=event.extensions.get("traceparent"),
           parent=event.extensions.get("fnrunparent"))
    ctx.emit("chain.c", {"from": "b"})

def c(event, ctx):
    record(event, ctx, traceparent=event.extensions.get("traceparent"),
           parent=event.extensions.get("fnrunparent"))
    print("c is done")
"""


def test_a_webhooks_trace_runs_through_emitted_events_and_retries(project: Project) -> None:
    project.add("chain", YAML, CODE)
    project.start("--log-format", "json")
    answer = httpx.post(project.url("/start"), json={"n": 1},
                        headers={"traceparent": INCOMING, "tracestate": "vendor=x"})
    assert answer.status_code == 202, answer.text
    root = answer.json()["id"]
    calls = wait_until(lambda: [c for c in project.calls() if c["fn"] == "c"] and project.calls())
    # Each handler saw its event's trace context: one trace id throughout.
    assert {c["traceparent"].split("-")[1] for c in calls} == {TRACE}
    by_fn = {c["fn"]: c for c in calls}
    assert by_fn["b"]["parent"] == root and by_fn["c"]["parent"] == by_fn["b"]["id"]

    def traced() -> dict | None:
        got = httpx.get(project.url(f"/_/traces/{root}"))
        assert got.status_code == 200, got.text
        tree = got.json()
        return tree if tree["events"] == 3 and _leaf(tree)["deliveries"] else None

    tree = wait_until(traced)
    assert tree["trace_id"] == TRACE
    [delivery] = tree["root"]["deliveries"]
    assert delivery["function"] == "a"
    assert [(x["attempt"], x["outcome"]) for x in delivery["attempts"]] == [
        (1, "error"), (2, "ok")]  # a retry is a second attempt under the same delivery
    assert delivery["attempts"][0]["error"] == "RuntimeError: first attempt fails"
    b_event = delivery["attempts"][1]["emitted"][0]
    assert (b_event["type"], b_event["trace_id"], b_event["parent"]) == ("chain.b", TRACE, root)
    c_run = _leaf(tree)["deliveries"][0]["attempts"][0]
    assert c_run["outcome"] == "ok"

    run = httpx.get(project.url(f"/_/runs/{c_run['invocation']}"))
    assert run.status_code == 200
    assert (run.json()["function"], run.json()["event_type"]) == ("c", "chain.c")
    assert [(x["stream"], x["text"]) for x in run.json()["logs"]] == [("stdout", "c is done")]
    logs = fnrun("logs", c_run["invocation"], "--project", str(project.root)).stdout
    assert logs.splitlines()[1].split(None, 2)[1:] == ["stdout", "c is done"]
    missing = httpx.get(project.url("/_/runs/nope"))
    assert (missing.status_code, missing.json()) == (
        404, {"error": "no such run (not stored, or past retention)"})
    assert httpx.get(project.url("/_/traces/nope")).status_code == 404

    drawn = fnrun("trace", root, "--project", str(project.root)).stdout.splitlines()
    assert drawn[0] == f"trace {TRACE}"
    assert drawn[2].split()[:3] == ["a", "ok", "2"] and "first attempt fails" in drawn[3]
    assert any("event " in line and "chain.c" in line for line in drawn)

    # --log-format json: every line one object; the handler's print names its run.
    lines = [json.loads(x) for x in project.output().splitlines() if x.strip()]
    printed = wait_until(lambda: [x for x in (json.loads(y) for y in project.output()
                                              .splitlines() if y.strip())
                                  if x["message"] == "c is done"])
    assert printed[0]["function"] == "c" and printed[0]["invocation"]
    assert all({"time", "level", "logger", "message"} <= set(x) for x in lines)


def _leaf(tree: dict) -> dict:
    """The C event of the chain (root -> B -> C)."""
    b_event = tree["root"]["deliveries"][0]["attempts"][-1]["emitted"][0]
    return b_event["deliveries"][0]["attempts"][0]["emitted"][0]


def test_dev_prints_a_line_per_finished_run(project: Project) -> None:
    """Six POSTs to a webhook printed nothing in `fnrun dev` (issue 19): now one line each."""
    project.add("hook", """
        functions:
          hook:
            handler: hook.py:hook
            triggers:
              - webhook: {path: /hook}
              - event: hook.again
        """, "def hook(event, ctx):\n    if event.type == 'hook.again':\n"
             "        raise ValueError('no second time')\n")
    out = project.root / "dev.log"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", "dev", "--project", str(project.root),
             "--port", str(project.port)], stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True)
    project.procs.append(proc)
    wait_until(project.healthy)
    ids = [httpx.post(project.url("/hook"), json={}).json()["id"] for _ in range(3)]
    failing = fnrun("emit", "hook.again", "--project", str(project.root)).stdout.strip()
    # time, function, invocation, [WARNING], event type, end of event id, outcome, duration
    run_lines = re.compile(
        r"\S+ +hook ([0-9a-f]{8}) (?:WARNING )?(\S+)  (\S+)  (\S+)  [0-9.]+ ms(.*)")

    def lines() -> list[tuple[str, ...]]:
        text = out.read_text(errors="replace")
        return [m.groups() for m in map(run_lines.fullmatch, text.splitlines()) if m]

    found = wait_until(lambda: len(lines()) >= 4 and lines())
    assert sorted((t, e, o) for _, t, e, o, _ in found if t == "fnrun.webhook") == sorted(
        ("fnrun.webhook", i[-8:], "ok") for i in ids)
    [(_, _, event, outcome, rest)] = [f for f in found if f[1] == "hook.again"][:1]
    assert (event, outcome) == (failing[-8:], "error") and "ValueError: no second time" in rest
    assert "\033[" not in out.read_text()  # not a terminal: no colour
