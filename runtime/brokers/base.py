"""The one interface every broker adapter has, its errors, and the scheme table.

A `Broker` holds the connections to one broker URL. `consume` hands out
`Received` messages, at most `prefetch` of them not yet acknowledged;
`Received.ack` settles one with the broker (AMQP ack, Kafka offset commit,
NATS ack, MQTT PUBACK, XACK), `ack_all` many in as few broker calls as the
adapter can. `publish` returns only once the broker confirmed the message;
`publish_many` sends a batch without waiting between messages and reports
each one's confirmation (or error) as it comes.
Connection loss surfaces as `BrokerUnavailable`: the caller closes the
adapter and opens a new one later (with its own backoff), and whatever was
not acknowledged is delivered again.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import anyio

from runtime.errors import FnrunError


class BrokerError(FnrunError):
    """A broker adapter failed (root of the broker subtree)."""


class MissingClient(BrokerError):
    """The client library of a broker is not installed; the message names the extra."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached, refused us, or the connection was lost."""


class BadMessage(BrokerError):
    """A received message cannot become an event (a malformed CloudEvent)."""


@dataclass(frozen=True)
class Message:
    """A message as any broker carries it: body, headers and a few broker fields.

    Outgoing messages use `body`, `headers`, `content_type`, `key` (the
    Kafka key) and `message_id` (AMQP message-id, NATS `Nats-Msg-Id`).
    Received messages also carry `position`, the broker's own unique place
    for the message (stable across redeliveries, None where the broker has
    none), and `metadata`: topic, partition, offset, routing key, ...
    """

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    key: bytes | None = None
    message_id: str | None = None
    position: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Endpoint:
    """Where to consume or publish, in the broker's own names; each adapter reads its own.

    RabbitMQ: `queue`, or `exchange` + `routing_key` (+ `queue` to bind when
    consuming). Kafka: `topic`, `group`, `start` ("earliest" or "latest").
    NATS: `subject`, `stream`, `durable`. MQTT: `topic`, `client_id` (the
    persistent session that keeps unacknowledged messages). Redis: `stream`,
    `group`, `consumer`. `ack_wait` is the seconds after which the broker
    itself redelivers what was handed out and not acknowledged (NATS
    ack_wait, Redis claim of another consumer's pending entries).
    """

    queue: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    topic: str | None = None
    group: str | None = None
    start: str = "earliest"
    subject: str | None = None
    stream: str | None = None
    durable: str | None = None
    client_id: str | None = None
    consumer: str | None = None
    ack_wait: float = 30.0


Settle = Callable[[int, BrokerError | None], None]
"""Called once per message of a `publish_many`, as soon as its fate is known: the
message's index, and None once the broker confirmed it, else the error that failed it
(`BrokerUnavailable` when the connection is gone)."""


Acks = Callable[[Sequence[Any]], Awaitable[None]]
"""An adapter's acknowledgement of some of one consumer's messages, by their tokens, in as
few broker calls as it can (one XACK, one Kafka commit, one AMQP `multiple` ack, ...)."""


class Received:
    """A consumed message and the one way to settle it, `ack()` (once; later calls do nothing).

    `token` is the adapter's own handle on it (an AMQP delivery, a Kafka offset, a stream
    entry id, ...), handed to its consumer's `Acks`; `ack_all` settles many at once.
    """

    __slots__ = ("message", "token", "_acks", "_release", "_settled")

    def __init__(self, message: Message, token: Any, acks: Acks, release: Callable[[], None]
                 ) -> None:
        self.message = message
        self.token = token
        self._acks = acks
        self._release = release
        self._settled = False

    async def ack(self) -> None:
        """Acknowledge to the broker; frees one `prefetch` slot.

        Raises:
            BrokerUnavailable: the connection that delivered it is gone (the
                broker will deliver it again).
        """
        await ack_all((self,))


async def ack_all(batch: Sequence[Received]) -> None:
    """Acknowledge each of `batch` not settled yet: one `Acks` call per consumer they came
    from (a source's batch all come from one), then free their `prefetch` slots.

    Raises:
        BrokerUnavailable: a connection that delivered some of them is gone (each
            consumer was asked; the first error is raised).
    """
    groups: dict[int, tuple[Acks, list[Received]]] = {}
    for received in batch:
        if not received._settled:
            received._settled = True
            groups.setdefault(id(received._acks), (received._acks, []))[1].append(received)
    errors: list[BrokerError] = []
    try:
        for acks, members in groups.values():
            try:
                await acks([received.token for received in members])
            except BrokerError as exc:
                errors.append(exc)
    finally:
        for _, members in groups.values():
            for received in members:
                received._release()
    if errors:
        raise errors[0]


