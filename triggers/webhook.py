"""Webhook triggers: HTTP routes that publish events (async) or run a function (sync).

A route answers, in this order: 404 unknown path, 405 wrong method, 503
while the runtime is not accepting (starting or draining), 413 body over
`max_body` (counted while reading, so chunked bodies are bounded too), 408
body not received within `body_timeout`, 401 bad signature (nothing stored),
400 a signed request without a usable delivery id, 400 invalid JSON under a
JSON content type (more than 64 levels deep included). Then:

- async: the event (type `fnrun.webhook`, subject = the path) is stored
  durably for the route's function only, then answered `202 {"id": ...}`.
  Its id is derived from the signed delivery id (`webhook-id`, or GitHub's
  `X-GitHub-Delivery`) or else `Idempotency-Key` when present, so a repeated
  delivery is deduplicated by the store's idempotent publish.
- sync: the function runs at once through `ingress.invoke`; its encoded
  return value becomes the response (see `triggers.replies`). Under a
  delivery id or `Idempotency-Key`, a repeat is answered from the store
  without running the function again.

Secrets are read from the environment (`secret_env`) at request time, so a
rotated secret needs no reload; a missing variable answers 500 and logs why.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl

import anyio
import yaml
from starlette.types import Receive, Scope, Send

from runtime import strict_json
from runtime.events import Event, HttpInfo, new_event_id
from runtime.ingress import Ingress
from runtime.project.yamlnodes import Node, Reader
from runtime.specs import Project, TriggerSpec
from runtime.tracing.context import TRACEPARENT, TRACESTATE, trace_extensions
from triggers import replies
from triggers.replies import Reply, json_reply
from triggers.requests import BodyError, Deadlines, authenticate, read_body

log = logging.getLogger("fnrun.webhook")

EVENT_TYPE = "fnrun.webhook"
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
BODY_TIMEOUT = 30.0
"""Seconds a client gets to send the whole body (slow clients are cut off)."""
MAX_IDEMPOTENCY_KEY = 255
_NAMESPACE = uuid.UUID("6f1c9d4e-2b7a-4c1e-9a57-3d0f8e2b6a11")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYS = ("path", "methods", "mode", "secret_env", "signature", "max_body")


@dataclass(frozen=True)
class WebhookSpec(TriggerSpec):
    """`webhook: {path, methods, mode, secret_env, signature, max_body}`."""

    kind: ClassVar[str] = "webhook"
    path: str = "/"
    methods: tuple[str, ...] = ("POST",)
    mode: Literal["async", "sync"] = "async"
    secret_env: str | None = None
    signature: Literal["standard", "github", "none"] = "none"
    max_body: int | None = None
    """Bytes; None takes `http.max_body` from the settings at bind time."""

    def conflict_keys(self) -> set[tuple[str, str]]:
        """(method, path) pairs no other webhook may declare."""
        return {(method, self.path) for method in self.methods}


def parse(reader: Reader, node: Node) -> WebhookSpec:
    """Validate one `webhook:` declaration (a path string or a mapping)."""
    if isinstance(node, yaml.ScalarNode):
        return WebhookSpec(where=reader.where(node), path=_path(reader, node))
    keys = reader.mapping(node, "webhook", allowed=_KEYS, required=("path",))
    methods: tuple[str, ...] = ("POST",)
    if "methods" in keys:
        methods = _methods(reader, keys["methods"])
    mode = _choice(reader, keys.get("mode"), "mode", ("async", "sync"), "async")
    secret_env = None
    if "secret_env" in keys:
        secret_env = reader.string(keys["secret_env"], "webhook secret_env")
        if not _ENV_NAME.fullmatch(secret_env):
            raise reader.error(keys["secret_env"], "secret_env must name an environment variable"
                               f" (the secret itself stays in the env), got {secret_env!r}")
    default_sig = "standard" if secret_env else "none"
    signature = _choice(reader, keys.get("signature"), "signature",
                        ("standard", "github", "none"), default_sig)
    if signature != "none" and secret_env is None:
        raise reader.error(keys["signature"], f"signature {signature!r} needs secret_env")
    max_body = reader.size(keys["max_body"], "webhook max_body") if "max_body" in keys else None
    return WebhookSpec(
        where=reader.where(node), path=_path(reader, keys["path"]), methods=methods,
        mode=mode, secret_env=secret_env, signature=signature, max_body=max_body,  # type: ignore[arg-type]
    )


def _path(reader: Reader, node: Node) -> str:
    path = reader.string(node, "webhook path")
    if not path.startswith("/"):
        raise reader.error(node, f"webhook path must start with '/', got {path!r}")
    if path.startswith("/_/") or path == "/_":
        raise reader.error(node, "webhook paths under /_/ are reserved for fnrun's API")
    if any(c in path for c in "?#% \t") or "//" in path:
        raise reader.error(node, f"webhook path {path!r} must be a plain path")
    return path


def _methods(reader: Reader, node: Node) -> tuple[str, ...]:
    items = reader.sequence(node, "webhook methods")
    if not items:
        raise reader.error(node, "webhook methods must not be empty")
    out: list[str] = []
    for item in items:
        method = reader.string(item, "webhook method").upper()
        if method not in METHODS:
            known = ", ".join(sorted(METHODS))
            raise reader.error(item, f"unknown method {method!r} (known: {known})")
        if method in out:
            raise reader.error(item, f"method {method!r} listed twice")
        out.append(method)
    return tuple(out)


def _choice(
    reader: Reader, node: Node | None, what: str, allowed: tuple[str, ...], default: str
) -> str:
    if node is None:
        return default
    value = reader.string(node, f"webhook {what}")
    if value not in allowed:
        options = ", ".join(allowed)
        raise reader.error(node, f"webhook {what} must be one of {options}, got {value!r}")
    return value


@dataclass
class Route:
    """One declared path: method -> (function, spec, body limit in bytes)."""

    path: str
    methods: dict[str, tuple[str, WebhookSpec, int]] = field(default_factory=dict)


@dataclass
class _Table:
    routes: Mapping[str, Route] = field(default_factory=dict)
    retention: float = 7 * 86400.0


class Trigger:
    """The live webhook routes; `asgi` serves them behind fnrun's `/_/` API."""

    def __init__(self, ingress: Ingress) -> None:
        self.ingress = ingress
        self.body_timeout = BODY_TIMEOUT
        self._table = _Table()
        self._deadlines = Deadlines()
        self._running: dict[str, anyio.Lock] = {}
        """Sync calls in flight under a delivery id or Idempotency-Key, by store key."""

    def bind(self, project: Project) -> None:
        """Swap in the routes of `project` (called at start and after each reload)."""
        routes: dict[str, Route] = {}
        for function in project.functions.values():
            for spec in function.triggers_of("webhook"):
                assert isinstance(spec, WebhookSpec)
                route = routes.setdefault(spec.path, Route(spec.path))
                limit = spec.max_body or project.settings.http.max_body
                for method in spec.methods:
                    route.methods[method] = (function.name, spec, limit)
                if spec.secret_env and spec.secret_env not in os.environ:
                    log.warning("webhook %s: environment variable %s is not set; requests will "
                                "answer 500 until it is", spec.path, spec.secret_env)
        self._table = _Table(routes, project.settings.retention.events)

    async def run(self) -> None:
        """Nothing runs in the background: requests drive everything."""

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app of the declared routes."""
        if scope["type"] != "http":
            return
        table = self._table  # one consistent table per request, even across a reload
        route = table.routes.get(scope["path"])
        if route is None:
            return await json_reply(404, {"error": "no such webhook"})(send)
        target = route.methods.get(scope["method"])
        if target is None:
            allow = ", ".join(sorted(route.methods))
            return await json_reply(405, {"error": f"method not allowed (allow: {allow})"},
                                    {"allow": allow})(send)
        if not self.ingress.accepting:
            return await json_reply(503, {"error": "not accepting requests (starting or "
                                          "stopping)"}, {"retry-after": "1"})(send)
        reply = await self._handle(scope, receive, target, table.retention)
        await reply(send)

    async def _handle(
        self, scope: Scope, receive: Receive, target: tuple[str, WebhookSpec, int],
        retention: float,
    ) -> Reply:
        function, spec, limit = target
        headers = _headers(scope)
        try:
            body = await read_body(receive, headers, limit, self.body_timeout, self._deadlines)
            delivery = None
            if spec.signature != "none":
                delivery = authenticate(
                    spec.signature, spec.secret_env, headers, body, self.ingress.clock.now()
                )
            data = _data(headers, body)
        except BodyError as exc:
            return json_reply(exc.status, {"error": exc.message}, exc.headers)
        idem = headers.get("idempotency-key")
        if idem is not None and not 0 < len(idem) <= MAX_IDEMPOTENCY_KEY:
            return json_reply(400, {"error": "bad Idempotency-Key"})
        event = Event(
            type=EVENT_TYPE, source="fnrun/webhook", subject=spec.path, data=data,
            id=_event_id(spec.path, delivery, idem),
            http=HttpInfo(scope["method"], spec.path, _query(scope), headers),
            # The caller's trace, when it sent a valid one (W3C trace context).
            extensions=trace_extensions(headers.get(TRACEPARENT), headers.get(TRACESTATE)),
        )
        if spec.mode == "async":
            await self.ingress.store.publish([(event, [function])])
            return json_reply(202, {"id": event.id})
        if delivery is not None:
            return await self._invoke_once(function, event, f"delivery:{spec.path}:{delivery}",
                                           retention)
        if idem is None:
            return replies.reply(function, event.id, await self.ingress.invoke(function, event))
        return await self._invoke_once(function, event, f"idem:{spec.path}:{idem}", retention)

    async def _invoke_once(
        self, function: str, event: Event, key: str, retention: float
    ) -> Reply:
        """A sync call under a delivery id or Idempotency-Key: a repeat answers from the store.

        Repeats racing on this node wait for the first (one lock per key in
        flight); on separate nodes of a cluster both may run, and `remember`
        keeps the first answer.
        """
        lock = self._running.setdefault(key, anyio.Lock())
        try:
            async with lock:
                earlier = await self.ingress.store.recall(key)
                if earlier is not None:
                    return replies.response(function, event.id, earlier)
                outcome = await self.ingress.invoke(function, event)
                answer = replies.answer(function, event.id, outcome)
                earlier = await self.ingress.store.remember(key, answer, ttl=retention)
        finally:
            # The last one out forgets the key (a released lock with waiters stays locked).
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._running.pop(key, None)
        return replies.response(function, event.id, answer if earlier is None else earlier)


def _headers(scope: Scope) -> dict[str, str]:
    """Header names (ASGI lower-cases them) to values; repeats joined with ", " (RFC 9110 5.3)."""
    raw = scope["headers"]
    out = {name.decode("latin-1"): value.decode("latin-1") for name, value in raw}
    if len(out) == len(raw):
        return out
    out = {}
    for raw_name, raw_value in raw:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name in out:
            value = f"{out[name]}, {value}"
        out[name] = value
    return out


def _query(scope: Scope) -> dict[str, str]:
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return {}
    return dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))


def _data(headers: Mapping[str, str], body: bytes) -> Any:
    """Parsed JSON under a JSON content type, else the raw bytes (None when empty)."""
    if not body:
        return None
    media = headers.get("content-type", "")
    if media != "application/json":
        media = media.split(";")[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            return body
    try:
        text = body.decode().strip(_JSON_SPACE)
        strict_json.check_depth(text)
        value, end = strict_json.scan_once(text, 0)
        if end == len(text):
            return value
    except (ValueError, StopIteration, RecursionError):
        pass
    # The shortcut above skips json.loads' encoding detection and whitespace
    # regexes, most of its cost on a small body; anything it did not take (a
    # BOM, UTF-16, an error) goes through `loads` for its exact result or error.
    try:
        return strict_json.loads(body)
    except ValueError as exc:
        raise BodyError(400, f"invalid JSON body: {exc}") from None


_JSON_SPACE = " \t\n\r"


def _event_id(path: str, delivery: str | None, idem: str | None) -> str:
    """Stable for a repeated delivery (same delivery id or key on one path), else fresh."""
    if delivery:
        return str(uuid.uuid5(_NAMESPACE, f"{path}\nwebhook-id\n{delivery}"))
    if idem:
        return str(uuid.uuid5(_NAMESPACE, f"{path}\nidempotency-key\n{idem}"))
    return new_event_id()
