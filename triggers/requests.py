"""Reading an inbound webhook request safely: a bounded, timed body and its signature."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

from starlette.types import Receive

from triggers.signatures import SignatureError, verify_github, verify_standard

log = logging.getLogger("fnrun.webhook")

_CLOSE = {"connection": "close"}


class BodyError(Exception):
    """The request cannot be handled; answer `status` with a JSON error."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


async def read_body(
    receive: Receive, headers: Mapping[str, str], limit: int, within: float
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
    chunks: list[bytes] = []
    size = 0
    # asyncio's timeout, not an anyio cancel scope: a scope per request cost
    # a tenth of a no-op webhook (measured); uvicorn runs on asyncio anyway.
    try:
        async with asyncio.timeout(within):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise BodyError(400, "client disconnected")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyError(413, f"body over the {limit} byte limit", _CLOSE)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise BodyError(408, f"body not received within {within:g}s", _CLOSE) from None


def authenticate(
    signature: str, secret_env: str | None, headers: Mapping[str, str], body: bytes, now: float
) -> str | None:
    """Verify the request's signature; return its verified `webhook-id`, if any.

    Raises:
        BodyError: 401 bad signature; 500 when the secret is missing or malformed
            (a deployment mistake, logged, never blamed on the client).
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
            return None
        return verify_standard(secret, headers, body, now)
    except SignatureError as exc:
        raise BodyError(401, f"invalid signature: {exc}") from None
    except ValueError as exc:
        log.error("webhook secret in %s: %s", secret_env, exc)
        raise BodyError(500, "webhook secret is misconfigured") from None
