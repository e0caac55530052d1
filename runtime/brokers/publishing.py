"""What the adapters share to publish: a batch settled message by message (`Settle`).

An adapter whose client pipelines on its own (aio-pika's publisher
confirms, aiomqtt's QoS 1) publishes a batch with `publish_concurrently`:
every message's confirmed publish started at once. Every adapter's single
`publish` is its `publish_many` of one message (`publish_one`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import anyio

from runtime.brokers.base import BrokerError, Endpoint, Message, Settle

__all__ = ["Settle", "publish_concurrently", "publish_one"]

Publish = Callable[[Endpoint, Message], Awaitable[None]]
"""One message's publish, returning once the broker confirmed it (raises `BrokerError`)."""


async def publish_concurrently(messages: Sequence[tuple[Endpoint, Message]], publish: Publish,
                               settle: Settle) -> None:
    """`publish` every message at once, settling each as its own confirmation or error comes."""

    async def one(index: int, endpoint: Endpoint, message: Message) -> None:
        try:
            await publish(endpoint, message)
        except BrokerError as exc:
            settle(index, exc)
        else:
            settle(index, None)

    async with anyio.create_task_group() as tg:
        for index, (endpoint, message) in enumerate(messages):
            tg.start_soon(one, index, endpoint, message)


async def publish_one(
    publish_many: Callable[[Sequence[tuple[Endpoint, Message]], Settle], Awaitable[None]],
    endpoint: Endpoint, message: Message,
) -> None:
    """A `Broker.publish` by way of the adapter's `publish_many`: raise what failed it."""
    errors: list[BrokerError] = []

    def settle(_index: int, error: BrokerError | None) -> None:
        if error is not None:
            errors.append(error)

    await publish_many([(endpoint, message)], settle)
    if errors:
        raise errors[0]
