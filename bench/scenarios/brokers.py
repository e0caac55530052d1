"""Broker sources: drain a backlog through `fnrun run` into a no-op function, vs bare clients.

For each broker the same backlog (RabbitMQ 20,000 persistent messages, Kafka
50,000 on 3 partitions, NATS JetStream 20,000, Redis Streams 50,000; MQTT
20,000 published while the consumer runs, since MQTT keeps messages only for
sessions that exist) is drained three ways, in the same run: by `fnrun run`
with a source feeding the drain scenario's no-op function at concurrency 2 on a
SQLite store (events/s from the handlers' stamps; the supervisor's peak RSS
sampled while it drains), by the broker's bare client that only acknowledges
(the ceiling), and, for RabbitMQ, by Celery 5 on the same broker (acks_late,
prefork, concurrency 2). For Kafka and Redis Streams the broker outruns
fnrun's store: their fnrun figure is held against fnrun's own store drain of
the same no-op (`fnrun store drain`, a preloaded SQLite backlog of 50,000).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path

from bench import fnrun_app, queues
from bench.harness import Case, Context, Scenario
from bench.peers import stamps
from bench.procs import Service, rss_mb, wait_until
from bench.scenarios.brokers_kit import RABBIT_URL, RIGS, Rig, _name, write_sources
from bench.scenarios.drain import fnrun_drain, noop_project

SIZES = {"rabbitmq": 20_000, "kafka": 50_000, "nats": 20_000, "mqtt": 20_000, "redis": 50_000}
QUICK = 2_000
PROBE_EVERY = 0.5


def size(ctx: Context, kind: str) -> int:
    return QUICK if ctx.quick else SIZES[kind]


def _zero(folder: Path) -> None:
    """Forget the warm-up's runs; in place, since the workers keep their slots mapped."""
    for slot in folder.iterdir():
        with slot.open("r+b") as file:
            file.write(bytes(stamps.SLOT.size))


def _probe_live(rig: Rig, folder: Path, alive: object) -> None:
    """Publish one message at a time until a handler ran one: the source is subscribed."""
    deadline = time.monotonic() + 60
    while stamps.summary(str(folder))[0] == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the MQTT source never handed a probe to the function")
        asyncio.run(rig.preload(1))
        time.sleep(PROBE_EVERY)
    time.sleep(2 * PROBE_EVERY)  # probes still on their way land before the reset
    _zero(folder)


def fnrun_source(kind: str) -> Case:
    def measure(ctx: Context) -> dict[str, float]:
        rig = RIGS[kind](ctx)
        rig.start()
        try:
            asyncio.run(rig.setup())
            try:
                return _fnrun_drain(ctx, rig, size(ctx, kind))
            finally:
                asyncio.run(rig.teardown())
        finally:
            rig.stop()

    return Case(f"fnrun {kind} source", measure, group=kind)


def _fnrun_drain(ctx: Context, rig: Rig, count: int) -> dict[str, float]:
    project, folder = noop_project(ctx, f"source-{rig.kind}")
    write_sources(project, rig)
    live = getattr(rig, "live", False)
    if not live:
        asyncio.run(rig.preload(count))
    supervisor = fnrun_app.Supervisor(ctx, project, fnrun_app.sqlite_url(project),
                                      name=f"fnrun-{rig.kind}-source")
    peak = 0.0

    def alive() -> bool:
        nonlocal peak
        try:
            peak = max(peak, rss_mb(supervisor.pid))
        except ProcessLookupError:
            return False
        return supervisor.service.alive()

    publisher: threading.Thread | None = None
    try:
        supervisor.wait_ready()
        if live:
            _probe_live(rig, folder, alive)
            publisher = threading.Thread(target=lambda: asyncio.run(rig.preload(count)))
            publisher.start()
        runs, first, last = queues.wait_for_runs(folder, count, 900, alive)
        wait_until(lambda: asyncio.run(rig.unsettled()) == 0, 60,
                   "the source's last acknowledgements", every=0.2)
    finally:
        if publisher is not None:
            publisher.join(60)
        supervisor.stop()
    return {"events/s": runs / (last - first), "supervisor RSS MiB": peak}


def bare(kind: str, client: str) -> Case:
    def measure(ctx: Context) -> dict[str, float]:
        rig = RIGS[kind](ctx)
        rig.start()
        try:
            async def run() -> float:
                await rig.setup()
                try:
                    if not getattr(rig, "live", False):
                        await rig.preload(size(ctx, kind))
                    return await rig.bare_drain(size(ctx, kind))
                finally:
                    await rig.teardown()

            return {"events/s": asyncio.run(run())}
        finally:
            rig.stop()

    return Case(f"{client} (bare, acks only)", measure, group=kind)


CELERY_AMQP = RABBIT_URL.rstrip("/") + "//"


def celery_rabbit(ctx: Context) -> dict[str, float]:
    """Celery 5 on the same RabbitMQ: the queue loaded first, then the worker timed."""
    from bench.peers.celery_app import app, noop

    count, queue = size(ctx, "rabbitmq"), _name()
    with app.connection_for_write(CELERY_AMQP) as conn, conn.Producer() as producer:
        for _ in range(count):
            noop.apply_async(producer=producer, queue=queue)
    folder = queues.stamp_folder(ctx)
    argv = [str(queues.BIN / "celery"), "-A", "bench.peers.celery_app", "worker", "-Q", queue,
            "--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat"]
    worker = Service(argv, ctx.logs / "celery-rabbitmq.log",
                     {"BENCH_BROKER": CELERY_AMQP, "BENCH_STAMPS": str(folder)})
    try:
        runs, first, last = queues.wait_for_runs(folder, count, 600, worker.alive)
    finally:
        worker.stop()
        asyncio.run(_delete_queue(queue))
    return {"events/s": runs / (last - first)}


async def _delete_queue(queue: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(RABBIT_URL)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)


def store_drain(ctx: Context) -> dict[str, float]:
    """fnrun's own drain of the same no-op from a preloaded SQLite store (50,000 events)."""
    sized = dataclasses.replace(ctx, drain_events=QUICK if ctx.quick else 50_000, quick=False)
    return fnrun_drain(sized)


SCENARIO = Scenario(
    name="brokers",
    title="Broker sources: drain a backlog into a no-op function, vs the bare clients",
    cases=[
        fnrun_source("rabbitmq"),
        bare("rabbitmq", "aio-pika prefetch 100"),
        Case("celery 5 on rabbitmq (acks_late, prefork 2)", celery_rabbit, group="rabbitmq"),
        fnrun_source("kafka"),
        bare("kafka", "aiokafka group, commit per batch"),
        fnrun_source("nats"),
        bare("nats", "nats-py fetch 100"),
        fnrun_source("mqtt"),
        bare("mqtt", "aiomqtt QoS 1"),
        fnrun_source("redis"),
        bare("redis", "redis-py XREADGROUP 100 + XACK"),
        Case("store drain (fnrun, preloaded sqlite, 50,000)", store_drain, group="kafka,redis"),
    ],
    notes=" ".join((__doc__ or "").split()) + (
        " Targets (issue 18), read from the ratios: RabbitMQ, NATS and MQTT sources at least "
        "0.7x their bare client and RabbitMQ at least 2x Celery; Kafka and Redis Streams at "
        "least 0.8x fnrun's store drain."),
)
