"""The scheme table: adapters imported lazily, a missing client named by its extra in one line."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from runtime.brokers.base import KINDS, BrokerError, Window, open_broker
from runtime.brokers.urls import redact, servers

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("url", "adapter"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ"),
        ("kafka://127.0.0.1:9092,127.0.0.1:9093", "Kafka"),
        ("nats://127.0.0.1:4222", "Nats"),
        ("mqtt://127.0.0.1:1883", "Mqtt"),
        ("redis://127.0.0.1:6379/3", "RedisStreams"),
    ],
)
def test_each_scheme_opens_its_adapter(url: str, adapter: str) -> None:
    assert type(open_broker(url)).__name__ == adapter


def test_an_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(BrokerError, match=r"unknown broker scheme 'pulsar' \(known: amqp, "):
        open_broker("pulsar://127.0.0.1:6650")


@pytest.mark.parametrize("scheme", ["amqp", "kafka", "nats", "mqtt"])
def test_a_missing_client_is_one_line_naming_the_extra(scheme: str) -> None:
    """In a fresh interpreter where the client library cannot be imported."""
    kind = KINDS[scheme]
    script = textwrap.dedent(f"""
        import sys
        sys.modules[{kind.client!r}] = None  # as if not installed
        from runtime.brokers.base import MissingClient, open_broker
        try:
            open_broker("{scheme}://127.0.0.1:1")
        except MissingClient as exc:
            print(exc)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=30, check=True)
    assert result.stdout == (
        f"{scheme}:// brokers need the {kind.client} client: pip install 'fnrun[{kind.extra}]'\n"
    )


def test_importing_the_table_imports_no_client() -> None:
    script = ("import sys, runtime.brokers.base, runtime.brokers.binding; "
              "print(sorted(m for m in ('aio_pika', 'aiokafka', 'nats', 'aiomqtt') "
              "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=30, check=True)
    assert result.stdout.strip() == "[]"


def test_urls_are_shown_without_their_password() -> None:
    assert redact("amqp://app:s3cret@rabbit:5672/vh") == "amqp://app:***@rabbit:5672/vh"
    assert redact("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
    assert servers("kafka://a:1,b,[::1]:3", 9092) == ["a:1", "b:9092", "[::1]:3"]


@pytest.mark.parametrize("raw", ["0", "abc", "1000"])
def test_a_bad_kafka_session_timeout_is_one_line(raw: str) -> None:
    with pytest.raises(BrokerError, match="session_timeout must be 1 to 300 seconds"):
        open_broker(f"kafka://127.0.0.1:9092?session_timeout={raw}")


def test_prefetch_must_allow_one_message() -> None:
    with pytest.raises(ValueError, match="prefetch must be at least 1"):
        Window(0)
