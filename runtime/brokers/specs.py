"""What a project declares about brokers, after validation (SPEC 10): leaf types.

`runtime.brokers.declarations` builds these from YAML; the supervisor, the
event router and the listings only read them. A broker's `kind` is its URL
scheme's family (amqp, kafka, nats, mqtt, redis), or None when its URL comes
from an environment variable not set where the project was validated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from runtime.errors import Where
from runtime.specs import RetryPolicy

Format = Literal["binary", "structured"]


@dataclass(frozen=True)
class BrokerSpec:
    """A named connection: a literal URL without a password, or the variable holding one."""

    name: str
    where: Where
    url: str | None = None
    url_env: str | None = None
    kind: str | None = None


@dataclass(frozen=True)
class SourceSpec:
    """Messages of one broker endpoint imported as events of `type`."""

    name: str
    where: Where
    broker: str
    type: str
    prefetch: int = 100
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
    qos: int = 1
    ack_wait: float = 30.0
    """Seconds before the broker redelivers an unacknowledged message (NATS, Redis)."""


@dataclass(frozen=True)
class SinkSpec:
    """Events matching `events` exported to one broker endpoint, as a subscriber.

    It has deliveries like a function, so it carries what the dispatcher
    reads of one (`name`, `concurrency`, `retry`) and a publish `timeout`.
    """

    name: str
    where: Where
    broker: str
    events: str
    format: Format = "binary"
    queue: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    topic: str | None = None
    subject: str | None = None
    stream: str | None = None
    qos: int = 1
    timeout: float = 30.0
    concurrency: int = 4
    retry: RetryPolicy = field(default_factory=RetryPolicy)