class Window:
    """At most `size` messages handed out and not yet acknowledged (the `prefetch` bound)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"prefetch must be at least 1, got {size}")
        self._slots = anyio.Semaphore(size)

    @property
    def free(self) -> int:
        """How many more messages may be handed out now."""
        return self._slots.value

    async def take(self) -> None:
        """Wait for a free slot and hold it until the message it is for is acknowledged."""
        await self._slots.acquire()

    def give_back(self) -> None:
        self._slots.release()

    def received(self, message: Message, token: Any, acks: Acks) -> Received:
        """`message` with its `token` for `acks`, holding the slot taken for it."""
        return Received(message, token, acks, self._slots.release)


class Broker(Protocol):
    """One broker URL's connections: the interface every adapter module implements."""

    binding: str
    """Which CloudEvents binding its messages follow (`binding.KINDS`)."""

    async def connect(self) -> None:
        """Open the connection (raises `BrokerUnavailable` when the broker cannot be reached)."""

    def consume(self, endpoint: Endpoint, prefetch: int) -> AsyncIterator[Received]:
        """Messages of `endpoint`, at most `prefetch` handed out and not yet acknowledged."""

    async def publish(self, endpoint: Endpoint, message: Message) -> None:
        """Send `message`; returns once the broker confirmed it (raises `BrokerError` if not)."""

    async def publish_many(self, messages: Sequence[tuple[Endpoint, Message]],
                           settle: Settle) -> None:
        """Send every message at once, confirmations awaited together (publisher confirms,
        one producer flush, gathered PubAcks, QoS 1 PUBACKs, one pipeline of XADDs);
        `settle` each as its confirmation or error comes. Returns once all are settled;
        when cancelled first, those not settled yet have an unknown fate."""

    async def backlog(self, endpoint: Endpoint) -> int | None:
        """Messages waiting at the broker for `endpoint`'s consumer (Kafka consumer lag,
        queue depth, stream pending), or None where the broker does not tell it."""

    async def close(self) -> None:
        """Close every connection; unacknowledged messages go back to the broker."""


@dataclass(frozen=True)
class Kind:
    """One row of the scheme table: where the adapter lives and what it needs installed."""

    adapter: str  # "module:attr", imported only when a URL of this kind is opened
    extra: str  # pip install 'fnrun[extra]'
    client: str  # the top-level module of the client library


KINDS: Mapping[str, Kind] = {
    "amqp": Kind("runtime.brokers.rabbitmq:RabbitMQ", "rabbitmq", "aio_pika"),
    "amqps": Kind("runtime.brokers.rabbitmq:RabbitMQ", "rabbitmq", "aio_pika"),
    "kafka": Kind("runtime.brokers.kafka:Kafka", "kafka", "aiokafka"),
    "nats": Kind("runtime.brokers.nats:Nats", "nats", "nats"),
    "mqtt": Kind("runtime.brokers.mqtt:Mqtt", "mqtt", "aiomqtt"),
    "mqtts": Kind("runtime.brokers.mqtt:Mqtt", "mqtt", "aiomqtt"),
    "redis": Kind("runtime.brokers.redis_streams:RedisStreams", "brokers", "redis"),
    "rediss": Kind("runtime.brokers.redis_streams:RedisStreams", "brokers", "redis"),
}


def open_broker(url: str) -> Broker:
    """The adapter for `url`, chosen by its scheme; not connected yet.

    Raises:
        BrokerError: an unknown scheme.
        MissingClient: the broker's client library is not installed.
    """
    scheme = urlsplit(url).scheme.lower()
    kind = KINDS.get(scheme)
    if kind is None:
        raise BrokerError(f"unknown broker scheme {scheme!r} (known: {', '.join(sorted(KINDS))})")
    module_name, attr = kind.adapter.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != kind.client.split(".")[0]:
            raise
        raise MissingClient(
            f"{scheme}:// brokers need the {kind.client} client: pip install 'fnrun[{kind.extra}]'"
        ) from None
    adapter: Callable[[str], Broker] = getattr(module, attr)
    return adapter(url)
