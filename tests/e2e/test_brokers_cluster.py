"""Scale-out of broker sources (SPEC 9 and 10, issue 18 point 6): two supervisors, one source.

Two `fnrun run` nodes share a Redis store (DB 9 of the test Redis, flushed
around each test) and one project with a source on each broker, which both consume: a Kafka
consumer group, RabbitMQ competing consumers, a NATS durable pull consumer,
a Redis Streams group (each node its own consumer name) and an MQTT shared
subscription (`$share/GROUP/topic`, each node its own client id). While the
broker's own client produces numbered messages, one node is killed with
`kill -9`; the other takes over. Before the kill, each node's `/_/metrics`
shows it imported messages of every source: the source is shared, not held by
one. Every message is handled, and none is imported twice: where the event id
derives from the broker's position, each broker message is exactly one event
(the store dedupes a redelivery by id).

MQTT: Mosquitto keeps what it had sent to the killed node's session (not yet
acknowledged) for that session, not for the other member of the share, so
the killed node is started again (same port, same client id) to hand it in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.brokerside import (
    Ledger,
    Loop,
    MqttSide,
    Side,
    env_of,
    make_side,
    probe,
    source_project,
)
from tests.e2e.harness import Project, free_port, wait_until
from tests.services import redis_url

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(240)]

SHARED = redis_url(9)
COUNT = 1_000
KINDS = ["kafka", "rabbitmq", "nats", "redis", "mqtt"]


@pytest.fixture
def store(service_missing: Callable[[str], NoReturn]) -> Iterator[str]:
    try:
        with redis.Redis.from_url(SHARED, socket_connect_timeout=1) as client:
            client.flushdb()
    except redis.RedisError as exc:
        service_missing(f"Redis is not reachable at {SHARED}: {exc}")
    yield SHARED
    with redis.Redis.from_url(SHARED, socket_connect_timeout=1) as client:
        client.flushdb()


@pytest.fixture
def sides(tmp_path: Path, service_missing: Callable[[str], NoReturn]) -> Iterator[list[Side]]:
    loop = Loop()
    made: list[Side] = []
    try:
        for kind in KINDS:
            side = make_side(kind, loop, tmp_path / kind, service_missing)
            if isinstance(side, MqttSide):
                side.share = "fnrun"
            side.setup()
            made.append(side)
        yield made
    finally:
        for side in made:
            side.teardown()
        loop.close()


def start_node(project: Project, sides: list[Side], store: str, port: int
               ) -> subprocess.Popen[bytes]:
    """One more `fnrun run` on `port`, sharing `store`; waits for health."""
    with open(project.root / f"supervisor-{len(project.procs)}.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", "run", "--project", str(project.root),
             "--store", store, "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **env_of(sides)},
        )  # fmt: skip
    project.procs.append(proc)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"fnrun run exited {proc.returncode}:\n{project.output()}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/_/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=30)
    return proc


def imported(port: int, side: Side) -> float:
    """How many messages of `side`'s source the node on `port` stored (fnrun_source_messages)."""
    text = httpx.get(f"http://127.0.0.1:{port}/_/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "fnrun_source_messages_total"
                    and sample.labels.get("source") == f"in-{side.kind}"):
                return float(sample.value)
    return 0.0


def test_two_nodes_share_each_source_and_one_takes_over(project: Project, sides: list[Side],
                                                        store: str) -> None:
    wanted, ledger = {side.kind: COUNT for side in sides}, Ledger(project)
    source_project(project, sides)
    ports = [free_port(), free_port()]
    nodes = [start_node(project, sides, store, port) for port in ports]
    for side in sides:
        probe(project, ledger, side)
    producing = [side.loop.spawn(side.produce_over(range(COUNT), 6)) for side in sides]
    wait_until(lambda: ledger.all_handled(sides, wanted, 1 / 3), timeout=120, interval=0.2)
    # Shared: each node has imported messages of every source (its own /_/metrics).
    wait_until(lambda: all(imported(port, side) for port in ports for side in sides),
               timeout=60, interval=0.2)
    project.kill9(nodes[0])
    others = [side for side in sides if not isinstance(side, MqttSide)]
    for future in producing:
        future.result(120)
    # The survivor alone finishes every source but MQTT's share (see the docstring).
    wait_until(lambda: ledger.all_handled(others, wanted), timeout=120, interval=0.2)
    nodes[0] = start_node(project, sides, store, ports[0])
    wait_until(lambda: ledger.all_handled(sides, wanted), timeout=120, interval=0.2)
    for node in nodes:
        assert project.stop(node) == 0
    problems = []
    for side in sides:
        tally = ledger.of(side)
        total = side.loop.run(side.total())
        if total is not None:
            total -= side.probes
        unsettled = side.loop.run(side.unsettled())
        print(f"{side.kind} two nodes, one killed: {COUNT} produced ({total} in the broker), "
              f"{tally.handled} handled, {tally.events} events, duplicate imports "
              f"{tally.events - tally.handled}, handler reruns {tally.reruns}, "
              f"unacknowledged {unsettled}")
        if tally.missing(COUNT):
            problems.append(f"{side.kind}: {len(tally.missing(COUNT))} never handled")
        if side.counts_positions and tally.events != (total if total is not None else COUNT):
            problems.append(f"{side.kind}: imported twice ({tally.events} events)")
        if unsettled not in (0, None):
            problems.append(f"{side.kind}: {unsettled} left unacknowledged")
    assert problems == []
