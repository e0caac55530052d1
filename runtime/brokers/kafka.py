"""Kafka with aiokafka: a consumer group committing only acknowledged prefixes, acks=all.

A source is a member of its consumer group with auto-commit off; an
acknowledgement commits the partition's offset only when it and every
offset before it were acknowledged (`offsets.Offsets`), so a crash
redelivers exactly the unfinished tail. A batch of acknowledgements is one
commit request, and concurrent ones share one. A sink's producer waits for all in-sync replicas
(`acks="all"`); it is not idempotent, because brokers such as Tansu do not
support that, and a retried send may therefore duplicate a message (the
event id travels with it, so consumers can dedupe). aiokafka reconnects
by itself, so a lost connection does not end `consume`; a broker away for
longer than the session timeout costs the member its partitions, and their
unacknowledged tail goes to whoever holds them next.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiokafka
import anyio
from aiokafka.errors import KafkaConnectionError, KafkaError

from runtime.brokers.acking import Acks
from runtime.brokers.base import BrokerError, BrokerUnavailable, Endpoint, Message, Received, Window
from runtime.brokers.offsets import Offsets
from runtime.brokers.publishing import Settle, publish_one
from runtime.brokers.urls import redact, servers

DEFAULT_PORT = 9092


class Kafka:
    """One bootstrap list: a producer for publishing, a consumer per `consume`."""

    binding = "kafka"

    def __init__(self, url: str) -> None:
        self._url = url
        self._servers = servers(url, DEFAULT_PORT)
        self._session_timeout_ms = int(_session_timeout(url) * 1000)
        self._producer: Any = None
        self._consumers: dict[tuple[str, str], Any] = {}
        """Running consumers by (topic, group), which `backlog` asks about their lag."""

    async def connect(self) -> None:
        producer = aiokafka.AIOKafkaProducer(
            bootstrap_servers=self._servers, acks="all", enable_idempotence=False,
            request_timeout_ms=15000,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise BrokerUnavailable(f"cannot reach Kafka at {redact(self._url)}: {exc}") from exc
        self._producer = producer

    async def consume(self, endpoint: Endpoint, prefetch: int) -> AsyncIterator[Received]:
        topic, group = _required(endpoint.topic, "topic"), _required(endpoint.group, "group")
        offsets = Offsets()
        consumer = aiokafka.AIOKafkaConsumer(
            bootstrap_servers=self._servers, group_id=group, enable_auto_commit=False,
            auto_offset_reset=endpoint.start, session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(100, self._session_timeout_ms // 3),
        )
        consumer.subscribe([topic], listener=_Revoked(offsets))
        self._consumers[(topic, group)] = consumer
        window = Window(prefetch)
        acks = _acks(offsets, _committer(consumer, offsets))
        try:
            await consumer.start()
            while True:
                await window.take()
                record = await consumer.getone()
                partition = aiokafka.TopicPartition(record.topic, record.partition)
                offsets.handed(partition, record.offset)
                yield window.received(_message(record), (partition, record.offset), acks)
        except KafkaConnectionError as exc:
            raise BrokerUnavailable(f"lost Kafka at {redact(self._url)}: {exc}") from exc
        except KafkaError as exc:
            raise BrokerError(f"Kafka refused consuming {topic!r} as {group!r}: {exc}") from exc
        finally:
            if self._consumers.get((topic, group)) is consumer:
                del self._consumers[(topic, group)]
            with anyio.CancelScope(shield=True):
                await consumer.stop()

    async def publish(self, endpoint: Endpoint, message: Message) -> None:
        await publish_one(self.publish_many, endpoint, message)

    async def publish_many(self, messages: Sequence[tuple[Endpoint, Message]],
                           settle: Settle) -> None:
        """Every message appended to the producer's batches first, then their acks awaited:
        the producer sends them in a few requests instead of one round trip each."""
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable("not connected to Kafka")
        sent: list[tuple[int, asyncio.Future[Any]]] = []
        try:
            for index, (endpoint, message) in enumerate(messages):
                headers = [(name, value.encode()) for name, value in message.headers.items()]
                if message.content_type:
                    headers.append(("content-type", message.content_type.encode()))
                try:
                    future = await producer.send(_required(endpoint.topic, "topic"), message.body,
                                                 key=message.key, headers=headers)
                except KafkaError as exc:
                    settle(index, self._refused(exc))
                else:
                    sent.append((index, future))
            for index, future in sent:
                try:
                    # acks=all: resolved once the leader had the write from all in-sync replicas.
                    await future
                except KafkaError as exc:
                    settle(index, self._refused(exc))
                else:
                    settle(index, None)
        finally:
            for _, future in sent:  # cancelled while waiting: nobody reads these any more
                future.add_done_callback(_retrieve)

    def _refused(self, exc: KafkaError) -> BrokerError:
        if isinstance(exc, KafkaConnectionError):
            return BrokerUnavailable(f"lost Kafka at {redact(self._url)}: {exc}")
        return BrokerError(f"Kafka did not take the message: {exc}")

    async def backlog(self, endpoint: Endpoint) -> int | None:
        """Consumer lag over this member's partitions: end offsets past the committed ones."""
        consumer = self._consumers.get((endpoint.topic or "", endpoint.group or ""))
        if consumer is None:
            return None
        partitions = list(consumer.assignment())
        if not partitions:
            return 0
        try:
            ends = await consumer.end_offsets(partitions)
            lag = 0
            for partition in partitions:
                committed = await consumer.committed(partition)
                lag += max(0, ends[partition] - (committed or 0))
        except KafkaError:
            return None
        return lag

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a send's outcome read, so that asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


