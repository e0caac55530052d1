"""Reading an inbound webhook request safely: a bounded, timed body and its signature."""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

from starlette.types import Receive

from triggers.signatures import SignatureError, verify_github, verify_standard

log = logging.getLogger("fnrun.webhook")

_CLOSE = {"connection": "close"}
MAX_DELIVERY_ID = 255
"""Longest `webhook-id` or `X-GitHub-Delivery` taken (GitHub's are 36-character UUIDs)."""


class BodyError(Exception):
    """The request cannot be handled; answer `status` with a JSON error."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class Deadlines:
    """Timeouts for many tasks on one lazily re-armed timer.

    `asyncio.timeout` arms and cancels a loop timer per request, which on
    uvloop cost ~30 us of a no-op webhook's ~170 (measured under wrk). Here
    starting a deadline is a dict store; the one timer fires at the earliest
    deadline only, cancels the tasks that are due, and moves itself on.
    """

    def __init__(self) -> None:
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def start(self, task: asyncio.Task[Any], seconds: float) -> None:
        """Cancel `task` once `seconds` have passed, unless `stop` comes first."""
        loop = task.get_loop()
        deadline = loop.time() + seconds
        self._due[task] = deadline
        timer = self._timer
        if timer is None or deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._fire, loop)

    def stop(self, task: asyncio.Task[Any]) -> bool:
        """Forget `task`'s deadline; True if it expired (and cancelled the task)."""
        self._due.pop(task, None)
        if not self._expired:
            return False
        expired = task in self._expired
        self._expired.discard(task)
        return expired

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now, soonest = loop.time(), math.inf
        for task, deadline in self._due.items():
            if deadline <= now:
                if task not in self._expired:
                    self._expired.add(task)
                    task.cancel()
            else:
                soonest = min(soonest, deadline)
        if soonest < math.inf:
            self._timer = loop.call_at(soonest, self._fire, loop)


async def read_body(
    receive: Receive, headers: Mapping[str, str], limit: int, within: float,
    deadlines: Deadlines,
) -> bytes:
    """The whole body, refused as soon as it passes `limit` bytes or `within` seconds.

    Counting while reading bounds chunked bodies, which carry no
    Content-Length; the deadline covers the whole body, so a client that
    trickles one byte at a time is cut off too. Both errors close the
    connection, since the rest of the body is never read.

    Raises:
        BodyError: 413 too large, 408 too slow, 400 client gone.
    """
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyError(413, f"body over the {limit} byte limit", _CLOSE)
    task = asyncio.current_task()
    assert task is not None
    cancelling = task.cancelling()
    chunks: list[bytes] = []
    size = 0
    deadlines.start(task, within)
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BodyError(400, "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyError(413, f"body over the {limit} byte limit", _CLOSE)
            if not message.get("more_body", False):
                return b"".join((*chunks, chunk)) if chunks else chunk
            chunks.append(chunk)
    except asyncio.CancelledError:
        # Ours only if no one else cancelled the task meanwhile (as asyncio.timeout does).
        if deadlines.stop(task) and task.uncancel() <= cancelling:
            raise BodyError(408, f"body not received within {within:g}s", _CLOSE) from None
        raise
    finally:
        deadlines.stop(task)


def authenticate(
    signature: str, secret_env: str | None, headers: Mapping[str, str], body: bytes, now: float
) -> str | None:
    """Verify the request's signature; return its delivery id, which dedupes repeats.

    That is the signed `webhook-id` of Standard Webhooks, or GitHub's
    `X-GitHub-Delivery` (GitHub signs the body only, so a captured request
    would otherwise replay forever; GitHub always sends the header, and sends
    the same one again when it redelivers).

    Raises:
        BodyError: 401 bad signature; 400 no usable delivery id; 500 when the
            secret is missing or malformed (a deployment mistake, logged, never
            blamed on the client).
    """
    if signature == "none" or secret_env is None:
        return None
    secret = os.environ.get(secret_env)
    if not secret:
        log.error("webhook secret: environment variable %s is not set", secret_env)
        raise BodyError(500, "webhook secret is not configured")
    try:
        if signature == "github":
            verify_github(secret, headers, body)
            delivery = headers.get("x-github-delivery")
        else:
            delivery = verify_standard(secret, headers, body, now)
    except SignatureError as exc:
        raise BodyError(401, f"invalid signature: {exc}") from None
    except ValueError as exc:
        log.error("webhook secret in %s: %s", secret_env, exc)
        raise BodyError(500, "webhook secret is misconfigured") from None
    if not delivery or len(delivery) > MAX_DELIVERY_ID or not delivery.isprintable():
        name = "X-GitHub-Delivery" if signature == "github" else "webhook-id"
        raise BodyError(400, f"{name} must be 1 to {MAX_DELIVERY_ID} printable characters")
    return delivery
