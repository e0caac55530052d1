"""A source: a broker endpoint's messages imported as events, acknowledged once stored.

One `Source` per declared source runs two tasks over its link's adapter:
the puller takes messages from `Broker.consume` (at most `prefetch` not yet
acknowledged: the adapter's window) into a buffer, and the importer takes
what the buffer holds at once, converts it (`binding.to_event`), publishes it
through the same durable ingress as `POST /_/events` in one call, and only
then acknowledges the batch (SPEC 10), in as few broker calls as the adapter
can. While the store refuses writes the importer retries the same batch with
backoff and acknowledges nothing; the window stays full, so the puller stops
fetching. Publish is idempotent by
event id, so a message redelivered after a crash is stored once when its id
is stable (a CloudEvent id or the broker's position).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runtime.brokers import binding
from runtime.brokers.base import (
    BadMessage,
    Broker,
    BrokerError,
    BrokerUnavailable,
    Endpoint,
    Received,
    ack_all,
)
from runtime.brokers.links import Link, backoff
from runtime.brokers.specs import SourceSpec
from runtime.errors import FnrunError, StoreError
from runtime.events import Event

log = logging.getLogger("fnrun.brokers")

MAX_BATCH = 500
"""Most messages published in one store write."""
IN_FLIGHT = 4
"""Most batches being stored or acknowledged at once (a store group-commits them)."""
READY_TURNS = 3
"""Event loop turns without a new message from the puller after which a batch is formed."""
PUBLISH_PATIENCE = 60.0
"""Seconds one publish may take before it is tried again (the messages are not acked)."""
LAG_EVERY = 5.0
"""Seconds between two questions to the broker about a source's lag."""
SourceState = Literal["waiting", "running", "paused", "failing"]


class Publisher(Protocol):
    """The durable ingress (`runtime.ingress.Ingress.publish`): True per new event."""

    async def publish(self, events: Sequence[Event]) -> list[bool]: ...


@dataclass(frozen=True)
class SourceStatus:
    """What `/_/health` and `fnrun ls` show of a source."""

    state: SourceState
    since: float
    error: str | None = None


def endpoint_of(spec: SourceSpec, node: str) -> Endpoint:
    """Where `spec` consumes; names left out default to ones derived from the source's
    name (Kafka group, NATS durable, MQTT client id), and the Redis consumer (and the MQTT
    client id of a shared subscription) is this node's (`node`), so that several
    supervisors share a group without sharing a name."""
    return Endpoint(
        queue=spec.queue, exchange=spec.exchange, routing_key=spec.routing_key,
        topic=spec.topic, group=spec.group or f"fnrun-{spec.name}", start=spec.start,
        subject=spec.subject, stream=spec.stream, durable=spec.durable or f"fnrun-{spec.name}",
        client_id=spec.client_id or _client_id(spec, node), consumer=spec.consumer or node,
        ack_wait=spec.ack_wait,
    )


def _client_id(spec: SourceSpec, node: str) -> str:
    """An MQTT source's session: one per source, or one per node in a shared subscription
    (`$share/GROUP/topic`), where every supervisor is a member of the group."""
    if (spec.topic or "").startswith("$share/"):
        return f"fnrun-{spec.name}-{node}"
    return f"fnrun-{spec.name}"


def node_name(port: int) -> str:
    """This supervisor's name among a group's consumers: stable across its restarts."""
    return f"{socket.gethostname()}:{port}"


