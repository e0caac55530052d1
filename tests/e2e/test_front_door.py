"""The front door against a real `fnrun run`: replays run once, a foreign Host or a
missing token reaches nothing, and the plain (h11) path serves without httptools.

Runs are counted from the handlers' own call log (harness `record`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import Project, wait_until

pytestmark = pytest.mark.timeout(90)

SECRET = "whsec_" + base64.b64encode(b"front-door-key-0123456789abcdef").decode()
GH_SECRET = "gh-front-door"
ENV = {"DOOR_SECRET": SECRET, "DOOR_GH_SECRET": GH_SECRET}

YAML = """
functions:
  gh:
    handler: door.py:gh
    triggers:
      - webhook: {path: /gh, secret_env: DOOR_GH_SECRET, signature: github}
  pay:
    handler: door.py:pay
    triggers:
      - webhook: {path: /pay, secret_env: DOOR_SECRET, mode: sync}
  sink:
    handler: door.py:sink
    triggers:
      - event: door.*
"""

CODE = """
import time

def gh(event, ctx):
    record(event, ctx)

def pay(event, ctx):
    record(event, ctx)
    time.sleep(0.3)  # long enough for concurrent repeats to overlap it
    return {"paid": event.data["n"], "at": time.time()}

def sink(event, ctx):
    record(event, ctx)
"""


def github(body: bytes, delivery: str) -> dict[str, str]:
    digest = hmac.new(GH_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": delivery,
            "content-type": "application/json"}


def standard(body: bytes, msg_id: str) -> dict[str, str]:
    stamp = str(int(time.time()))
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    sig = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body,
                                    hashlib.sha256).digest()).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": stamp, "webhook-signature": f"v1,{sig}",
            "content-type": "application/json"}


@pytest.fixture
def running(project: Project) -> Project:
    project.add("door", YAML, CODE)
    project.start(env=ENV)
    return project


def test_a_github_delivery_sent_five_times_runs_once(running: Project) -> None:
    body = b'{"action": "opened"}'
    ids = set()
    for _ in range(5):
        r = httpx.post(running.url("/gh"), content=body, headers=github(body, "gh-delivery-1"))
        assert r.status_code == 202
        ids.add(r.json()["id"])
    r = httpx.post(running.url("/gh"), content=body, headers=github(body, "gh-delivery-2"))
    assert r.status_code == 202 and r.json()["id"] not in ids
    (first,) = ids
    wait_until(lambda: running.handled("gh").keys() == {first, r.json()["id"]})
    # The second delivery has run, so the five copies of the first had their chance too.
    assert running.handled("gh") == {first: 1, r.json()["id"]: 1}


def test_a_signed_sync_request_sent_again_is_answered_without_running(running: Project) -> None:
    body = json.dumps({"n": 1}).encode()
    headers = standard(body, "msg-sync-1")
    answers = [httpx.post(running.url("/pay"), content=body, headers=headers, timeout=30)
               for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3
    assert answers[0].json()["paid"] == 1
    assert answers[0].json() == answers[1].json() == answers[2].json()  # same "at": one run

    # Repeats racing the first wait for it rather than running beside it.
    body = json.dumps({"n": 2}).encode()
    headers = standard(body, "msg-sync-2")
    with ThreadPoolExecutor(4) as pool:
        racing = list(pool.map(
            lambda _: httpx.post(running.url("/pay"), content=body, headers=headers, timeout=30),
            range(4)))
    assert [a.status_code for a in racing] == [200] * 4
    assert len({a.text for a in racing}) == 1
    assert sorted(running.handled("pay").values()) == [1, 1]


def test_a_foreign_host_publishes_nothing(running: Project) -> None:
    event = {"specversion": "1.0", "source": "t", "type": "door.rebound", "id": "rebound-1"}
    for host in ("evil.example", f"evil.example:{running.port}"):
        r = httpx.post(running.url("/_/events"), content=json.dumps(event), headers={
            "content-type": "application/cloudevents+json", "host": host})
        assert r.status_code == 421
        for path in ("/_/health", "/_/functions", "/_/invocations", "/_/dead-letters",
                     "/_/metrics"):
            assert httpx.get(running.url(path), headers={"host": host}).status_code == 421
    # A later event from a loopback Host runs; the refused one never does.
    running.publish([{"type": "door.ok", "id": "after-1"}])
    wait_until(lambda: running.handled("sink"))
    assert running.handled("sink") == {"after-1": 1}
    history = httpx.get(running.url("/_/invocations"), params={"function": "sink"}).json()
    assert [h["event_id"] for h in history] == ["after-1"]


def test_a_token_set_is_required_on_loopback(project: Project) -> None:
    project.add("door", YAML, CODE)
    project.start(env={**ENV, "FNRUN_TOKEN": "loop-t0k3n"})
    assert httpx.get(project.url("/_/health")).status_code == 200
    refused = httpx.get(project.url("/_/functions"))
    assert refused.status_code == 401
    taken = httpx.get(project.url("/_/functions"),
                      headers={"Authorization": "Bearer loop-t0k3n"})
    assert taken.status_code == 200
    assert {f["name"] for f in taken.json()} == {"gh", "pay", "sink"}
    in_url = httpx.get(project.url("/_/functions?token=loop-t0k3n"))
    assert in_url.status_code == 400


def test_without_httptools_the_plain_path_serves(project: Project, tmp_path: Path) -> None:
    hidden = tmp_path / "no-httptools"
    (hidden / "httptools").mkdir(parents=True)
    (hidden / "httptools" / "__init__.py").write_text(
        'raise ImportError("httptools hidden by the test")\n')
    project.add("door", YAML, CODE)
    project.start(env={**ENV, "PYTHONPATH": str(hidden)})
    assert "serving HTTP on the plain (h11) path: httptools is not installed" in project.output()
    body = b'{"action": "closed"}'
    r = httpx.post(project.url("/gh"), content=body, headers=github(body, "plain-1"))
    assert r.status_code == 202
    wait_until(lambda: project.handled("gh"))
    assert httpx.get(project.url("/_/health"), headers={"host": "evil.example"}).status_code == 421
