"""MQTT 5 (or 3.1.1) with aiomqtt: QoS 1, PUBACK sent only on ack, persistent sessions.

A source subscribes with QoS 1 under its own client id in a session that
outlives the connection (clean start off, a day's session expiry), and
PUBACKs a message only when it is acknowledged: the broker keeps every
message not PUBACKed and sends it again when that client id reconnects.
aiomqtt has no public switch for manual acknowledgement, so we use the
paho-mqtt client it wraps (paho's `manual_ack_set` and `ack`, since 2.0).
`prefetch` is the MQTT 5 Receive Maximum: the broker sends no more than that
many unacknowledged messages. MQTT 3.1.1 has no such property; there the
broker's own in-flight limit (Mosquitto's max_inflight_messages, 20) holds
and the rest waits in the client. A sink publishes with QoS 1 and returns
on the PUBACK; over MQTT 5 it keeps as many publishes awaiting their PUBACK
as the broker's CONNACK Receive Maximum allows (up to `PUBLISH_WINDOW`), not
paho's fixed 20. Choose 3.1.1 with `?version=3.1.1` on the URL.
MQTT messages carry no broker position, so their events get fresh ids:
a redelivered message is imported again.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from runtime.brokers.acking import Acks
from runtime.brokers.base import BrokerError, BrokerUnavailable, Endpoint, Message, Received, Window
from runtime.brokers.publishing import Settle, publish_concurrently
from runtime.brokers.urls import credentials, redact

KEEPALIVE = 10
"""Seconds between PINGREQs: a connection that died without closing (a broker restarted
under it) is noticed within 1.5x this, not aiomqtt's default 60 s (90 s)."""
PUBLISH_WINDOW = 1_000
"""Most QoS 1 publishes awaiting their PUBACK at once, where the broker's Receive Maximum
allows that many (Mosquitto's default is 20, its `max_inflight_messages`)."""
_RECEIVE_MAXIMUM = 65_535  # MQTT 5's value when the CONNACK names none
SESSION_EXPIRY = 86_400  # seconds the broker keeps a source's session while it is away
_PORTS = {"mqtt": 1883, "mqtts": 8883}