class Source:
    """Imports one source's messages until cancelled; never raises into the supervisor."""

    def __init__(self, spec: SourceSpec, link: Link, ingress: Publisher, node: str) -> None:
        self.spec = spec
        self.link = link
        self.ingress = ingress
        self.endpoint = endpoint_of(spec, node)
        self.origin = f"/fnrun/sources/{spec.name}"
        """The CloudEvents `source` of a message that is not a CloudEvent."""
        self.messages = 0
        """Messages stored and acknowledged (duplicates of stored ones included)."""
        self.status = SourceStatus("waiting", time.time())
        self.lag: int | None = None
        """Messages waiting at the broker, where it tells it (refreshed every `LAG_EVERY`)."""
        self._failures = 0

    async def run(self) -> None:
        """Consume, reconnecting through the link, until cancelled."""
        while True:
            if self.link.current() is None:
                self._set("waiting", self.link.status.error)
            broker = await self.link.broker()
            self._set("running", None)
            try:
                await self._consume(broker)
            except BrokerUnavailable as exc:
                self.link.lost(broker, exc)
                self._set("waiting", str(exc))
            except BrokerError as exc:  # refused: a missing stream, a wrong queue type, ...
                await self._failed(str(exc))
            except Exception as exc:  # a client's own error: logged whole, then tried again
                log.exception("source %s: unexpected error", self.spec.name)
                # On a new connection: a client can fail this way for good on the one it has
                # (aio-pika's "Connection ... closed" after a cut, retried forever in CI).
                self.link.lost(broker, exc)
                await self._failed(repr(exc))

    async def _failed(self, error: str) -> None:
        self._failures += 1
        if self._failures == 1 or self._failures % 10 == 0:
            log.error("source %s: %s (trying again)", self.spec.name, error)
        self._set("failing", error)
        await anyio.sleep(backoff(self._failures))

    async def _consume(self, broker: Broker) -> None:
        send, receive = anyio.create_memory_object_stream[Received](self.spec.prefetch)
        failure: list[BaseException] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pull, broker, send, failure, tg.cancel_scope)
            tg.start_soon(self._watch_lag, broker)
            tg.start_soon(self._import, broker, receive, failure, tg.cancel_scope)
        if failure:
            raise failure[0]

    async def _watch_lag(self, broker: Broker) -> None:
        while True:
            try:
                with anyio.fail_after(LAG_EVERY):
                    self.lag = await broker.backlog(self.endpoint)
            except Exception:  # noqa: BLE001 - only a figure shown: never stops the source
                self.lag = None
            # Unknown yet (a durable not created, a slow answer): asked again sooner.
            await anyio.sleep(LAG_EVERY if self.lag is not None else 1.0)

    async def _pull(
        self, broker: Broker, send: MemoryObjectSendStream[Received],
        failure: list[BaseException], scope: anyio.CancelScope,
    ) -> None:
        try:
            with send:
                async for received in broker.consume(self.endpoint, self.spec.prefetch):
                    await send.send(received)
        except BrokerError as exc:
            failure.append(exc)
        if not failure:
            failure.append(BrokerUnavailable(f"source {self.spec.name}: the consumer ended"))
        scope.cancel()

    async def _import(
        self, broker: Broker, receive: MemoryObjectReceiveStream[Received],
        failure: list[BaseException], scope: anyio.CancelScope,
    ) -> None:
        """Batches of what the puller hands over at once (at most half of `prefetch`), up to
        `IN_FLIGHT` being stored or acknowledged at once: while one batch waits for its
        write and its acks, the next one forms."""
        slots = anyio.Semaphore(IN_FLIGHT)
        # Half the window: the next batch is fetched while one is stored and acknowledged.
        limit = min(MAX_BATCH, max(1, self.spec.prefetch // 2))
        async with anyio.create_task_group() as batches:
            with receive:
                while True:
                    await slots.acquire()
                    try:
                        batch = [await receive.receive()]
                    except anyio.EndOfStream:
                        break
                    await _take_ready(receive, batch, limit)
                    events = [self._event(broker, r) for r in batch]
                    batches.start_soon(self._batch, events, batch, slots, failure, scope)

    async def _batch(
        self, events: list[Event], batch: list[Received], slots: anyio.Semaphore,
        failure: list[BaseException], scope: anyio.CancelScope,
    ) -> None:
        try:
            await self._store_then_ack(events, batch)
            self._failures = 0
        except BrokerError as exc:
            failure.insert(0, exc)
            scope.cancel()
        finally:
            slots.release()

    def _event(self, broker: Broker, received: Received) -> Event:
        try:
            return binding.to_event(broker.binding, received.message, self.spec.type, self.origin)
        except BadMessage as exc:
            # Imported as it came, not dropped and not left to come back forever.
            log.warning("source %s: %s; imported as a plain %s event", self.spec.name, exc,
                        self.spec.type)
            event = binding.plain_event(received.message, self.spec.type, self.origin)
            extensions = {**event.extensions, "fnrunerror": str(exc)[:200]}
            return Event(type=event.type, id=event.id, source=event.source, data=event.data,
                         extensions=extensions)

    async def _store_then_ack(self, events: list[Event], batch: list[Received]) -> None:
        """Publish until the store took them (pausing meanwhile), then acknowledge each."""
        failures = 0
        while True:
            try:
                # Shielded: a stop (reload, SIGTERM) lets a started publish finish and
                # acknowledges what it stored, rather than leave it to a redelivery.
                with anyio.CancelScope(shield=True), anyio.fail_after(PUBLISH_PATIENCE):
                    await self.ingress.publish(events)
                    await ack_all(batch)
                break
            except (StoreError, TimeoutError) as exc:
                failures += 1
                if failures == 1:
                    log.warning("source %s: the store refuses writes; paused, nothing "
                                "acknowledged: %s", self.spec.name, exc or "timed out")
                self._set("paused", f"store: {exc or 'timed out'}")
                await anyio.sleep(min(5.0, 0.25 * 2.0 ** min(failures - 1, 8)))
            except BrokerError:
                raise  # an acknowledgement failed: the link reconnects, the broker redelivers
            except FnrunError as exc:  # an event the store cannot take: no retry helps
                log.error("source %s: cannot store %d messages: %s", self.spec.name,
                          len(events), exc)
                raise BrokerError(f"cannot store messages: {exc}") from exc
        if failures:
            log.info("source %s: the store takes writes again; resumed", self.spec.name)
            self._set("running", None)
        self.messages += len(batch)

    def _set(self, state: SourceState, error: str | None) -> None:
        if state != self.status.state or error != self.status.error:
            since = self.status.since if state == self.status.state else time.time()
            self.status = SourceStatus(state, since, error)


async def _take_ready(receive: MemoryObjectReceiveStream[Received], batch: list[Received],
                      limit: int) -> None:
    """Add to `batch`, up to `limit`, what the puller hands over without waiting for the broker.

    The puller yields to the event loop for every message it hands over (its
    window slot, the buffer's send), so taking only what was buffered at that
    instant formed batches of a few messages (7-9 of a Redis source's 100 in
    flight): this gives the puller turns while messages keep coming.
    """
    idle = 0
    while len(batch) < limit and idle < READY_TURNS:
        try:
            batch.append(receive.receive_nowait())
            idle = 0
        except anyio.WouldBlock:
            idle += 1
            await anyio.lowlevel.checkpoint()
        except anyio.EndOfStream:
            return
