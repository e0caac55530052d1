"""Webhooks as a user meets them: `fnrun run` in a subprocess, httpx from outside."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import signal
import time

import httpx
import pytest

from tests.e2e.harness import Project, wait_until

pytestmark = pytest.mark.timeout(90)

SECRET = "whsec_" + base64.b64encode(b"e2e-payments-key-0123456789abcd").decode()

SYNC_YAML = """
functions:
  reply:
    handler: reply.py:reply
    triggers:
      - webhook: {path: /reply, methods: [POST], mode: sync}
    timeout: 2s
  pay:
    handler: reply.py:pay
    triggers:
      - webhook: {path: /pay, secret_env: E2E_PAY_SECRET}
  receipt:
    handler: reply.py:receipt
    triggers:
      - event: order.paid
"""

SYNC_CODE = """
import time

def reply(event, ctx):
    record(event, ctx)
    kind = event.data["kind"]
    if kind == "dict":
        return {"got": event.data, "query": dict(event.http.query)}
    if kind == "text":
        return "plain words"
    if kind == "bytes":
        return bytes(range(4))
    if kind == "tuple2":
        return 201, {"created": True}
    if kind == "tuple3":
        return 202, "queued", {"X-Queue": "q1", "Content-Type": "text/x-custom"}
    if kind == "boom":
        raise RuntimeError("secret detail that must not leak")
    if kind == "slow":
        time.sleep(10)
    if kind in ("emit", "emit-then-fail"):
        ctx.emit("order.paid", {"order": event.data["order"]})
        if kind == "emit-then-fail":
            raise RuntimeError("failed after emitting")
        return {"emitted": True}
    return None

def pay(event, ctx):
    record(event, ctx)
    ctx.emit("order.paid", {"order": event.data["order"]}, id="paid-" + event.data["order"])

def receipt(event, ctx):
    record(event, ctx)
