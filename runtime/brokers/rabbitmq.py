"""RabbitMQ (AMQP 0-9-1) with aio-pika: manual ack, prefetch as basic.qos, publisher confirms.

A source reads a durable queue, declared if missing; with an exchange and a
routing key that queue is also bound to the (existing) exchange. A sink
publishes persistent messages to the default exchange (routing key = the
queue) or to an exchange, `mandatory` so that a message no queue takes is
an error rather than a silent drop. The connection is aio-pika's plain one,
not its robust one: a lost connection ends the consume loop with
`BrokerUnavailable`, and RabbitMQ requeues whatever it had delivered and
not seen acknowledged. A batch of acknowledgements is one `basic.ack` with
`multiple` up to the longest acknowledged prefix of the channel's
deliveries (`DeliveryTags`), and single acks for those past it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aio_pika
import aiormq
import anyio
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from runtime.brokers.acking import Acks, DeliveryTags
from runtime.brokers.base import BrokerError, BrokerUnavailable, Endpoint, Message, Received, Window
from runtime.brokers.publishing import Settle, publish_concurrently
from runtime.brokers.urls import redact

_LOST = (OSError, asyncio.TimeoutError, aiormq.exceptions.AMQPConnectionError,
         aiormq.exceptions.ChannelInvalidStateError)


class RabbitMQ:
    """One AMQP connection: a confirming channel for publishing, one channel per consumer."""

    binding = "amqp"

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: AbstractConnection | None = None
        self._publishing: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        """Exchanges published to, by name (looked up on the publishing channel)."""

    async def connect(self) -> None:
        try:
            self._connection = await aio_pika.connect(self._url, timeout=10)
            self._publishing = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
            self._exchanges = {}
        except (*_LOST, aiormq.exceptions.AMQPError) as exc:
            raise BrokerUnavailable(f"cannot reach RabbitMQ at {redact(self._url)}: {exc}") from exc

    async def consume(self, endpoint: Endpoint, prefetch: int) -> AsyncIterator[Received]:
        connection = self._connected()
        window = Window(prefetch)
        tags = DeliveryTags()
        acks = _acks(tags)
        try:
            channel, queue = await _source(connection, endpoint, prefetch)
        except _LOST as exc:
            raise BrokerUnavailable(f"lost RabbitMQ at {redact(self._url)}: {exc}") from exc
        except aiormq.exceptions.AMQPError as exc:
            raise BrokerError(f"RabbitMQ refused consuming {endpoint.queue!r}: {exc}") from exc
        try:
            async with queue.iterator() as messages:
                async for incoming in messages:
                    await window.take()
                    tags.handed(_tag(incoming))
                    yield window.received(_message(incoming, queue.name), incoming, acks)
        except _LOST as exc:
            raise BrokerUnavailable(f"lost RabbitMQ at {redact(self._url)}: {exc}") from exc
        finally:
            # Closing the channel hands what it did not acknowledge back to the queue.
            with anyio.CancelScope(shield=True):
                await _close(channel)
        raise BrokerUnavailable(f"lost RabbitMQ at {redact(self._url)}: channel closed")

    async def publish(self, endpoint: Endpoint, message: Message) -> None:
        channel = self._publishing
        if channel is None or self._connection is None:
            raise BrokerUnavailable("not connected to RabbitMQ")
        try:
            exchange, key = await self._target(channel, endpoint)
            # With publisher confirms on, publish returns once the broker confirmed.
            await exchange.publish(_outgoing(message), routing_key=key, mandatory=True)
        except aio_pika.exceptions.DeliveryError as exc:
            raise BrokerError(f"RabbitMQ did not take the message: {exc}") from exc
        except _LOST as exc:
            raise BrokerUnavailable(f"lost RabbitMQ at {redact(self._url)}: {exc}") from exc
        except aiormq.exceptions.AMQPError as exc:  # a missing exchange, ...
            raise BrokerError(f"RabbitMQ refused the message: {exc!r}") from exc

    async def publish_many(self, messages: Sequence[tuple[Endpoint, Message]],
                           settle: Settle) -> None:
        """Every message published at once on the confirming channel; each waits for its
        own confirm (or return), so one slow confirm holds up only its own message."""
        await publish_concurrently(messages, self.publish, settle)

    async def _target(self, channel: AbstractChannel, endpoint: Endpoint
                      ) -> tuple[AbstractExchange, str]:
        """The exchange and routing key of `endpoint`; a named exchange is looked up (a
        passive declare, one round trip) once per connection."""
        if not endpoint.exchange:
            return channel.default_exchange, _required(endpoint.queue, "queue")
        exchange = self._exchanges.get(endpoint.exchange)
        if exchange is None:
            exchange = self._exchanges[endpoint.exchange] = await channel.get_exchange(
                endpoint.exchange)
        return exchange, endpoint.routing_key or ""

    async def backlog(self, endpoint: Endpoint) -> int | None:
        """The queue's ready messages (a passive declare, on a channel of its own: a
        missing queue closes the channel it is asked on)."""
        channel = await self._connected().channel()
        try:
            queue = await channel.declare_queue(_required(endpoint.queue, "queue"), passive=True)
            return int(queue.declaration_result.message_count or 0)
        except (*_LOST, aiormq.exceptions.AMQPError):
            return None
        finally:
            await _close(channel)

    async def close(self) -> None:
        connection, self._connection, self._publishing = self._connection, None, None
        if connection is not None:
            try:
                await connection.close()
            except _LOST:
                pass  # already gone: the broker requeues what was not acknowledged

    def _connected(self) -> AbstractConnection:
        if self._connection is None:
            raise BrokerUnavailable("not connected to RabbitMQ")
        return self._connection


async def _close(channel: AbstractChannel) -> None:
    if not channel.is_closed:
        try:
            await channel.close()
        except _LOST:
            pass  # the connection is gone, and the channel with it


async def _source(
    connection: AbstractConnection, endpoint: Endpoint, prefetch: int
) -> tuple[AbstractChannel, AbstractQueue]:
    """A channel consuming `endpoint`'s queue: an existing queue as it is (quorum, stream,
    any arguments), a missing one declared durable; bound to the exchange if one is named."""
    name = _required(endpoint.queue, "queue")
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        channel = await connection.channel()  # a failed passive declare closed the first
        queue = await channel.declare_queue(name, durable=True)
    # The broker itself stops sending past `prefetch` unacknowledged messages.
    await channel.set_qos(prefetch_count=prefetch)
    if endpoint.exchange:
        exchange = await channel.get_exchange(endpoint.exchange)
        await queue.bind(exchange, routing_key=endpoint.routing_key or "")
    return channel, queue


ACK_PATIENCE = 10.0
"""Seconds an acknowledgement may take: one frame, but aiormq waits for its write forever
when the connection died under it (a cut connection stalled a source for a minute)."""


def _acks(tags: DeliveryTags) -> Acks:
    """One `multiple` ack up to the acknowledged prefix, single acks past it."""
    async def ack(incoming: Sequence[AbstractIncomingMessage]) -> None:
        by_tag = {_tag(message): message for message in incoming}
        settlement = tags.settle(by_tag)
        try:
            with anyio.fail_after(ACK_PATIENCE):
                if settlement.multiple is not None:
                    await by_tag[settlement.multiple].ack(multiple=True)
                for tag in settlement.singles:
                    await by_tag[tag].ack()
        except TimeoutError as exc:
            raise BrokerUnavailable("cannot acknowledge: no answer from RabbitMQ") from exc
        except _LOST as exc:
            raise BrokerUnavailable(f"cannot acknowledge: {exc}") from exc
        except Exception as exc:
            # aiormq fails the write of an ack on a connection that died under it with a
            # bare `Exception` (its drain future); the connection is gone either way.
            raise BrokerUnavailable(f"cannot acknowledge: {exc!r}") from exc

    return ack


def _tag(incoming: AbstractIncomingMessage) -> int:
    tag = incoming.delivery_tag
    if tag is None:  # only consumers without acknowledgements get none
        raise BrokerError("RabbitMQ delivered a message without a delivery tag")
    return tag


def _message(incoming: AbstractIncomingMessage, queue: str) -> Message:
    metadata: dict[str, Any] = {"queue": queue, "routingkey": incoming.routing_key or ""}
    if incoming.exchange:
        metadata["exchange"] = incoming.exchange
    message_id = incoming.message_id
    return Message(
        body=incoming.body, headers=_text_headers(incoming.headers),
        content_type=incoming.content_type, message_id=message_id,
        position=f"amqp:{queue}:{message_id}" if message_id else None, metadata=metadata,
    )


def _text_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    return {name: value.decode() if isinstance(value, bytes) else str(value)
            for name, value in headers.items()}


def _outgoing(message: Message) -> aio_pika.Message:
    return aio_pika.Message(
        body=message.body, headers=dict(message.headers), content_type=message.content_type,
        message_id=message.message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def _required(value: str | None, what: str) -> str:
    if not value:
        raise BrokerError(f"RabbitMQ needs a {what}")
    return value
