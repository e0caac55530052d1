"""NATS JetStream with nats-py: a durable pull consumer with explicit acks, PubAck on publish.

A source fetches from its durable consumer (created if missing, explicit
ack policy) only as many messages as `prefetch` leaves room for. An
acknowledgement is sent and then flushed (a PING the server answers after
it handled the ack), concurrent acks sharing one flush. JetStream itself
redelivers a message not acknowledged within the consumer's `ack_wait`,
also to the next client of the durable after a crash. A sink publishes
with the `Nats-Msg-Id` header set to the message id, so JetStream drops a
retried duplicate within its dedupe window, and returns once the PubAck
came. nats-py's own reconnect is off: a lost connection ends the consume
loop with `BrokerUnavailable`, like every other adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import anyio
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.client import JetStreamContext

from runtime.brokers.acking import Acks
from runtime.brokers.base import BrokerError, BrokerUnavailable, Endpoint, Message, Received, Window
from runtime.brokers.publishing import Settle, publish_one
from runtime.brokers.urls import redact

_LOST = (OSError, nats.errors.ConnectionClosedError, nats.errors.NoServersError,
         nats.errors.StaleConnectionError, nats.errors.UnexpectedEOF)
_MSG_ID = "Nats-Msg-Id"
_FETCH_WAIT = 1.0  # seconds one fetch request waits on an empty stream
PUBACK_WAIT = 5.0
"""Seconds a published message waits for its PubAck (nats-py's own request timeout)."""


class Nats:
    """One NATS connection with its JetStream context."""

    binding = "nats"

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        """The publishing context: it keeps the PubAck subscription of `publish_async`."""

    async def connect(self) -> None:
        try:
            self._client = await nats.connect(
                self._url, allow_reconnect=False, connect_timeout=5, max_reconnect_attempts=0
            )
        except (*_LOST, nats.errors.Error, TimeoutError) as exc:
            raise BrokerUnavailable(f"cannot reach NATS at {redact(self._url)}: {exc}") from exc

    async def consume(self, endpoint: Endpoint, prefetch: int) -> AsyncIterator[Received]:
        client = self._connected()
        subject, durable = _required(endpoint.subject, "subject"), _required(endpoint.durable,
                                                                              "durable")
        config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT,
                                ack_wait=endpoint.ack_wait, filter_subject=subject)
        window = Window(prefetch)
        acks = _acks(_flusher(client))
        subscription: Any = None
        try:
            subscription = await client.jetstream().pull_subscribe(
                subject, durable=durable, stream=endpoint.stream, config=config
            )
            while True:
                await window.take()
                try:
                    batch = await subscription.fetch(window.free + 1, timeout=_FETCH_WAIT)
                except nats.errors.TimeoutError:
                    window.give_back()
                    if client.is_closed:
                        raise nats.errors.ConnectionClosedError from None
                    continue
                for index, msg in enumerate(batch):
                    if index:  # the first one has the slot taken before the fetch
                        await window.take()
                    yield window.received(_message(msg), msg, acks)
        except _LOST as exc:
            raise BrokerUnavailable(f"lost NATS at {redact(self._url)}: {exc}") from exc
        except nats.js.errors.NotFoundError as exc:
            raise BrokerError(f"no JetStream stream takes {subject!r}: {exc}") from exc
        finally:
            if subscription is not None and not client.is_closed:
                with anyio.CancelScope(shield=True):
                    await _unsubscribe(subscription)

    async def publish(self, endpoint: Endpoint, message: Message) -> None:
        await publish_one(self.publish_many, endpoint, message)

    async def publish_many(self, messages: Sequence[tuple[Endpoint, Message]],
                           settle: Settle) -> None:
        """Every message published at once (JetStream's `publish_async`), then the PubAcks
        awaited together: each one means the stream has stored its message. A PubAck
        that does not come within `PUBACK_WAIT` fails its message."""
        client = self._connected()
        if self._js is None:
            self._js = client.jetstream()
        sent: list[tuple[int, asyncio.Future[Any]]] = []
        try:
            for index, (endpoint, message) in enumerate(messages):
                try:
                    future = await _publish_async(self._js, endpoint, message)
                except (*_LOST, nats.errors.Error, nats.js.errors.Error) as exc:
                    settle(index, self._refused(exc))
                else:
                    sent.append((index, future))
            if sent:
                with anyio.move_on_after(PUBACK_WAIT):
                    await asyncio.wait([future for _, future in sent])
            for index, future in sent:
                settle(index, self._pub_ack(future))
        finally:
            for _, future in sent:  # frees its slot of nats-py's pending PubAcks
                future.cancel()

    def _pub_ack(self, future: asyncio.Future[Any]) -> BrokerError | None:
        """What a PubAck's future says once waited for: None (stored), else the error."""
        if not future.done():
            return self._refused(nats.errors.TimeoutError())
        if future.cancelled():  # nats-py gave up on it: the connection closed
            return self._refused(nats.errors.ConnectionClosedError())
        error = future.exception()
        return None if error is None else self._refused(error)

    def _refused(self, exc: BaseException) -> BrokerError:
        if isinstance(exc, _LOST) or self._client is None or self._client.is_closed:
            return BrokerUnavailable(f"lost NATS at {redact(self._url)}: {exc!r}")
        return BrokerError(f"NATS did not take the message: {exc!r}")

    async def backlog(self, endpoint: Endpoint) -> int | None:
        """The durable consumer's pending count: messages of its stream not yet delivered."""
        client = self._connected()
        js = client.jetstream()
        try:
            stream = endpoint.stream or await js.find_stream_name_by_subject(
                _required(endpoint.subject, "subject"))
            info = await js.consumer_info(stream, _required(endpoint.durable, "durable"))
        except (*_LOST, nats.errors.Error, nats.js.errors.Error):
            return None
        return int(info.num_pending or 0)

    async def close(self) -> None:
        client, self._client, self._js = self._client, None, None
        if client is not None and not client.is_closed:
            await client.close()

    def _connected(self) -> Client:
        if self._client is None or self._client.is_closed:
            raise BrokerUnavailable("not connected to NATS")
        return self._client


