"""Broker sinks: events/s exported with the broker's confirmation, vs the bare client.

fnrun: a project with one sink of `bench.out` events and no function; 10,000
events are posted to `POST /_/events` (batches of 500) and the broker's own
client, subscribed where the sink writes, counts them: the rate is count /
(last - first), by the broker's own clock where it stamps messages (Kafka record
timestamps, JetStream store times, Redis entry ids), else by arrival (RabbitMQ,
MQTT, whose readers subscribe before fnrun starts). The bare client publishes the same count with
confirmation (publisher confirms, acks=all, PubAck, QoS 1 PUBACK, XADD reply),
at most 100 unconfirmed at once. Every sink also exports a backlog of 10,000
deliveries preloaded into the store before fnrun starts (`preloaded sqlite`): the
bare client's own setting (it publishes from memory) and the store drain's, where
nothing is posted meanwhile. The issue's targets:
at least 0.7x the bare client (RabbitMQ, NATS, MQTT), at least 0.8x fnrun's own
drain for Kafka and Redis Streams (`store drain`, 10,000 preloaded no-op events).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from typing import Any

import httpx

from bench import fnrun_app
from bench.harness import Case, Context, Scenario
from bench.scenarios.brokers_kit import RIGS, MqttRig, Rig, write_sources
from bench.scenarios.drain import fnrun_drain

SIZE, QUICK = 10_000, 1_000
BATCH = 500
PROJECT = """\
functions:
  unused:
    handler: unused.py:handle
    triggers:
      - event: bench.unused
"""


def size(ctx: Context) -> int:
    return QUICK if ctx.quick else SIZE


def post_events(base: str, count: int) -> None:
    with httpx.Client(base_url=base, timeout=60) as client:
        for start in range(0, count, BATCH):
            batch = [{"specversion": "1.0", "type": "bench.out", "source": "bench",
                      "id": f"e{i}", "data": {"n": i}}
                     for i in range(start, min(count, start + BATCH))]
            answer = client.post("/_/events", content=json.dumps(batch),
                                 headers={"content-type": "application/cloudevents-batch+json"})
            if answer.status_code != 202:
                raise RuntimeError(f"POST /_/events: {answer.status_code} {answer.text[:200]}")


def _read(rig: Rig, count: int, ready: threading.Event, out: dict[str, Any]) -> None:
    async def run() -> tuple[float, float]:
        if isinstance(rig, MqttRig):
            subscribed = asyncio.Event()
            task = asyncio.ensure_future(rig.subscribe_sink(count, 600, subscribed))
            await subscribed.wait()
            ready.set()
            return await task
        ready.set()
        return await rig.read_sink(count, 600)

    try:
        out["span"] = asyncio.run(run())
    except Exception as exc:  # noqa: BLE001 - reported by the measuring thread
        out["error"] = exc
        ready.set()


def fnrun_sink(kind: str, preloaded: bool = False) -> Case:
    def measure(ctx: Context) -> dict[str, float]:
        rig = RIGS[kind](ctx)
        rig.start()
        try:
            asyncio.run(rig.setup())
            try:
                return _export(ctx, rig, size(ctx), preloaded)
            finally:
                asyncio.run(rig.teardown())
        finally:
            rig.stop()

    if preloaded:
        return Case(f"fnrun {kind} sink, preloaded sqlite", measure, group=kind)
    return Case(f"fnrun {kind} sink", measure, group=kind)


def _export(ctx: Context, rig: Rig, count: int, preloaded: bool) -> dict[str, float]:
    """Export `count` events: posted while the sink runs, or `preloaded` in its store
    before fnrun starts (a backlog of deliveries, as the store drain has)."""
    project = fnrun_app.write_project(ctx.scratch(f"sink-{rig.kind}"), PROJECT,
                                      {"unused.py": "def handle(event):\n    return None\n"})
    write_sources(project, rig, sink_events="bench.out", source=False)
    store = fnrun_app.sqlite_url(project)
    if preloaded:
        fnrun_app.preload(store, "bench.out", ["out"], count)
    ready, out = threading.Event(), {}
    reader = threading.Thread(target=_read, args=(rig, count, ready, out))
    reader.start()
    ready.wait(60)
    supervisor = fnrun_app.Supervisor(ctx, project, store, name=f"fnrun-{rig.kind}-sink")
    try:
        supervisor.wait_ready()
        if not preloaded:
            post_events(supervisor.base, count)
        reader.join(600)
    finally:
        supervisor.stop()
        reader.join(10)
    if "error" in out:
        raise out["error"]
    first, last = out["span"]
    return {"events/s": count / (last - first)}


def bare(kind: str, client: str) -> Case:
    def measure(ctx: Context) -> dict[str, float]:
        rig = RIGS[kind](ctx)
        rig.start()
        try:
            async def run() -> float:
                await rig.setup()
                try:
                    return await rig.bare_publish(size(ctx))
                finally:
                    await rig.teardown()

            return {"events/s": asyncio.run(run())}
        finally:
            rig.stop()

    return Case(f"{client} (bare, publish with confirm)", measure, group=kind)


def store_drain(ctx: Context) -> dict[str, float]:
    return fnrun_drain(dataclasses.replace(ctx, drain_events=size(ctx), quick=False))


SCENARIO = Scenario(
    name="brokers_sinks",
    title="Broker sinks: events/s exported with confirmation, vs the bare clients",
    cases=[
        fnrun_sink("rabbitmq"), bare("rabbitmq", "aio-pika confirms"),
        fnrun_sink("kafka"), bare("kafka", "aiokafka acks=all"),
        fnrun_sink("nats"), bare("nats", "nats-py PubAck"),
        fnrun_sink("mqtt"), bare("mqtt", "aiomqtt QoS 1"),
        fnrun_sink("redis"), bare("redis", "redis-py XADD"),
        fnrun_sink("rabbitmq", preloaded=True), fnrun_sink("nats", preloaded=True),
        fnrun_sink("mqtt", preloaded=True),
        fnrun_sink("kafka", preloaded=True), fnrun_sink("redis", preloaded=True),
        Case("store drain (fnrun, preloaded sqlite, 10,000)", store_drain, group="kafka,redis"),
    ],
    notes=" ".join((__doc__ or "").split()),
)