"""


def post(project: Project, path: str, data: object, **headers: str) -> httpx.Response:
    return httpx.post(project.url(path), content=json.dumps(data), timeout=20,
                      headers={"content-type": "application/json", **headers})


def signed(body: bytes, msg_id: str) -> dict[str, str]:
    stamp = str(int(time.time()))
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {"content-type": "application/json", "webhook-id": msg_id,
            "webhook-timestamp": stamp, "webhook-signature": "v1," + base64.b64encode(mac).decode()}


def metric(project: Project, name: str, **labels: str) -> float:
    text = httpx.get(project.url("/_/metrics"), timeout=5).text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.M)
    return float(match[1]) if match else 0.0


@pytest.fixture
def running(project: Project) -> Project:
    project.add("reply", SYNC_YAML, SYNC_CODE)
    project.start(env={"E2E_PAY_SECRET": SECRET})
    return project


def test_sync_return_values_become_responses(running: Project) -> None:
    r = post(running, "/reply?a=1", {"kind": "dict"})
    assert (r.status_code, r.json()) == (200, {"got": {"kind": "dict"}, "query": {"a": "1"}})
    r = post(running, "/reply", {"kind": "text"})
    assert (r.status_code, r.text) == (200, "plain words")
    assert r.headers["content-type"].startswith("text/plain")
    r = post(running, "/reply", {"kind": "bytes"})
    assert (r.status_code, r.content) == (200, b"\x00\x01\x02\x03")
    assert r.headers["content-type"] == "application/octet-stream"
    r = post(running, "/reply", {"kind": "tuple2"})
    assert (r.status_code, r.json()) == (201, {"created": True})
    r = post(running, "/reply", {"kind": "tuple3"})
    assert (r.status_code, r.text, r.headers["x-queue"]) == (202, "queued", "q1")
    assert r.headers["content-type"] == "text/x-custom"


def test_sync_failure_is_500_with_an_id_and_timeout_is_504(running: Project) -> None:
    r = post(running, "/reply", {"kind": "boom"})
    assert r.status_code == 500
    body = r.json()
    assert body["id"] and "secret detail" not in r.text and "Traceback" not in r.text
    # the traceback went to the supervisor's log, under the same id
    wait_until(lambda: "secret detail" in running.output() and body["id"] in running.output())
    r = post(running, "/reply", {"kind": "slow"})
    assert r.status_code == 504
    assert r.json()["id"]


def test_metrics_count_sync_invocations(running: Project) -> None:
    before = metric(running, "fnrun_invocations_total", function="reply", outcome="ok")
    for _ in range(3):
        assert post(running, "/reply", {"kind": "text"}).status_code == 200
    after = metric(running, "fnrun_invocations_total", function="reply", outcome="ok")
    assert after == before + 3


def test_sync_emits_are_published_only_when_the_call_succeeds(running: Project) -> None:
    assert post(running, "/reply", {"kind": "emit-then-fail", "order": "bad"}).status_code == 500
    assert post(running, "/reply", {"kind": "emit", "order": "good"}).status_code == 200
    wait_until(lambda: [c for c in running.calls() if c["fn"] == "receipt"])
    wait_until(lambda: all(f["pending"] == 0 and f["running"] == 0
                           for f in httpx.get(running.url("/_/functions"), timeout=5).json()))
    receipts = [c for c in running.calls() if c["fn"] == "receipt"]
    assert len(receipts) == 1


def test_sync_idempotency_key_returns_the_first_answer(running: Project) -> None:
    before = len([c for c in running.calls() if c["fn"] == "reply"])
    first = post(running, "/reply", {"kind": "tuple2"}, **{"Idempotency-Key": "abc"})
    again = post(running, "/reply", {"kind": "text"}, **{"Idempotency-Key": "abc"})
    assert (first.status_code, first.json()) == (201, {"created": True})
    assert (again.status_code, again.json()) == (201, {"created": True})
    after = len([c for c in running.calls() if c["fn"] == "reply"])
    assert after == before + 1  # the repeat was answered from the store, not run again


def test_signed_async_webhook_runs_once_and_fans_out(running: Project) -> None:
    body = json.dumps({"order": "o-7"}).encode()
    hdrs = signed(body, "msg_e2e_1")
    ids = set()
    for _ in range(3):  # the provider redelivers: same webhook-id
        r = httpx.post(running.url("/pay"), content=body, headers=hdrs, timeout=10)
        assert r.status_code == 202
        ids.add(r.json()["id"])
    assert len(ids) == 1
    bad = httpx.post(running.url("/pay"), content=body,
                     headers={**hdrs, "webhook-id": "msg_e2e_2"}, timeout=10)
    assert bad.status_code == 401
    wait_until(lambda: running.handled("receipt").get("paid-o-7"))
    assert running.handled("pay") == {ids.pop(): 1}


def health(project: Project) -> int:
    try:
        return httpx.get(project.url("/_/health"), timeout=2).status_code
    except httpx.HTTPError:
        return 0


def test_webhook_answers_503_while_draining(project_on_each_store: Project) -> None:
    project = project_on_each_store
    slow_yaml = SYNC_YAML + """
  slowpoke:
    handler: reply.py:slowpoke
    triggers:
      - event: slow.job
"""
    # The job runs until the test has seen the 503: a loaded machine cannot
    # let the drain end first.
    slow_code = SYNC_CODE + """
def slowpoke(event, ctx):
    record(event, ctx)
    release = os.path.join(os.path.dirname(__file__), "release")
    while not os.path.exists(release) and time.time() < ctx.deadline:
        time.sleep(0.01)
"""
    project.add("reply", slow_yaml, slow_code)
    proc = project.start(env={"E2E_PAY_SECRET": SECRET})
    project.publish([{"id": "job-1", "type": "slow.job"}])
    wait_until(lambda: project.handled("slowpoke"))
    proc.send_signal(signal.SIGTERM)  # drains: the running job gets its grace period
    wait_until(lambda: health(project) == 503, timeout=10)
    r = post(project, "/reply", {"kind": "text"})
    (project.functions / "release").touch()
    assert r.status_code == 503
    assert proc.wait(timeout=30) == 0
    assert "reply" not in {c["fn"] for c in project.calls()}
