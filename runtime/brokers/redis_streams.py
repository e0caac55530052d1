"""Redis Streams with redis-py: a consumer group read with XREADGROUP, XACK on ack, XADD.

A source is one named consumer of its group (the group is created at the
start or the end of the stream, `Endpoint.start`, if missing). It first
reads its own pending entries, those delivered to it before a crash and
never acknowledged, then new ones; every `ack_wait` seconds it also claims
(XAUTOCLAIM) entries another consumer has held that long, so a consumer
that died for good loses nothing. An entry's `data` field is the body, its
`content-type` field the media type and its other fields the headers; an
entry without `data` is all fields, as a JSON object. A sink's XADD reply
is the confirmation.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio
import redis.exceptions

from runtime.brokers.acking import Acks
from runtime.brokers.base import BrokerError, BrokerUnavailable, Endpoint, Message, Received, Window
from runtime.brokers.publishing import Settle, publish_one
from runtime.brokers.urls import redact

_LOST = (OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_BLOCK_MS = 1000  # one XREADGROUP waits this long on an empty stream


class RedisStreams:
    """One Redis connection pool."""

    binding = "redis"

    def __init__(self, url: str) -> None:
        self._url = url
        self._redis: redis.asyncio.Redis | None = None

    async def connect(self) -> None:
        client = redis.asyncio.Redis.from_url(self._url, socket_connect_timeout=5)
        try:
            await client.ping()
        except (*_LOST, redis.exceptions.RedisError) as exc:
            await client.aclose()
            raise BrokerUnavailable(f"cannot reach Redis at {redact(self._url)}: {exc}") from exc
        self._redis = client

    async def consume(self, endpoint: Endpoint, prefetch: int) -> AsyncIterator[Received]:
        client = self._connected()
        stream, group = _required(endpoint.stream, "stream"), _required(endpoint.group, "group")
        consumer = endpoint.consumer or "fnrun"
        window = Window(prefetch)
        held: set[str] = set()
        acks = _acks(client, stream, group, held)
        try:
            await _ensure_group(client, stream, group, endpoint.start)
            reads = _Reads(client, stream, group, consumer, endpoint.ack_wait, held)
            while True:
                await window.take()
                entries = await reads.next(window.free + 1)
                if not entries:
                    window.give_back()
                    continue
                for index, (entry_id, fields) in enumerate(entries):
                    if index:  # the first one has the slot taken before the read
                        await window.take()
                    held.add(entry_id)
                    yield window.received(_message(stream, entry_id, fields), entry_id, acks)
        except _LOST as exc:
            raise BrokerUnavailable(f"lost Redis at {redact(self._url)}: {exc}") from exc

    async def publish(self, endpoint: Endpoint, message: Message) -> None:
        await publish_one(self.publish_many, endpoint, message)

    async def publish_many(self, messages: Sequence[tuple[Endpoint, Message]],
                           settle: Settle) -> None:
        """One pipeline of XADDs (no MULTI): one round trip, a reply per entry."""
        client = self._connected()
        pipe = client.pipeline(transaction=False)
        for endpoint, message in messages:
            fields: dict[str, str | bytes] = dict(message.headers)
            if message.content_type:
                fields["content-type"] = message.content_type
            fields["data"] = message.body
            pipe.xadd(_required(endpoint.stream, "stream"), fields)  # type: ignore[arg-type]
        try:
            replies = await pipe.execute(raise_on_error=False)
        except _LOST as exc:
            lost = BrokerUnavailable(f"lost Redis at {redact(self._url)}: {exc}")
            for index in range(len(messages)):
                settle(index, lost)
            return
        except redis.exceptions.RedisError as exc:
            refused = BrokerError(f"Redis did not take the messages: {exc}")
            for index in range(len(messages)):
                settle(index, refused)
            return
        for index, reply in enumerate(replies):
            settle(index, BrokerError(f"Redis did not take the message: {reply}")
                   if isinstance(reply, Exception) else None)

    async def backlog(self, endpoint: Endpoint) -> int | None:
        """The group's lag (entries not yet read; Redis 7 tells it), None before Redis 7."""
        client = self._connected()
        try:
            groups = await client.xinfo_groups(_required(endpoint.stream, "stream"))
        except (*_LOST, redis.exceptions.RedisError):
            return None
        for group in groups:
            name = group["name"]
            if (name.decode() if isinstance(name, bytes) else name) == endpoint.group:
                lag = group.get("lag")
                return None if lag is None else int(lag)
        return None

    async def close(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    def _connected(self) -> redis.asyncio.Redis:
        if self._redis is None:
            raise BrokerUnavailable("not connected to Redis")
        return self._redis


class _Reads:
    """Where the next entries come from: own pending first, then new ones and stale claims."""

    def __init__(self, client: redis.asyncio.Redis, stream: str, group: str, consumer: str,
                 ack_wait: float, held: set[str]) -> None:
        self._client, self._stream, self._group, self._consumer = client, stream, group, consumer
        self._idle_ms = int(ack_wait * 1000)
        self._held = held
        self._cursor = "0"  # "0...": own pending entries after this id; ">": new entries
        self._claim_at = time.monotonic() + ack_wait

    async def next(self, count: int) -> list[tuple[str, dict[bytes, bytes]]]:
        if self._cursor == ">" and time.monotonic() >= self._claim_at:
            self._claim_at = time.monotonic() + self._idle_ms / 1000
            claimed = await self._claim(count)
            if claimed:
                return claimed
        block = _BLOCK_MS if self._cursor == ">" else None
        reply: Any = await self._client.xreadgroup(self._group, self._consumer,
                                              {self._stream: self._cursor}, count=count,
                                              block=block)
        entries = [(_text(i), f) for i, f in reply[0][1]] if reply else []
        if self._cursor != ">":
            self._cursor = entries[-1][0] if entries else ">"
        # A pending entry deleted from the stream since comes back with no fields.
        return [(i, f) for i, f in entries if f is not None and i not in self._held]

    async def _claim(self, count: int) -> list[tuple[str, dict[bytes, bytes]]]:
        reply: Any = await self._client.xautoclaim(self._stream, self._group, self._consumer,
                                              self._idle_ms, start_id="0-0", count=count)
        return [(_text(i), f) for i, f in reply[1] if f and _text(i) not in self._held]


async def _ensure_group(client: redis.asyncio.Redis, stream: str, group: str, start: str) -> None:
    try:
        await client.xgroup_create(stream, group, id="0" if start == "earliest" else "$",
                                   mkstream=True)
    except redis.exceptions.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise BrokerError(f"cannot create group {group!r} on {stream!r}: {exc}") from exc


def _acks(client: redis.asyncio.Redis, stream: str, group: str, held: set[str]) -> Acks:
    """One XACK for every entry id acknowledged at once."""
    async def ack(entry_ids: Sequence[str]) -> None:
        try:
            await client.xack(stream, group, *entry_ids)
        except _LOST as exc:
            raise BrokerUnavailable(f"cannot acknowledge: {exc}") from exc
        finally:
            held.difference_update(entry_ids)

    return ack


def _message(stream: str, entry_id: str, raw: dict[bytes, bytes]) -> Message:
    fields = {_text(k): v for k, v in raw.items()}
    body = fields.pop("data", None)
    declared = fields.pop("content-type", None)
    content_type = _text(declared) if declared is not None else None
    headers = {k: _text(v) for k, v in fields.items()}
    if body is None:
        body, headers = json.dumps(headers).encode(), {}
        content_type = content_type or "application/json"
    return Message(
        body=body, headers=headers, content_type=content_type,
        position=f"redis:{stream}:{entry_id}", metadata={"stream": stream, "entryid": entry_id},
    )


def _text(raw: Any) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def _required(value: str | None, what: str) -> str:
    if not value:
        raise BrokerError(f"Redis Streams need a {what}")
    return value
