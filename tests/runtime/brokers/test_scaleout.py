"""Where a source consumes when several supervisors run it (issue 18 point 6), and `ack_wait`."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.brokers.sources import endpoint_of
from runtime.brokers.specs import SourceSpec
from runtime.errors import Where

NODE = "host:8080"


def spec(**fields: object) -> SourceSpec:
    return SourceSpec("temps", Where(Path("f.yaml"), 1, 1), broker="b", type="t.in",
                      **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("topic", "client_id"), [
    ("sensors/+/temp", "fnrun-temps"),  # one session for the source, whichever node runs it
    ("$share/fnrun/sensors/+/temp", f"fnrun-temps-{NODE}"),  # one per node in the share
])
def test_an_mqtt_shared_subscription_gets_a_session_per_node(topic: str, client_id: str) -> None:
    endpoint = endpoint_of(spec(topic=topic), NODE)
    assert (endpoint.topic, endpoint.client_id) == (topic, client_id)


def test_a_client_id_given_is_kept_even_when_shared() -> None:
    endpoint = endpoint_of(spec(topic="$share/g/t", client_id="mine"), NODE)
    assert endpoint.client_id == "mine"


def test_consumer_groups_are_shared_and_redis_consumers_are_per_node() -> None:
    endpoint = endpoint_of(spec(stream="orders"), NODE)
    assert (endpoint.group, endpoint.durable, endpoint.consumer) == (
        "fnrun-temps", "fnrun-temps", NODE)


def test_ack_wait_reaches_the_endpoint() -> None:
    assert endpoint_of(spec(subject="s", ack_wait=2.0), NODE).ack_wait == 2.0
    assert endpoint_of(spec(subject="s"), NODE).ack_wait == 30.0
