"""Webhook declarations (parse), route binding and sync reply mapping: pure parts."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from pathlib import Path

import pytest
from starlette.types import Message

from runtime import strict_json
from runtime.errors import ManifestError, Where
from runtime.events import Outcome, new_event_id
from runtime.project.yamlnodes import Reader
from runtime.specs import FunctionSpec, HttpSettings, Project, Settings
from triggers import replies, webhook
from triggers.requests import BodyError, Deadlines, read_body
from triggers.webhook import Trigger, WebhookSpec, parse

pytestmark = pytest.mark.timeout(10)

FILE = Path("functions/hooks.yaml")


def parse_text(text: str) -> WebhookSpec:
    reader = Reader(FILE, text)
    root = reader.compose()
    assert root is not None
    return parse(reader, root)


def test_defaults() -> None:
    spec = parse_text("{path: /hooks/orders}")
    assert (spec.path, spec.methods, spec.mode) == ("/hooks/orders", ("POST",), "async")
    assert (spec.secret_env, spec.signature, spec.max_body) == (None, "none", None)
    assert spec.where == Where(FILE, 1, 1)


def test_path_shorthand() -> None:
    assert parse_text("/hooks/x").path == "/hooks/x"


def test_full_declaration() -> None:
    spec = parse_text(
        "{path: /pay, methods: [post, put], mode: sync, secret_env: PAY_SECRET, max_body: 64KiB}"
    )
    assert spec.methods == ("POST", "PUT")
    assert spec.mode == "sync"
    assert (spec.secret_env, spec.signature) == ("PAY_SECRET", "standard")
    assert spec.max_body == 64 * 1024
    assert spec.conflict_keys() == {("POST", "/pay"), ("PUT", "/pay")}


def test_github_signature() -> None:
    spec = parse_text("{path: /gh, secret_env: GH_SECRET, signature: github}")
    assert spec.signature == "github"


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("{path: hooks}", "1:8", "must start with '/'"),
        ("{path: /_/health}", "1:8", "reserved"),
        ("{path: '/a?b=1'}", "1:8", "plain path"),
        ("{path: /a, methods: [FETCH]}", "1:22", "unknown method 'FETCH'"),
        ("{path: /a, methods: [POST, post]}", "1:28", "listed twice"),
        ("{path: /a, methods: []}", "1:21", "must not be empty"),
        ("{path: /a, mode: fast}", "1:18", "one of async, sync"),
        ("{path: /a, signature: standard}", "1:23", "needs secret_env"),
        ("{path: /a, secret_env: 'whsec_abc+/='}", "1:24", "environment variable"),
        ("{path: /a, max_body: lots}", "1:22", "bad size"),
        ("{path: /a, secret: x}", "1:12", "unknown key 'secret'"),
        ("{methods: [GET]}", "1:1", "needs 'path'"),
        ("{path: 42}", "1:8", "must be a string"),
    ],
)
def test_errors_point_at_the_value(text: str, where: str, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_text(text)
    assert str(info.value).startswith(f"{FILE}:{where}: ")
    assert message in str(info.value)


class _NoIngress:
    """bind() reads only the project; the ingress is never touched here."""


def test_bind_routes_and_default_body_limit(tmp_path: Path) -> None:
    here = Where(FILE, 1, 1)
    fn = FunctionSpec(
        name="pay", where=here, handler_file=tmp_path / "p.py", handler_attr="h",
        triggers=(WebhookSpec(where=here, path="/pay", methods=("POST", "PUT")),
                  WebhookSpec(where=here, path="/small", max_body=10)),
    )
    settings = Settings(project=tmp_path, functions=tmp_path, http=HttpSettings(max_body=1234))
    trigger = Trigger(_NoIngress())  # type: ignore[arg-type]
    trigger.bind(Project(settings, {"pay": fn}))
    routes = trigger._table.routes
    assert set(routes) == {"/pay", "/small"}
    assert {m: (f, limit) for m, (f, _, limit) in routes["/pay"].methods.items()} == {
        "POST": ("pay", 1234), "PUT": ("pay", 1234)}
    assert routes["/small"].methods["POST"][2] == 10
    trigger.bind(Project(settings, {}))
    assert trigger._table.routes == {}


UNUSABLE = {"error": "function returned an unusable result", "id": "ev1"}


def ok(result: object) -> Outcome:
    return Outcome("ok", 0.0, 0.01, result=result)


@pytest.mark.parametrize(
    ("encoded", "status", "kind", "body", "headers"),
    [
        ({"json": {"a": 1}}, 200, "json", {"a": 1}, {}),
        ({"json": [1, 2]}, 200, "json", [1, 2], {}),
        ({"text": "hi"}, 200, "text", "hi", {}),
        ({"bytes": base64.b64encode(b"\x00\x01").decode()}, 200, "bytes", "AAE=", {}),
        ({"status": 201, "body": {"json": {"id": 7}}, "headers": {}}, 201, "json", {"id": 7}, {}),
        ({"status": 418, "body": {"text": "teapot"}, "headers": {"X-A": "b"}}, 418, "text",
         "teapot", {"X-A": "b"}),
        ({"status": 99, "body": {"json": None}, "headers": {}}, 500, "json", UNUSABLE, {}),
    ],
)
def test_sync_answers(
    encoded: object, status: int, kind: str, body: object, headers: dict[str, str]
) -> None:
    assert replies.answer("f", "ev1", ok(encoded)) == {
        "status": status, "kind": kind, "body": body, "headers": headers}


def test_failures_carry_the_id_but_never_the_traceback() -> None:
    failed = Outcome("error", 0.0, 0.1, error="KeyError: 'secret'", traceback="Traceback ...")
    crashed = Outcome("crash", 0.0, 0.1, error="worker died")
    late = Outcome("timeout", 0.0, 5.0, error="timed out")
    for outcome, status in ((failed, 500), (crashed, 500), (late, 504)):
        answer = replies.answer("f", "ev1", outcome)
        assert answer["status"] == status
        assert answer["body"]["id"] == "ev1"
        assert "Traceback" not in str(answer) and "secret" not in str(answer)


@pytest.mark.parametrize(
    "outcome",
    [
        ok({"json": {"a": 1}}),
        ok({"json": None}),
        ok({"json": float("nan")}),
        ok({"text": "hi é"}),
        ok({"text": "\ud800"}),
        ok({"bytes": base64.b64encode(b"\x00\x01").decode()}),
        ok({"status": 204, "body": {"text": ""}, "headers": {}}),
        ok({"status": 418, "body": {"text": "teapot"}, "headers": {"X-A": "b"}}),
        ok(["not", "encoded"]),
        Outcome("timeout", 0.0, 5.0, error="timed out"),
    ],
)
def test_direct_reply_is_the_reply_of_the_storable_answer(outcome: Outcome) -> None:
    # Sync webhooks without an Idempotency-Key skip the answer dict: same bytes on the wire.
    assert replies.reply("f", "ev1", outcome) == replies.response(
        "f", "ev1", replies.answer("f", "ev1", outcome))


@pytest.mark.parametrize(
    "encoded",
    [
        {"json": {"v": float("nan")}},
        {"text": "\ud800"},
        {"status": 200, "body": {"text": "x"}, "headers": {"x-a": "€"}},
        {"status": 99, "body": {"json": None}, "headers": {}},
    ],
)
def test_what_http_cannot_carry_is_a_500_with_the_id(encoded: object) -> None:
    # The worker lets these through as Python values; the reply names the event
    # id, to find the log line by, as a failure does.
    sent = replies.reply("f", "ev1", ok(encoded))
    assert (sent.status, json.loads(sent.body)) == (500, UNUSABLE)


def test_a_recalled_answer_http_cannot_carry_is_a_500_with_the_id() -> None:
    # An Idempotency-Key repeat renders the answer the store kept.
    kept = {"status": 200, "headers": {}, "kind": "json", "body": {"v": float("nan")}}
    sent = replies.response("f", "ev1", kept)
    assert (sent.status, json.loads(sent.body)) == (500, UNUSABLE)


def test_fresh_event_ids_are_distinct_time_ordered_version_7_uuids() -> None:
    before = time.time_ns() // 1_000_000
    ids = [webhook._event_id("/p", None, None) for _ in range(600)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 600
    stamps = []
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        stamps.append(parsed.int >> 80)  # the first 48 bits: Unix time in ms
    assert stamps == sorted(stamps)
    assert before <= stamps[0] and stamps[-1] <= after


def test_a_forked_child_draws_other_event_ids_than_its_parent() -> None:
    new_event_id()  # the parent now holds random bits a child would inherit
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child must never return into pytest
        try:
            os.write(write, " ".join(new_event_id() for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_event_id() for _ in range(50)}
    assert len(child) == 50 and not child & parent
    assert {text[14:] for text in child}.isdisjoint(text[14:] for text in parent)


def test_headers_keep_repeats_joined() -> None:
    scope = {"headers": [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]}
    assert webhook._headers(scope) == {"a": "1, 3", "b": "2"}
    assert webhook._headers({"headers": [(b"c", b"\xe9")]}) == {"c": "é"}


@pytest.mark.anyio
async def test_body_deadline_answers_408_but_leaves_other_cancels_alone() -> None:
    never = asyncio.Event()

    async def stalled() -> Message:
        await never.wait()
        raise AssertionError("unreachable")

    deadlines = Deadlines()
    with pytest.raises(BodyError) as caught:
        await read_body(stalled, {}, 100, 0.05, deadlines)
    assert caught.value.status == 408
    # A cancel from outside stays a cancel, and leaves no deadline behind.
    task = asyncio.ensure_future(read_body(stalled, {}, 100, 30.0, deadlines))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not deadlines._due and not deadlines._expired


@pytest.mark.parametrize(
    "body",
    [b'{"bench": true}', b'  [1, 2.5, "x\\u00e9"]\n', b'\xef\xbb\xbf{"a":1}',
     '{"a": "\u00e9"}'.encode("utf-16"), '{"a": 1}'.encode("utf-16-le"), b'{"a":1} x',
     b'{"a":', b"1\x00", b'"\xff"', b"\t\r\n 7 \t", b'{"a":1}\x0b', b'{"a": Infinity}',
     b"[" * 5000 + b"]" * 5000],
)
def test_json_bodies_parse_exactly_as_strict_json_loads(body: bytes) -> None:
    # The shortcut for small bodies gives what the full parse gives, errors included.
    try:
        expected: object = strict_json.loads(body)
    except ValueError as exc:
        expected = f"invalid JSON body: {exc}"
    try:
        got = webhook._data({"content-type": "application/json"}, body)
    except BodyError as exc:
        assert exc.status == 400
        got = exc.message
    assert got == expected
