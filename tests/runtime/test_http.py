"""The HTTP server for real: uvicorn on 127.0.0.1, httpx and raw sockets, a SQLite store.

The runtime view here is assembled from real parts (SqliteStore, Metrics,
the webhook Trigger); only its readiness flags are set by the test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from runtime.clock import Clock, SystemClock
from runtime.errors import UsageError, Where
from runtime.events import Event, Outcome
from runtime.http.app import check_bind, create_app
from runtime.http.server import Listening, ProtocolPath, serve
from runtime.metrics import Metrics
from runtime.specs import FunctionSpec, HttpSettings, Project, Settings
from runtime.store.base import Store
from runtime.store.sqlite import SqliteStore
from triggers.webhook import Trigger, WebhookSpec

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

KEY = b"payments-test-key-0123456789abcd"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the key before rotation").decode()
GH_SECRET = "gh-secret"
HERE = Where(Path("functions/hooks.yaml"), 1, 1)


@dataclass
class View:
    """A RuntimeView and Ingress over a real store; `invoke` is not used here."""

    settings: Settings
    store: Store
    metrics: Metrics = field(default_factory=Metrics)
    clock: Clock = field(default_factory=SystemClock)
    accepting: bool = True
    draining: bool = False

    @property
    def ingress(self) -> View:
        return self

    def targets(self, event_type: str) -> list[str]:
        return ["sink"] if event_type.startswith("order.") else []

    async def publish(self, events: Sequence[Event]) -> list[bool]:
        return await self.store.publish([(e, self.targets(e.type)) for e in events])

    async def invoke(self, function: str, event: Event) -> Outcome:
        raise AssertionError("no sync webhooks in this module")

    async def functions_json(self) -> list[dict[str, Any]]:
        return [{"name": "orders"}, {"name": "sink"}]

    async def brokers_json(self) -> dict[str, Any]:
        return {"brokers": {}, "sources": {}, "sinks": {}}

    def health_detail(self) -> dict[str, Any]:
        return {"functions": 2}


@dataclass
class Harness:
    view: View
    client: httpx.AsyncClient
    listening: Listening
    trigger: Trigger
    app: Any
    path: ProtocolPath

    async def pending(self) -> dict[str, int]:
        counts = await self.view.store.counts()
        return {name: c.pending for name, c in counts.items() if c.pending}

    async def events_of(self, function: str) -> list[Event]:
        return [d.event for d in await self.view.store.claim(function, 100, time.time() + 1)]


def webhook(name: str, path: str, **kw: Any) -> FunctionSpec:
    trigger = WebhookSpec(where=HERE, path=path, **kw)
    return FunctionSpec(name=name, where=HERE, handler_file=Path(f"/nowhere/{name}.py"),
                        handler_attr="handler", triggers=(trigger,))


FUNCTIONS = [
    webhook("orders", "/hooks/orders", methods=("POST", "PUT")),
    webhook("signed", "/hooks/signed", secret_env="FNRUN_TEST_WH_SECRET", signature="standard"),
    webhook("gh", "/hooks/gh", secret_env="FNRUN_TEST_GH_SECRET", signature="github"),
    webhook("unset", "/hooks/unset", secret_env="FNRUN_TEST_NEVER_SET", signature="standard"),
    webhook("small", "/hooks/small", max_body=100),
]


async def start(tmp_path: Path, host: str = "127.0.0.1",
                environ: dict[str, str] | None = None, path: ProtocolPath = "fast",
                allowed_hosts: tuple[str, ...] = ()) -> AsyncIterator[Harness]:
    settings = Settings(project=tmp_path, functions=tmp_path / "functions",
                        store=f"sqlite:///{tmp_path}/state.db",
                        http=HttpSettings(host=host, port=0, max_body=4096,
                                          allowed_hosts=allowed_hosts))
    async with SqliteStore(settings.store) as store:
        view = View(settings, store)
        trigger = Trigger(view)
        trigger.body_timeout = 0.5
        trigger.bind(Project(settings, {f.name: f for f in FUNCTIONS}))
        app = create_app(view, trigger.asgi, environ=environ or {})
        loopback = HttpSettings(port=0)  # tests listen on loopback whatever `host` says
        async with anyio.create_task_group() as tg:
            listening = await tg.start(partial(serve, header_timeout=0.5, path=path), app,
                                       loopback)
            async with httpx.AsyncClient(base_url=listening.url, timeout=10) as client:
                yield Harness(view, client, listening, trigger, app, path)
            tg.cancel_scope.cancel()


@pytest.fixture(params=["fast", "plain"])
async def h(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> AsyncIterator[Harness]:
    """The app served on each protocol path: httptools (fast) and h11 (plain)."""
    monkeypatch.setenv("FNRUN_TEST_WH_SECRET", SECRET)
    monkeypatch.setenv("FNRUN_TEST_GH_SECRET", GH_SECRET)
    monkeypatch.delenv("FNRUN_TEST_NEVER_SET", raising=False)
    async for harness in start(tmp_path, path=request.param):
        yield harness


def standard_headers(secret: str, msg_id: str, body: bytes, stamp: int | None = None,
                     extra: str = "") -> dict[str, str]:
    stamp = int(time.time()) if stamp is None else stamp
    key = base64.b64decode(secret.removeprefix("whsec_"))
    sig = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body,
                                    hashlib.sha256).digest()).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp),
            "webhook-signature": f"{extra} v1,{sig}".strip(), "content-type": "application/json"}


# -- health and readiness ------------------------------------------------------

async def test_health_follows_readiness(h: Harness) -> None:
    r = await h.client.get("/_/health")
    assert (r.status_code, r.json()) == (200, {"status": "ok", "functions": 2})
    h.view.accepting = False
    r = await h.client.get("/_/health")
    assert (r.status_code, r.json()["status"]) == (503, "starting")
    h.view.draining = True
    assert (await h.client.get("/_/health")).json()["status"] == "stopping"


async def test_webhook_answers_503_while_not_accepting_and_stores_nothing(h: Harness) -> None:
    h.view.accepting = False
    r = await h.client.post("/hooks/orders", json={"a": 1})
    assert r.status_code == 503
    assert await h.pending() == {}


# -- async webhooks -------------------------------------------------------------

async def test_async_webhook_stores_then_answers_202(h: Harness) -> None:
    r = await h.client.post("/hooks/orders?x=1&y=two", json={"order": 42},
                            headers={"X-Trace": "abc"})
    assert r.status_code == 202
    event_id = r.json()["id"]
    assert await h.pending() == {"orders": 1}
    (event,) = await h.events_of("orders")
    assert event.id == event_id
    assert event.data == {"order": 42}
    assert event.type == "fnrun.webhook" and event.subject == "/hooks/orders"
    assert event.http is not None
    assert (event.http.method, event.http.path) == ("POST", "/hooks/orders")
    assert dict(event.http.query) == {"x": "1", "y": "two"}
    assert event.http.headers["x-trace"] == "abc"


async def test_other_content_types_arrive_as_bytes(h: Harness) -> None:
    r = await h.client.put("/hooks/orders", content=b"a=1&b=\xff",
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 202
    (event,) = await h.events_of("orders")
    assert event.data == b"a=1&b=\xff"


async def test_invalid_json_is_400_and_stores_nothing(h: Harness) -> None:
    r = await h.client.post("/hooks/orders", content=b'{"order": ',
                            headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "invalid JSON" in r.json()["error"]
    assert await h.pending() == {}


NOT_JSON = {
    "NaN": (b'{"total": NaN}', "NaN is not a JSON value"),
    "Infinity": (b'[1, -Infinity]', "-Infinity is not a JSON value"),
    "deep": (b"[" * 2_000 + b"]" * 2_000, "nested too deeply"),  # under max_body (4 KiB)
    # Python takes about 980 levels; past 64 is refused (issue 17, point 12).
    "65 levels": (b'{"a":' * 65 + b"1" + b"}" * 65, "nested too deeply (more than 64 levels)"),
    # Python reads these as inf: stored, handed to the handler, and its result
    # then failed to serialize, so the event ended as a dead letter.
    "overflow": (b'{"x": 1e999}', "1e999 is out of range"),
    "negative overflow": (b"[-1e400]", "-1e400 is out of range"),
}


@pytest.mark.parametrize("case", sorted(NOT_JSON))
async def test_what_only_python_calls_json_is_400_and_stores_nothing(
    h: Harness, case: str
) -> None:
    # Python's json takes NaN and Infinity, and overflows its stack on deep
    # nesting (a 500 and a traceback); neither may get in as an event.
    body, message = NOT_JSON[case]
    hook = await h.client.post("/hooks/orders", content=body,
                               headers={"content-type": "application/json"})
    event = b'{"specversion": "1.0", "id": "e1", "source": "t", "type": "t.x", "data": %s}'
    api = await h.client.post("/_/events", content=event % body,
                              headers={"content-type": "application/cloudevents+json"})
    for r in (hook, api):
        assert r.status_code == 400
        assert message in r.json()["error"]
    assert await h.pending() == {}


async def test_nesting_up_to_64_levels_is_taken(h: Harness) -> None:
    deepest = b"[" * 64 + b"]" * 64  # the webhook body's 64 levels
    hook = await h.client.post("/hooks/orders", content=deepest,
                               headers={"content-type": "application/json"})
    # The event's own object is a level: its data may nest 63 more.
    event = b'{"specversion": "1.0", "id": "e1", "source": "t", "type": "order.x", "data": %s}'
    api = await h.client.post("/_/events", content=event % deepest[1:-1],
                              headers={"content-type": "application/cloudevents+json"})
    assert (hook.status_code, api.status_code) == (202, 202)
    (stored_hook,) = await h.events_of("orders")
    (stored_api,) = await h.events_of("sink")
    assert json.dumps(stored_hook.data) == "[" * 63 + "[]" + "]" * 63
    assert json.dumps(stored_api.data) == "[" * 62 + "[]" + "]" * 62


async def test_ordinary_and_extreme_finite_floats_are_taken(h: Harness) -> None:
    body = b'{"a": 1.5, "b": -0.25, "c": 1.7976931348623157e308, "d": -1e308, "e": 1e-999}'
    data = {"a": 1.5, "b": -0.25, "c": 1.7976931348623157e308, "d": -1e308, "e": 0.0}
    hook = await h.client.post("/hooks/orders", content=body,
                               headers={"content-type": "application/json"})
    event = b'{"specversion": "1.0", "id": "e1", "source": "t", "type": "order.x", "data": %s}'
    api = await h.client.post("/_/events", content=event % body,
                              headers={"content-type": "application/cloudevents+json"})
    assert (hook.status_code, api.status_code) == (202, 202)
    assert [e.data for e in await h.events_of("orders")] == [data]
    assert [e.data for e in await h.events_of("sink")] == [data]


async def test_unknown_path_404_wrong_method_405(h: Harness) -> None:
    r = await h.client.post("/hooks/nope", json={})
    assert r.status_code == 404 and r.json()["error"]
    r = await h.client.delete("/hooks/orders")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST, PUT"


async def test_api_refusals_are_json_too(h: Harness) -> None:
    r = await h.client.get("/_/events")
    assert (r.status_code, r.headers["allow"]) == (405, "POST")
    assert r.json() == {"error": "method not allowed (allow: POST)"}
    r = await h.client.post("/_/functions", json={})
    assert (r.status_code, r.headers["allow"]) == (405, "GET, HEAD")
    assert r.json() == {"error": "method not allowed (allow: GET, HEAD)"}
    r = await h.client.get("/_/nope")
    assert r.status_code == 404 and r.json() == {"error": "not found"}


async def test_async_idempotency_key_returns_the_first_answer(h: Harness) -> None:
    first = await h.client.post("/hooks/orders", json={"n": 1}, headers={"Idempotency-Key": "k1"})
    again = await h.client.post("/hooks/orders", json={"n": 1}, headers={"Idempotency-Key": "k1"})
    other = await h.client.post("/hooks/orders", json={"n": 1}, headers={"Idempotency-Key": "k2"})
    assert first.status_code == again.status_code == other.status_code == 202
    assert first.json() == again.json() != other.json()
    assert await h.pending() == {"orders": 2}


# -- body limits and slow clients ------------------------------------------------

async def test_body_over_max_body_is_413(h: Harness) -> None:
    r = await h.client.post("/hooks/small", content=b"x" * 101)
    assert r.status_code == 413
    r = await h.client.post("/hooks/small", content=b"x" * 100)
    assert r.status_code == 202


async def test_chunked_body_without_length_is_bounded_while_reading(h: Harness) -> None:
    head = b"POST /hooks/small HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    chunk = b"40\r\n" + b"y" * 64 + b"\r\n"
    # Never terminated: the answer must come from counting, not from the end of the body.
    reply, _ = await raw_exchange(h, [head, chunk, chunk], pause=0.01)
    assert reply.startswith(b"HTTP/1.1 413")
    assert await h.pending() == {}


async def raw_exchange(h: Harness, parts: Sequence[bytes], pause: float) -> tuple[bytes, int]:
    """Send `parts` with pauses while reading until the server closes; (reply, parts sent).

    Parts sent, not seconds, tell a cut-off: on a loaded host the pauses themselves stretch.
    """
    reply = b""
    sent = 0
    gone = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
            ConnectionResetError)
    async with await anyio.connect_tcp("127.0.0.1", h.listening.port) as stream:

        async def read() -> None:
            nonlocal reply
            try:
                while True:
                    reply += await stream.receive()
            except gone:
                pass
            tg.cancel_scope.cancel()  # the server hung up: stop sending

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                try:
                    for part in parts:
                        await stream.send(part)
                        sent += 1
                        await anyio.sleep(pause)  # the slowness under test, not a wait for work
                except gone:
                    pass
    return reply, sent


async def test_slow_body_is_cut_off(h: Harness) -> None:
    head = (b"POST /hooks/orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\n\r\n")
    reply, sent = await raw_exchange(h, [head] + [b" "] * 100, pause=0.05)
    assert reply.startswith(b"HTTP/1.1 408")
    assert sent < 101
    assert await h.pending() == {}


async def test_slow_headers_are_cut_off(h: Harness) -> None:
    parts = [bytes([c]) for c in b"POST /hooks/orders HTTP/1.1\r\nhost: slow-loris\r\n"]
    reply, sent = await raw_exchange(h, parts, pause=0.05)
    assert reply == b""  # closed before any request was read
    assert sent < len(parts)


async def test_slow_headers_of_a_second_keep_alive_request_are_cut_off(h: Harness) -> None:
    # The deadline re-arms after each response: a fast first request buys no slack.
    first = (b"POST /hooks/orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
             b"content-length: 2\r\n\r\n{}")
    parts = [first] + [bytes([c]) for c in b"POST /hooks/orders HTTP/1.1\r\nhost: slow\r\n"]
    reply, sent = await raw_exchange(h, parts, pause=0.05)
    assert reply.startswith(b"HTTP/1.1 202") and reply.count(b"HTTP/1.1") == 1
    assert sent < len(parts)
    assert await h.pending() == {"orders": 1}


async def test_api_paths_never_reach_the_webhook_table(h: Harness) -> None:
    for path in ("/_/nope", "/_"):
        r = await h.client.post(path, json={})
        assert r.status_code == 404 and r.json() == {"error": "not found"}
    r = await h.client.get("/_/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


# -- signatures -----------------------------------------------------------------

async def test_standard_signature_accepted_and_repeat_deduplicated(h: Harness) -> None:
    body = b'{"payment": "p_1"}'
    hdrs = standard_headers(SECRET, "msg_1", body)
    first = await h.client.post("/hooks/signed", content=body, headers=hdrs)
    again = await h.client.post("/hooks/signed", content=body, headers=hdrs)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert await h.pending() == {"signed": 1}


async def test_key_rotation_accepts_any_listed_signature(h: Harness) -> None:
    body = b'{"payment": "p_2"}'
    old = standard_headers(OLD_SECRET, "msg_2", body)["webhook-signature"]
    hdrs = standard_headers(SECRET, "msg_2", body, extra=old)
    assert hdrs["webhook-signature"].count("v1,") == 2
    r = await h.client.post("/hooks/signed", content=body, headers=hdrs)
    assert r.status_code == 202


@pytest.mark.parametrize("case", ["wrong-key", "stale", "tampered", "missing"])
async def test_bad_signature_is_401_and_stores_nothing(h: Harness, case: str) -> None:
    body = b'{"payment": "p_3"}'
    secret = OLD_SECRET if case == "wrong-key" else SECRET
    stamp = int(time.time()) - 301 if case == "stale" else None
    hdrs = standard_headers(secret, "msg_3", body, stamp)
    if case == "missing":
        del hdrs["webhook-signature"]
    sent = body.replace(b"p_3", b"p_4") if case == "tampered" else body
    r = await h.client.post("/hooks/signed", content=sent, headers=hdrs)
    assert r.status_code == 401
    assert await h.pending() == {}


def github_headers(body: bytes, delivery: str | None, secret: bytes = GH_SECRET.encode()
                   ) -> dict[str, str]:
    headers = {"X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256)
               .hexdigest(), "content-type": "application/json"}
    if delivery is not None:
        headers["X-GitHub-Delivery"] = delivery
    return headers


async def test_github_signature(h: Harness) -> None:
    body = b'{"action": "opened"}'
    bad = github_headers(body, "d-1", secret=b"nope")
    r = await h.client.post("/hooks/gh", content=body, headers=bad)
    assert r.status_code == 401
    r = await h.client.post("/hooks/gh", content=body, headers=github_headers(body, "d-1"))
    assert r.status_code == 202
    assert await h.pending() == {"gh": 1}


async def test_github_delivery_sent_five_times_is_stored_once(h: Harness) -> None:
    # GitHub signs the body only: without the delivery id, a captured request
    # replayed forever, each time as a new event (issue 17, point 4).
    body = b'{"action": "opened", "number": 7}'
    answers = [await h.client.post("/hooks/gh", content=body,
                                   headers=github_headers(body, "72d3162e-cc78-11e3-81ab"))
               for _ in range(5)]
    assert [r.status_code for r in answers] == [202] * 5
    assert len({r.json()["id"] for r in answers}) == 1
    other = await h.client.post("/hooks/gh", content=body,
                                headers=github_headers(body, "72d3162e-cc78-11e3-81ac"))
    assert other.status_code == 202 and other.json() != answers[0].json()
    assert await h.pending() == {"gh": 2}
    assert sorted(e.id for e in await h.events_of("gh")) == sorted(
        {answers[0].json()["id"], other.json()["id"]})


@pytest.mark.parametrize("delivery", [None, "", "x" * 256, "a\tb"])
async def test_github_request_without_a_usable_delivery_id_is_400(
    h: Harness, delivery: str | None
) -> None:
    body = b'{"action": "opened"}'
    headers = github_headers(body, None)
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    if delivery is not None:
        raw.append((b"x-github-delivery", delivery.encode()))
    r = await h.client.post("/hooks/gh", content=body, headers=raw)
    assert r.status_code == 400
    assert r.json() == {"error": "X-GitHub-Delivery must be 1 to 255 printable characters"}
    assert await h.pending() == {}


async def test_missing_secret_variable_is_a_500_not_a_401(h: Harness) -> None:
    body = b"{}"
    r = await h.client.post("/hooks/unset", content=body,
                            headers=standard_headers(SECRET, "m", body))
    assert r.status_code == 500
    assert r.json() == {"error": "webhook secret is not configured"}
    assert await h.pending() == {}


# -- POST /_/events ---------------------------------------------------------------

async def test_events_structured_binary_and_batch(h: Harness) -> None:
    one = {"specversion": "1.0", "id": "e1", "source": "test", "type": "order.created",
           "data": {"n": 1}, "time": "2024-05-01T10:00:00Z", "tenant": "acme"}
    r = await h.client.post("/_/events", content=json.dumps(one),
                            headers={"content-type": "application/cloudevents+json"})
    assert (r.status_code, r.json()) == (202, {"ids": ["e1"], "matched": [1]})
    r = await h.client.post("/_/events", content=b"raw", headers={
        "ce-specversion": "1.0", "ce-id": "e2", "ce-source": "test", "ce-type": "order.paid",
        "content-type": "application/octet-stream"})
    assert (r.status_code, r.json()) == (202, {"ids": ["e2"], "matched": [1]})
    batch: list[dict[str, Any]] = [
        {**one, "id": "e3"}, {**one, "id": "e4", "data_base64": "AAE=", "data": None},
    ]
    del batch[1]["data"]
    r = await h.client.post("/_/events", content=json.dumps(batch),
                            headers={"content-type": "application/cloudevents-batch+json"})
    assert (r.status_code, r.json()) == (202, {"ids": ["e3", "e4"], "matched": [1, 1]})
    events = {e.id: e for e in await h.events_of("sink")}
    assert set(events) == {"e1", "e2", "e3", "e4"}
    assert events["e1"].data == {"n": 1} and events["e1"].extensions["tenant"] == "acme"
    assert events["e2"].data == b"raw" and events["e4"].data == b"\x00\x01"


async def test_events_answer_how_many_functions_each_reached(h: Harness) -> None:
    """An event type no function subscribes to (a typo) is stored, and shows as 0."""
    batch = [{"specversion": "1.0", "source": "t", "id": i, "type": t}
             for i, t in (("a", "order.created"), ("b", "order.creatd.x"), ("c", "ordr.created"))]
    r = await h.client.post("/_/events", content=json.dumps(batch),
                            headers={"content-type": "application/cloudevents-batch+json"})
    assert (r.status_code, r.json()) == (202, {"ids": ["a", "b", "c"], "matched": [1, 1, 0]})
    assert await stored(h) == 3


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        ({"specversion": "0.3", "id": "x", "source": "s", "type": "t"}, "cloudevents+json",
         "specversion"),
        ({"specversion": "1.0", "source": "s", "type": "t"}, "cloudevents+json", "'id'"),
        ({"specversion": "1.0", "id": "x", "source": "s"}, "cloudevents+json", "'type'"),
        ({"specversion": "1.0", "id": "x", "source": "s", "type": "t"}, "cloudevents-batch+json",
         "JSON array"),
        ({"specversion": "1.0", "id": "x", "source": "s", "type": "t", "time": "yesterday"},
         "cloudevents+json", "RFC 3339"),
    ],
)
async def test_events_bad_input_is_400(
    h: Harness, body: dict[str, Any], content_type: str, message: str
) -> None:
    r = await h.client.post("/_/events", content=json.dumps(body),
                            headers={"content-type": f"application/{content_type}"})
    assert r.status_code == 400
    assert message in r.json()["error"]
    assert await h.pending() == {}


@pytest.mark.parametrize("content_type", [None, "application/json", "text/plain",
                                          "application/cloudevents"])
async def test_events_in_no_cloudevents_mode_are_415(h: Harness, content_type: str | None) -> None:
    body = {"specversion": "1.0", "id": "x", "source": "s", "type": "order.x"}
    headers = {} if content_type is None else {"content-type": content_type}
    r = await h.client.post("/_/events", content=json.dumps(body), headers=headers)
    assert r.status_code == 415
    assert "binary mode" in r.json()["error"]
    assert await h.pending() == {} and await stored(h) == 0


BAD_FORMS = {
    # field, value: what ctx.emit and fnrun emit refuse (SPEC 4)
    "type with a space": ("type", "order created"),
    "type with a wildcard": ("type", "order.*"),
    "type with a newline": ("type", "order.created\nx"),
    "type with an empty segment": ("type", "order..created"),
    "type past 255 characters": ("type", "order." + "t" * 250),
    "id with a newline": ("id", "e1\ne2"),
    "id with an escape": ("id", "e\x1b[2J"),
    "id past 255 characters": ("id", "i" * 256),
    "id of 1800 characters": ("id", "i" * 1800),  # two in a batch stay under max_body
}


async def stored(h: Harness) -> int:
    """Every retained event, delivered to a function or not."""
    return await h.view.store.replay("sink", 0.0, lambda _type: True, time.time())


@pytest.mark.parametrize("case", sorted(BAD_FORMS))
async def test_events_take_the_types_and_ids_ctx_emit_takes(h: Harness, case: str) -> None:
    field, value = BAD_FORMS[case]
    event = {"specversion": "1.0", "id": "e1", "source": "s", "type": "order.x", field: value}
    good = {**event, "id": "e0", "type": "order.x"}
    structured = await h.client.post("/_/events", content=json.dumps(event),
                                     headers={"content-type": "application/cloudevents+json"})
    batch = await h.client.post("/_/events", content=json.dumps([good, event]),
                                headers={"content-type": "application/cloudevents-batch+json"})
    for r, where in ((structured, ""), (batch, "event 1: ")):
        assert r.status_code == 400, r.text
        assert r.json()["error"].startswith(f"{where}{field} {value!r:.20}")
    if "\n" not in value and "\x1b" not in value:  # what a header can carry
        headers = {f"ce-{k}": v for k, v in event.items()}
        binary = await h.client.post("/_/events", content=b"{}", headers=headers)
        assert binary.status_code == 400 and binary.json()["error"].startswith(field)
    assert await h.pending() == {} and await stored(h) == 0


async def test_events_take_the_longest_type_and_id_and_any_printable_id(h: Harness) -> None:
    events = [
        {"specversion": "1.0", "source": "s", "type": "order." + "t" * 249, "id": "i" * 255},
        {"specversion": "1.0", "source": "s", "type": "order.Paid_v2-eu", "id": "n° 42 / ü"},
    ]
    r = await h.client.post("/_/events", content=json.dumps(events),
                            headers={"content-type": "application/cloudevents-batch+json"})
    assert (r.status_code, r.json()) == (202, {"ids": ["i" * 255, "n° 42 / ü"],
                                           "matched": [1, 1]})
    assert sorted(e.id for e in await h.events_of("sink")) == ["i" * 255, "n° 42 / ü"]


async def test_events_body_limit(h: Harness) -> None:
    big = {"specversion": "1.0", "id": "x", "source": "s", "type": "order.x", "data": "z" * 5000}
    r = await h.client.post("/_/events", content=json.dumps(big),
                            headers={"content-type": "application/cloudevents+json"})
    assert r.status_code == 413


# -- listings and metrics ------------------------------------------------------------

async def test_functions_invocations_dead_letters_and_metrics(h: Harness) -> None:
    assert (await h.client.get("/_/functions")).json() == [{"name": "orders"}, {"name": "sink"}]
    await h.view.publish([Event(type="order.a", id="ok1"), Event(type="order.b", id="bad1")])
    now = time.time() + 1
    for delivery in await h.view.store.claim("sink", 10, now):
        if delivery.event.id == "ok1":
            await h.view.store.succeed(delivery, Outcome("ok", now, 0.02, result={"json": 1}), [])
        else:
            await h.view.store.fail(delivery, Outcome("error", now, 0.01, error="boom",
                                                      traceback="Traceback: boom"), None)
    history = (await h.client.get("/_/invocations", params={"function": "sink"})).json()
    assert sorted((r["event_id"], r["outcome"]) for r in history) == [
        ("bad1", "error"), ("ok1", "ok")]
    assert len((await h.client.get("/_/invocations", params={"limit": "1"})).json()) == 1
    assert (await h.client.get("/_/invocations", params={"limit": "0"})).status_code == 400
    dead = (await h.client.get("/_/dead-letters", params={"function": "sink"})).json()
    assert [(d["event"]["id"], d["error"]) for d in dead] == [("bad1", "boom")]
    assert (await h.client.get("/_/dead-letters", params={"function": "orders"})).json() == []

    before = (await h.client.get("/_/metrics"))
    assert before.headers["content-type"].startswith("text/plain")
    assert 'fnrun_invocations_total{function="sink",outcome="ok"}' not in before.text
    h.view.metrics.invocation("sink", "ok", 0.02, 1)
    after = (await h.client.get("/_/metrics")).text
    assert 'fnrun_invocations_total{function="sink",outcome="ok"} 1.0' in after


async def test_metrics_render_attempt_counts_and_duration_histogram(h: Harness) -> None:
    for outcome, duration, attempt in (("ok", 0.001, 1), ("ok", 0.3, 2), ("error", 90.0, 3)):
        h.view.metrics.invocation("sink", outcome, duration, attempt)
    text = (await h.client.get("/_/metrics")).text
    series = 'fnrun_invocation_duration_seconds_{}{{function="sink"{}}} {}'
    for expected in (
        'fnrun_invocations_total{function="sink",outcome="ok"} 2.0',
        'fnrun_invocations_total{function="sink",outcome="error"} 1.0',
        'fnrun_redeliveries_total{function="sink"} 2.0',
        series.format("bucket", ',le="0.001"', "1.0"),  # a bound is inclusive
        series.format("bucket", ',le="0.25"', "1.0"),
        series.format("bucket", ',le="0.5"', "2.0"),
        series.format("bucket", ',le="60.0"', "2.0"),
        series.format("bucket", ',le="+Inf"', "3.0"),
        series.format("count", "", "3.0"),
        series.format("sum", "", "90.301"),
    ):
        assert expected in text.splitlines(), expected


# -- the token rule ---------------------------------------------------------------------

def test_check_bind_refuses_public_host_without_token(tmp_path: Path) -> None:
    public = Settings(project=tmp_path, functions=tmp_path, http=HttpSettings(host="0.0.0.0"))
    with pytest.raises(UsageError, match="FNRUN_TOKEN"):
        check_bind(public, {})
    check_bind(public, {"FNRUN_TOKEN": "t0k3n"})
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        local = Settings(project=tmp_path, functions=tmp_path, http=HttpSettings(host=host))
        check_bind(local, {})


async def test_public_bind_requires_bearer_token_except_health(tmp_path: Path) -> None:
    async for h in start(tmp_path, host="0.0.0.0", environ={"FNRUN_TOKEN": "t0k3n"}):
        assert (await h.client.get("/_/health")).status_code == 200
        for path in ("/_/functions", "/_/metrics", "/_/invocations", "/_/dead-letters"):
            assert (await h.client.get(path)).status_code == 401
            wrong = await h.client.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            right = await h.client.get(path, headers={"Authorization": "Bearer t0k3n"})
            assert right.status_code == 200, path
        r = await h.client.post("/_/events", content=b"{}")
        assert r.status_code == 401
        # webhooks carry their own auth (signatures), never the operator token
        assert (await h.client.post("/hooks/orders", json={})).status_code == 202


async def test_token_set_is_required_on_loopback_too(tmp_path: Path) -> None:
    # It was required off loopback only: any local process or rebound page got in.
    async for h in start(tmp_path, environ={"FNRUN_TOKEN": "t0k3n"}):
        for path, methods in h.app.api_routes:
            method = "POST" if "POST" in methods else "GET"
            r = await h.client.request(method, path)
            if path == "/_/health":
                assert r.status_code == 200
            elif path == "/_/ui":  # the dashboard's page holds no data; its reads are closed
                assert r.status_code == 200
            elif path == "/_/ui/login":  # takes the token from the page only (dashboard/gate.py)
                assert r.status_code == 403
                assert "Origin" in r.json()["error"]
            else:
                assert r.status_code == 401, path
                assert r.json() == {"error": "missing or wrong bearer token"}
        right = await h.client.get("/_/invocations", headers={"Authorization": "Bearer t0k3n"})
        assert right.status_code == 200
        assert (await h.client.post("/hooks/orders", json={})).status_code == 202
        assert await h.pending() == {"orders": 1}


@pytest.mark.parametrize("query", ["token=t0k3n", "access_token=anything", "TOKEN=", "t=t0k3n",
                                   "function=sink&x=t0k3n"])
async def test_a_token_in_the_query_string_is_400(tmp_path: Path, query: str) -> None:
    async for h in start(tmp_path, environ={"FNRUN_TOKEN": "t0k3n"}):
        for auth in ({}, {"Authorization": "Bearer t0k3n"}):
            r = await h.client.get(f"/_/invocations?{query}", headers=auth)
            assert r.status_code == 400
            assert "Authorization header" in r.json()["error"]
        other = await h.client.get("/_/invocations?function=t0k", headers={
            "Authorization": "Bearer t0k3n"})
        assert other.status_code == 200


API_BODY = json.dumps({"specversion": "1.0", "id": "rebound", "source": "s", "type": "order.x"})


async def test_a_foreign_host_reaches_no_api_route(h: Harness) -> None:
    """DNS rebinding: a page whose name now resolves to 127.0.0.1 sends its own
    name as Host. Every route the app has is tried, so a new one cannot escape."""
    routes = h.app.api_routes
    assert {path for path, _ in routes} >= {"/_/health", "/_/events", "/_/functions",
                                            "/_/metrics", "/_/invocations", "/_/dead-letters"}
    tried = 0
    for path, methods in [*routes, ("/_/nope", {"GET"}), ("/_", {"POST"})]:
        for method in sorted(methods):
            for host in ("evil.example", "evil.example:8080", "localhost.evil.example",
                         "127.0.0.1.nip.io"):
                r = await h.client.request(method, path, content=API_BODY, headers={
                    "host": host, "content-type": "application/cloudevents+json"})
                assert r.status_code == 421, (method, path, host)
                if method != "HEAD":
                    assert "http.allowed_hosts" in r.json()["error"]
                tried += 1
    assert tried >= 4 * 8
    assert await stored(h) == 0 and await h.pending() == {}
    # Webhooks are not the API: they answer whatever the Host, with their own auth.
    r = await h.client.post("/hooks/orders", json={}, headers={"host": "evil.example"})
    assert r.status_code == 202


async def test_loopback_names_and_allowed_hosts_reach_the_api(tmp_path: Path) -> None:
    async for h in start(tmp_path, allowed_hosts=("fnrun.internal", "10.1.2.3", "fd00::1")):
        for host in ("127.0.0.1", "127.0.0.1:8080", "localhost", "LOCALHOST:1", "[::1]",
                     "[::1]:8080", "127.0.0.2", "fnrun.internal", "FNRUN.internal.:443",
                     "10.1.2.3:80", "[fd00::1]:80"):
            r = await h.client.post("/_/events", content=API_BODY, headers={
                "host": host, "content-type": "application/cloudevents+json"})
            assert r.status_code == 202, host
        for host in ("fnrun.internal.evil.example", "10.1.2.4", "[fd00::2]", "[::1", ""):
            r = await h.client.get("/_/health", headers={"host": host})
            assert r.status_code == 421, host
    async for h in start(tmp_path / "public", host="0.0.0.0",
                         environ={"FNRUN_TOKEN": "t0k3n"}):
        # The address served is a name clients may use; other names are not.
        assert (await h.client.get("/_/health", headers={"host": "0.0.0.0:1"})).status_code == 200
        assert (await h.client.get("/_/health", headers={"host": "10.1.2.3"})).status_code == 421


async def test_a_websocket_handshake_from_a_foreign_host_is_refused(h: Harness) -> None:
    # No /_/ route takes a WebSocket today (a loopback Host gets the JSON 404);
    # the Door refuses the handshake itself, so a route added later is covered.
    upgrade = (b"GET /_/health HTTP/1.1\r\nhost: %s\r\nupgrade: websocket\r\n"
               b"connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"sec-websocket-version: 13\r\n\r\n")
    local, _ = await raw_exchange(h, [upgrade % b"127.0.0.1"], pause=0)
    foreign, _ = await raw_exchange(h, [upgrade % b"evil.example"], pause=0)
    assert local.startswith(b"HTTP/1.1 404") and foreign.startswith(b"HTTP/1.1 403")


@pytest.mark.parametrize("hosts", [[], [b"127.0.0.1", b"evil.example"],
                                   [b"127.0.0.1", b"127.0.0.1"]])
async def test_no_host_or_two_hosts_are_refused(h: Harness, hosts: list[bytes]) -> None:
    head = b"GET /_/health HTTP/1.1\r\n" + b"".join(b"host: %s\r\n" % v for v in hosts)
    reply, _ = await raw_exchange(h, [head + b"connection: close\r\n\r\n"], pause=0)
    # h11 refuses these itself (RFC 9112 3.2), with a text 400; httptools leaves them to us.
    assert reply.startswith(b"HTTP/1.1 421" if h.path == "fast" else b"HTTP/1.1 400")


async def test_idle_keep_alive_connection_is_closed_after_keep_alive(tmp_path: Path) -> None:
    async def ok(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
    async with anyio.create_task_group() as tg:
        listening = await tg.start(partial(serve, keep_alive=0.3), ok, HttpSettings(port=0))
        async with await anyio.connect_tcp("127.0.0.1", listening.port) as stream:
            with anyio.fail_after(10):
                for _ in range(2):  # a request inside the keep-alive window is served
                    await stream.send(request)
                    assert (await stream.receive()).startswith(b"HTTP/1.1 204")
                    answered = time.monotonic()  # the keep-alive wait counts from here
                    await anyio.sleep(0.1)  # idle, but within keep-alive: not a wait for work
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await stream.receive()
            # Closed one keep-alive (0.3 s) after the last answer, not sooner, not much later.
            assert 0.25 < time.monotonic() - answered < 2
        tg.cancel_scope.cancel()


async def _exchange(app: Any, request: bytes, body: bytes | None = None) -> list[bytes]:
    """Serve `app`, send `request` (then `body` once the server asks for it), return the reads."""
    reads: list[bytes] = []
    async with anyio.create_task_group() as tg:
        listening = await tg.start(serve, app, HttpSettings(port=0))
        async with await anyio.connect_tcp("127.0.0.1", listening.port) as stream:
            with anyio.fail_after(10):
                await stream.send(request)
                if body is not None:
                    reads.append(await stream.receive())
                    await stream.send(body)
                try:
                    while True:
                        reads.append(await stream.receive())
                        if reads[-1].endswith(b"late body"):
                            break
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass
        tg.cancel_scope.cancel()
    return reads


async def test_a_response_leaves_in_one_write_with_its_body() -> None:
    async def late(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"9")]})
        await anyio.sleep(0.2)  # uvicorn alone would have sent the headers by now
        await send({"type": "http.response.body", "body": b"late body"})

    reads = await _exchange(late, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    assert reads[0].startswith(b"HTTP/1.1 200") and reads[0].endswith(b"\r\n\r\nlate body")


async def test_held_headers_still_leave_for_head_100_continue_and_a_failed_body() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["method"] == "POST":
            assert (await receive())["body"] == b"ab"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"9")]})
        if scope["method"] == "PUT":
            raise RuntimeError("the body never comes")
        if scope["method"] != "HEAD":
            await send({"type": "http.response.body", "body": b"late body"})

    head = await _exchange(app, b"HEAD / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert b"".join(head).startswith(b"HTTP/1.1 200")
    expect = (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n"
              b"expect: 100-continue\r\n\r\n")
    posted = await _exchange(app, expect, body=b"ab")
    assert posted[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert b"".join(posted[1:]).endswith(b"\r\n\r\nlate body")
    failed = await _exchange(app, b"PUT / HTTP/1.1\r\nhost: x\r\n\r\n")
    assert b"".join(failed).startswith(b"HTTP/1.1 200")  # then closed, as uvicorn does