class Mqtt:
    """A publishing client, and one client per `consume` under that source's client id."""

    binding = "mqtt"

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._url = url
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or _PORTS.get(parts.scheme, 1883)
        self._user, self._password = credentials(url)
        self._tls = ssl.create_default_context() if parts.scheme == "mqtts" else None
        version = parse_qs(parts.query).get("version", ["5"])[0]
        if version not in ("5", "3.1.1"):
            raise BrokerError(f"MQTT version must be 5 or 3.1.1, got {version!r}")
        self.v5 = version == "5"
        self.binding = "mqtt" if self.v5 else "mqtt3"
        self._publisher: aiomqtt.Client | None = None

    async def connect(self) -> None:
        client = self._client(None, clean=True, receive_maximum=None)
        if self.v5:
            _follow_receive_maximum(client)
        # A sink's batch publishes all its messages at once: not a concern to warn of.
        client.pending_calls_threshold = PUBLISH_WINDOW
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailable(f"cannot reach MQTT at {redact(self._url)}: {exc}") from exc
        self._publisher = client

    async def consume(self, endpoint: Endpoint, prefetch: int) -> AsyncIterator[Received]:
        topic, client_id = _required(endpoint.topic, "topic"), _required(endpoint.client_id,
                                                                          "client_id")
        client = self._client(client_id, clean=False, receive_maximum=prefetch)
        paho = client._client  # no public manual-ack switch in aiomqtt
        paho.manual_ack_set(True)
        window = Window(prefetch)
        acks = _acks(paho)
        try:
            async with client:
                await client.subscribe(topic, qos=1)
                messages = aiter(client.messages)
                while True:
                    await window.take()
                    incoming = await anext(messages)
                    yield window.received(_message(incoming), (incoming.mid, incoming.qos), acks)
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailable(f"lost MQTT at {redact(self._url)}: {exc}") from exc
        finally:
            _forget_disconnection(client)

    async def publish(self, endpoint: Endpoint, message: Message) -> None:
        if self._publisher is None:
            raise BrokerUnavailable("not connected to MQTT")
        try:
            # QoS 1: returns once the broker's PUBACK came.
            await self._publisher.publish(_required(endpoint.topic, "topic"), message.body,
                                          qos=1, properties=self._properties(message))
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailable(f"MQTT did not take the message: {exc}") from exc

    async def publish_many(self, messages: Sequence[tuple[Endpoint, Message]],
                           settle: Settle) -> None:
        """Every message published at once at QoS 1, each settled by its own PUBACK."""
        await publish_concurrently(messages, self.publish, settle)

    def _properties(self, message: Message) -> Properties | None:
        """MQTT 5's content type and user properties (the headers); none in 3.1.1."""
        if not self.v5:
            return None
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if message.content_type:
            properties.ContentType = message.content_type
        if message.headers:
            properties.UserProperty = list(message.headers.items())
        return properties

    async def backlog(self, endpoint: Endpoint) -> int | None:
        """MQTT does not tell how many messages a session holds."""
        return None

    async def close(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            try:
                await publisher.__aexit__(None, None, None)
            except aiomqtt.MqttError:
                pass  # already disconnected
            _forget_disconnection(publisher)

    def _client(self, client_id: str | None, clean: bool, receive_maximum: int | None
                ) -> aiomqtt.Client:
        options: dict[str, Any] = {}
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if not clean:
                properties.SessionExpiryInterval = SESSION_EXPIRY
            if receive_maximum is not None:
                properties.ReceiveMaximum = min(receive_maximum, 65_535)
            options.update(protocol=aiomqtt.ProtocolVersion.V5, clean_start=clean,
                           properties=properties)
        else:
            options.update(protocol=aiomqtt.ProtocolVersion.V311, clean_session=clean)
        return aiomqtt.Client(
            self._host, self._port, username=self._user, password=self._password,
            identifier=client_id, tls_context=self._tls, timeout=15, keepalive=KEEPALIVE,
            **options,
        )


def _follow_receive_maximum(client: aiomqtt.Client) -> None:
    """Keep up to the broker's Receive Maximum (at most `PUBLISH_WINDOW`) QoS 1 publishes
    awaiting their PUBACK, as MQTT 5 allows a client to, instead of paho's fixed 20.

    paho reads the CONNACK's Server Keep Alive but not its Receive Maximum, and its
    `max_inflight_messages` setter refuses an open connection: the limit is set as
    the CONNACK arrives, before anything is published, then aiomqtt's own callback runs.
    """
    paho = client._client
    forward: Any = paho.on_connect  # aiomqtt's own; paho types it as a union of signatures

    def on_connect(paho_client: Any, userdata: Any, flags: Any, reason: Any,
                   properties: Properties | None = None) -> None:
        allowed = getattr(properties, "ReceiveMaximum", _RECEIVE_MAXIMUM)
        paho._max_inflight_messages = max(1, min(allowed, PUBLISH_WINDOW))
        forward(paho_client, userdata, flags, reason, properties)

    paho.on_connect = on_connect


def _forget_disconnection(client: aiomqtt.Client) -> None:
    """Read the error of a connection lost while nobody waited on it.

    aiomqtt keeps an unexpected disconnection as the exception of a future
    that only its message iterator awaits; when we stop before that, asyncio
    would log it as "never retrieved". We know of the loss already.
    """
    disconnected = client._disconnected
    if disconnected.done() and not disconnected.cancelled():
        disconnected.exception()


def _acks(paho: Any) -> Acks:
    """A PUBACK per (mid, qos): MQTT has no cumulative acknowledgement."""
    async def ack(tokens: Sequence[tuple[int, int]]) -> None:
        for mid, qos in tokens:
            # paho queues a PUBACK without a connection and reports success: ask first.
            if not paho.is_connected() or paho.ack(mid, qos) != 0:
                raise BrokerUnavailable("cannot acknowledge: the MQTT connection is gone")

    return ack


def _message(incoming: aiomqtt.Message) -> Message:
    properties = incoming.properties
    headers: dict[str, str] = {}
    content_type = None
    if properties is not None:
        headers = dict(getattr(properties, "UserProperty", []) or [])
        content_type = getattr(properties, "ContentType", None)
    body = incoming.payload
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes | bytearray):
        body = b"" if body is None else str(body).encode()
    return Message(body=bytes(body), headers=headers, content_type=content_type,
                   metadata={"topic": incoming.topic.value})


def _required(value: str | None, what: str) -> str:
    if not value:
        raise BrokerError(f"MQTT needs a {what}")
    return value
