"""Broker adapters: Kafka, RabbitMQ, NATS JetStream, MQTT and Redis Streams (SPEC 10).

This folder owns the talk with other brokers and nothing else: one small
interface (`base.Broker`: connect, consume with explicit ack under a
`prefetch` bound, publish with confirm, one message or a batch settled
message by message, close; `publishing` holds what the adapters share to
publish), one adapter module per broker on its well-kept client, the table
from URL scheme to adapter (`base.open_broker`, imported lazily so a missing
client costs nothing until a project names that broker), and the CloudEvents
protocol bindings between broker messages and fnrun events (`binding`). It
imports only fnrun's leaves; the supervisor side wires sources and sinks on
top of it.
"""