class _Revoked(aiokafka.ConsumerRebalanceListener):  # type: ignore[misc]
    """Forget revoked partitions: their unacknowledged offsets now belong to another member."""

    def __init__(self, offsets: Offsets) -> None:
        self._offsets = offsets

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self._offsets.forget(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        pass


def _committer(consumer: Any, offsets: Offsets) -> Callable[[], Awaitable[None]]:
    """Commit whatever is due; callers queue on one lock, so one request serves many acks."""
    lock = anyio.Lock()

    async def commit() -> None:
        async with lock:
            due = offsets.due()
            if not due:
                return
            try:
                await consumer.commit(due)
            except KafkaError as exc:
                offsets.redue(due)
                raise BrokerUnavailable(f"Kafka refused the offset commit: {exc}") from exc

    return commit


def _acks(offsets: Offsets, commit: Callable[[], Awaitable[None]]) -> Acks:
    """Mark each (partition, offset) acknowledged, then one commit of what became due."""
    async def ack(tokens: Sequence[tuple[Any, int]]) -> None:
        for partition, offset in tokens:
            offsets.ack(partition, offset)
        await commit()

    return ack


def _message(record: Any) -> Message:
    headers = {name: value.decode(errors="replace") for name, value in record.headers or ()}
    content_type = headers.pop("content-type", None)
    metadata: dict[str, Any] = {
        "topic": record.topic, "partition": record.partition, "offset": record.offset,
    }
    return Message(
        body=record.value or b"", headers=headers, content_type=content_type, key=record.key,
        position=f"kafka:{record.topic}:{record.partition}:{record.offset}", metadata=metadata,
    )


def _session_timeout(url: str) -> float:
    """`?session_timeout=SECONDS`: how soon the group gives a silent member's partitions away.

    Brokers also hold a new group's first rebalance for part of it (Tansu
    half of it), so tests use a short one; Kafka's own default is 10 s.
    """
    raw = parse_qs(urlsplit(url).query).get("session_timeout", ["10"])[0]
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 1 <= seconds <= 300:
        raise BrokerError(f"session_timeout must be 1 to 300 seconds, got {raw!r}")
    return seconds


def _required(value: str | None, what: str) -> str:
    if not value:
        raise BrokerError(f"Kafka needs a {what}")
    return value
