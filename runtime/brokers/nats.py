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

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from runtime.brokers.base import BrokerError, BrokerUnavailable, Endpoint, Message, Received, Window
from runtime.brokers.urls import redact

_LOST = (OSError, nats.errors.ConnectionClosedError, nats.errors.NoServersError,
         nats.errors.StaleConnectionError, nats.errors.UnexpectedEOF)
_MSG_ID = "Nats-Msg-Id"
_FETCH_WAIT = 1.0  # seconds one fetch request waits on an empty stream


class Nats:
    """One NATS connection with its JetStream context."""

    binding = "nats"

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: Client | None = None

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
        ack_flushed = _flusher(client)
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
                    yield window.received(_message(msg), _acker(msg, ack_flushed))
        except _LOST as exc:
            raise BrokerUnavailable(f"lost NATS at {redact(self._url)}: {exc}") from exc
        except nats.js.errors.NotFoundError as exc:
            raise BrokerError(f"no JetStream stream takes {subject!r}: {exc}") from exc
        finally:
            if subscription is not None and not client.is_closed:
                with anyio.CancelScope(shield=True):
                    await _unsubscribe(subscription)

    async def publish(self, endpoint: Endpoint, message: Message) -> None:
        client = self._connected()
        headers = dict(message.headers)
        if message.content_type:
            headers["content-type"] = message.content_type
        if message.message_id:
            headers[_MSG_ID] = message.message_id
        try:
            # JetStream's publish waits for the PubAck: the stream has stored it.
            await client.jetstream().publish(
                _required(endpoint.subject, "subject"), message.body, stream=endpoint.stream,
                headers=headers or None,
            )
        except _LOST as exc:
            raise BrokerUnavailable(f"lost NATS at {redact(self._url)}: {exc}") from exc
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise BrokerError(f"NATS did not take the message: {exc}") from exc

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
        client, self._client = self._client, None
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


def _acker(msg: Msg, flushed: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    async def ack() -> None:
        try:
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


def _required(value: str | None, what: str) -> str:
    if not value:
        raise BrokerError(f"NATS needs a {what}")
    return value
