"""`fnrun run` with a source and a sink on each real broker (SPEC 10), end to end.

Per broker: messages produced by the broker's own client (plain JSON, and a
CloudEvent in binary and in structured mode) feed a function through a
source; the function emits an event per message, which a sink exports to
the same broker, read back with the broker's own client. Midway the
connection is cut (a proxy between fnrun and the broker): the source and
the sink reconnect, and every message is still handled and exported. A
handler's failed first attempt (which emitted too) exports nothing: each
exported id is there exactly once. `/_/health` and `/_/metrics` show the
broker up and the source's count.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NoReturn

import aio_pika
import aiokafka
import anyio
import httpx
import nats
import pytest
import redis.asyncio
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.e2e.harness import Project
from tests.runtime.brokers.conftest import RIGS, make_rig
from tests.runtime.brokers.rigs import MqttRig, NatsRig, Rig, body_of

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

N = 60
PREFIX = {"amqp": "cloudEvents_", "kafka": "ce_", "mqtt": "", "nats": "ce-", "redis": "ce_"}
STRUCTURED_OUT = {"kafka", "mqtt"}
"""Kinds whose sink exports in structured mode; the others export binary mode."""

RELAY = '''
def handler(event, ctx):
    n = event.data["n"] if isinstance(event.data, dict) else -1
    record(event, ctx, n=n, source=event.source, ext=dict(event.extensions))
    ctx.emit("test.out", {"n": n}, id=f"out-{ctx.attempt}-{event.id}")
    if n % 10 == 3 and ctx.attempt == 1:
        raise RuntimeError("first attempts of these fail, after emitting")
'''


@pytest.fixture(params=RIGS)
async def rig(
    request: pytest.FixtureRequest, tmp_path: Path, service_missing: Callable[[str], NoReturn]
) -> AsyncIterator[Rig]:
    made = make_rig(request.param, tmp_path, service_missing)
    await made.setup()
    try:
        yield made
    finally:
        await made.teardown()


def source_fields(rig: Rig) -> dict[str, Any]:
    name = rig.name
    return {
        "amqp": {"queue": name},
        "kafka": {"topic": name, "group": f"{name}-g"},
        "nats": {"subject": f"{name}.in", "stream": getattr(rig, "stream", ""),
                 "durable": "source"},
        # A session of its own: the rig's subscribes to the whole tree, the sink's topic too.
        "mqtt": {"topic": f"fnrun-test/{name}/in", "client_id": f"{name}-src"},
        "redis": {"stream": name, "group": "source"},
    }[rig.kind]


def sink_fields(rig: Rig) -> dict[str, Any]:
    name = rig.name
    fields: dict[str, Any] = {
        "amqp": {"queue": f"{name}-out"},
        "kafka": {"topic": f"{name}-out"},
        "nats": {"subject": f"{name}.out"},
        "mqtt": {"topic": f"fnrun-test/{name}/out"},
        "redis": {"stream": f"{name}-out"},
    }[rig.kind]
    if rig.kind in STRUCTURED_OUT:
        fields["format"] = "structured"
    return fields


class Outbox:
    """The sink's side, read with the broker's own client."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.name = rig.name
        self.found: list[tuple[dict[str, str], str | None, bytes]] = []
        self._close: list[Any] = []

    async def open(self) -> None:
        kind = self.rig.kind
        if kind == "amqp":
            connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
            self._close.append(connection.close)
            channel = await connection.channel()
            self._queue = await channel.declare_queue(f"{self.name}-out", durable=True)
            self._close.insert(0, lambda: self._queue.delete(if_unused=False, if_empty=False))
        elif kind == "kafka":
            admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{self.rig.proxy.port}")
            await admin.start()
            try:
                await admin.create_topics([NewTopic(f"{self.name}-out", 1, 1)])
            finally:
                await admin.close()
        elif kind == "mqtt":  # sessions exist before anything is published: none is missed
            assert isinstance(self.rig, MqttRig)
            async with self.rig._client(f"{self.name}-out", clean=False) as client:
                await client.subscribe(f"fnrun-test/{self.name}/out", qos=1)
            async with self.rig._client(f"{self.name}-src", clean=False) as client:
                await client.subscribe(f"fnrun-test/{self.name}/in", qos=1)

    async def close(self) -> None:
        for close in self._close:
            await close()
        if self.rig.kind == "mqtt":
            assert isinstance(self.rig, MqttRig)
            for client_id in (f"{self.name}-out", f"{self.name}-src"):
                async with self.rig._client(client_id, clean=True):
                    pass

    async def read(self, count: int) -> list[tuple[dict[str, str], str | None, bytes]]:
        """Everything exported so far, waiting up to a few seconds for `count` of it."""
        reader = getattr(self, f"_read_{self.rig.kind}")
        with anyio.move_on_after(20):
            while len(set(exported_ids(self.rig, self.found))) < count:
                await reader(max(1, count - len(self.found)))  # duplicates count in found
        return self.found

    async def _read_amqp(self, count: int) -> None:
        incoming = await self._queue.get(no_ack=True, fail=False)
        if incoming is None:
            await anyio.sleep(0.05)
            return
        headers = {k: v.decode() if isinstance(v, bytes) else str(v)
                   for k, v in incoming.headers.items()}
        self.found.append((headers, incoming.content_type, incoming.body))

    async def _read_kafka(self, count: int) -> None:
        consumer = aiokafka.AIOKafkaConsumer(
            f"{self.name}-out", bootstrap_servers=f"127.0.0.1:{self.rig.proxy.port}",
            auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        try:
            self.found.clear()
            with anyio.move_on_after(3):
                while True:
                    record = await consumer.getone()
                    headers = {k: v.decode() for k, v in record.headers}
                    self.found.append((headers, headers.pop("content-type", None), record.value))
        finally:
            await consumer.stop()

    async def _read_nats(self, count: int) -> None:
        assert isinstance(self.rig, NatsRig)
        client = await nats.connect("nats://127.0.0.1:4222")
        try:
            sub = await client.jetstream().pull_subscribe(f"{self.name}.out",
                                                          stream=self.rig.stream)
            try:
                for msg in await sub.fetch(count, timeout=2):
                    headers = dict(msg.headers or {})
                    self.found.append((headers, headers.pop("content-type", None), msg.data))
                    await msg.ack()
            except nats.errors.TimeoutError:
                pass
        finally:
            await client.close()

    async def _read_mqtt(self, count: int) -> None:
        assert isinstance(self.rig, MqttRig)
        async with self.rig._client(f"{self.name}-out", clean=False) as client:
            await client.subscribe(f"fnrun-test/{self.name}/out", qos=1)
            with anyio.move_on_after(3):
                async for incoming in client.messages:
                    props = incoming.properties
                    headers = dict(getattr(props, "UserProperty", []) or [])
                    assert isinstance(incoming.payload, bytes)
                    self.found.append((headers, getattr(props, "ContentType", None),
                                       incoming.payload))
                    if len(self.found) >= count:
                        break

    async def _read_redis(self, count: int) -> None:
        client = redis.asyncio.Redis.from_url(self.rig.url.replace(
            str(self.rig.proxy.port), str(self.rig.port)))
        try:
            entries = await client.xrange(f"{self.name}-out")
        finally:
            await client.aclose()
        self.found.clear()
        for _, raw in entries:
            fields = {k.decode(): v for k, v in raw.items()}
            body = fields.pop("data")
            content_type = fields.pop("content-type", None)
            self.found.append(({k: v.decode() for k, v in fields.items()},
                               content_type.decode() if content_type else None, body))
        if len(self.found) < count:
            await anyio.sleep(0.1)


def exported_ids(rig: Rig, found: list[tuple[dict[str, str], str | None, bytes]]) -> list[str]:
    """The CloudEvent id of each exported message, checking its mode and attributes."""
    ids = []
    for headers, content_type, body in found:
        if rig.kind in STRUCTURED_OUT:
            assert content_type == "application/cloudevents+json", (headers, content_type)
            event = json.loads(body)
            assert event["type"] == "test.out" and event["specversion"] == "1.0"
            assert event["data"]["n"] >= 0
            ids.append(event["id"])
        else:
            prefix = PREFIX[rig.kind]
            assert headers[f"{prefix}type"] == "test.out", headers
            assert headers[f"{prefix}specversion"] == "1.0"
            assert content_type == "application/json"
            assert json.loads(body)["n"] >= 0
            ids.append(headers[f"{prefix}id"])
    return ids


def write_project(project: Project, rig: Rig) -> None:
    source = {"broker": "b", "type": "test.in", "prefetch": 20, **source_fields(rig)}
    sink = {"broker": "b", "events": "test.out", "retry": {"max_attempts": 20, "backoff": "0.2s",
                                                           "max_backoff": "1s"},
            "timeout": "5s", **sink_fields(rig)}
    config = {"brokers": {"b": {"url_env": "FNRUN_TEST_BROKER"}}, "sources": {"src": source},
              "sinks": {"out": sink}}
    project.write("fnrun.yaml", json.dumps(config))
    project.add("relay", """
        functions:
          relay:
            handler: relay.py:handler
            concurrency: 2
            retry: {max_attempts: 3, backoff: 0.1s}
            triggers: [{event: test.in}]
    """, RELAY)


async def until(check: Callable[[], Any], within: float = 30) -> Any:
    with anyio.fail_after(within):
        while True:
            value = await anyio.to_thread.run_sync(check)
            if value:
                return value
            await anyio.sleep(0.1)


async def test_source_and_sink_on_each_broker(rig: Rig, tmp_path: Path) -> None:
    project = Project(tmp_path / "project")
    write_project(project, rig)
    outbox = Outbox(rig)
    await outbox.open()
    try:
        await anyio.to_thread.run_sync(
            lambda: project.start(env={"FNRUN_TEST_BROKER": rig.url}))
        await exercise(project, rig, outbox)
    finally:
        project.close()
        await outbox.close()


async def exercise(project: Project, rig: Rig, outbox: Outbox) -> None:
    prefix = PREFIX[rig.kind]
    binary = {f"{prefix}{k}": v for k, v in (("specversion", "1.0"), ("id", "ce-bin-1"),
                                             ("type", "test.in"), ("source", "producer/b"),
                                             ("subject", "sub-1"), ("myext", "kept"))}
    await rig.native_publish(json.dumps({"n": 1000}).encode(), binary, "application/json")
    structured = {"specversion": "1.0", "id": "ce-str-1", "type": "test.in",
                  "source": "producer/s", "myext": "kept", "data": {"n": 1001}}
    await rig.native_publish(json.dumps(structured).encode(), {},
                             "application/cloudevents+json")
    for i in range(N // 2):
        await rig.native_publish(body_of(i), {}, "application/json")

    def numbers() -> set[int]:
        """The numbers handled successfully (a first attempt of n % 10 == 3 fails)."""
        return {c["n"] for c in project.calls() if c["n"] % 10 != 3 or c["attempt"] > 1}

    await until(lambda: {1000, 1001, *range(N // 2)} <= numbers())
    await rig.proxy.cut()  # the source and the sink reconnect
    for i in range(N // 2, N):
        await rig.native_publish(body_of(i), {}, "application/json")
    await until(lambda: {1000, 1001, *range(N)} <= numbers(), within=45)

    calls = {c["n"]: c for c in project.calls()}
    assert calls[1000]["id"] == "ce-bin-1" and calls[1000]["source"] == "producer/b"
    assert calls[1000]["ext"]["myext"] == "kept"
    assert calls[1001]["id"] == "ce-str-1" and calls[1001]["ext"]["myext"] == "kept"
    assert calls[5]["type"] == "test.in" and calls[5]["source"] == "/fnrun/sources/src"
    if rig.kind == "kafka":
        assert calls[5]["ext"]["partitionkey"] == "k1"
        assert calls[5]["id"].startswith(f"kafka:{rig.name}:")

    failed = [c for c in project.calls() if c["n"] % 10 == 3 and c["attempt"] == 1]
    assert failed
    expected = {f"out-{c['attempt']}-{c['id']}" for c in project.calls() if c not in failed}
    found = await outbox.read(len(expected))
    ids = exported_ids(rig, found)
    # Every successful attempt's emit is exported (a publish cut before its confirm may be
    # exported twice: at least once), and no failed attempt's emit is.
    assert set(ids) == expected, (set(ids) ^ expected, len(ids), len(expected))

    def settled() -> bool:  # the last exports' outcomes are written after their confirms
        brokers = httpx.get(project.url("/_/brokers"), timeout=5).json()
        return bool(brokers["sinks"]["out"]["pending"] == 0)

    await until(settled)
    async with httpx.AsyncClient(timeout=5) as client:
        health = (await client.get(project.url("/_/health"))).json()
        metrics = (await client.get(project.url("/_/metrics"))).text
    assert health["brokers"]["b"]["state"] == "up"
    assert health["sources"]["src"]["messages"] >= N + 2
    assert 'fnrun_broker_up{broker="b"} 1.0' in metrics
    assert 'fnrun_source_messages_total{source="src"}' in metrics
    assert 'fnrun_sink_pending{sink="out"} 0.0' in metrics
    # Where the broker tells a source's backlog (not MQTT), it is shown and exported.
    if rig.kind == "mqtt":
        assert health["sources"]["src"]["lag"] is None
    else:
        def lag() -> object:
            found = httpx.get(project.url("/_/health"), timeout=5).json()["sources"]["src"]["lag"]
            return isinstance(found, int) and found >= 0

        await until(lag, within=15)
        async with httpx.AsyncClient(timeout=5) as client:
            metrics = (await client.get(project.url("/_/metrics"))).text
        assert 'fnrun_source_lag{source="src"}' in metrics