async def _unsubscribe(subscription: Any) -> None:
    try:
        await subscription.unsubscribe()
    except (*_LOST, nats.errors.Error):
        pass  # the connection went meanwhile, and the subscription with it


def _flusher(client: Client) -> Callable[[], Awaitable[None]]:
    """Wait until the server handled what was sent; callers queue on one lock, one PING each."""
    lock = anyio.Lock()
    generation = 0

    async def flushed() -> None:
        nonlocal generation
        wanted = generation + 1
        async with lock:
            if generation >= wanted:
                return  # a flush that started after our ack was sent has covered it
            generation += 1
            await client.flush(timeout=10)

    return flushed


def _acks(flushed: Callable[[], Awaitable[None]]) -> Acks:
    """Send each ack (buffered, no round trip), then one flush for them all."""
    async def ack(msgs: Sequence[Msg]) -> None:
        try:
            for msg in msgs:
                await msg.ack()
            await flushed()
        except (*_LOST, nats.errors.Error) as exc:
            raise BrokerUnavailable(f"cannot acknowledge: {exc}") from exc

    return ack


def _message(msg: Msg) -> Message:
    headers = dict(msg.headers or {})
    content_type = headers.pop("content-type", None)
    meta = msg.metadata
    metadata: dict[str, Any] = {"topic": msg.subject, "stream": meta.stream,
                                "sequence": meta.sequence.stream}
    return Message(
        body=msg.data, headers=headers, content_type=content_type,
        message_id=headers.pop(_MSG_ID, None),
        position=f"nats:{meta.stream}:{meta.sequence.stream}", metadata=metadata,
    )


async def _publish_async(js: JetStreamContext, endpoint: Endpoint, message: Message
                         ) -> asyncio.Future[Any]:
    """Send `message` with its headers (`Nats-Msg-Id` = its id); the future of its PubAck."""
    headers = dict(message.headers)
    if message.content_type:
        headers["content-type"] = message.content_type
    if message.message_id:
        headers[_MSG_ID] = message.message_id
    return await js.publish_async(_required(endpoint.subject, "subject"), message.body,
                                  stream=endpoint.stream, headers=headers or None)


def _required(value: str | None, what: str) -> str:
    if not value:
        raise BrokerError(f"NATS needs a {what}")
    return value
