"""A sink's executor: runs its deliveries by publishing each event to its broker.

A sink is a subscriber like a function (SPEC 10): the dispatcher claims its
deliveries, retries failures with the sink's retry policy and dead-letters
them, and records every attempt in the history. Only the executor differs:
instead of a worker pool, `SinkPublisher.invoke_many` publishes each event
as a CloudEvent (binary mode, or structured with `format: structured`)
keeping the event id, and an attempt succeeds only on the broker's
confirmation. A broker that is down fails the attempt after waiting up to
the sink's `timeout` for it to come back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import anyio

from runtime.brokers import binding
from runtime.brokers.base import BrokerError, BrokerUnavailable, Endpoint
from runtime.brokers.declarations import render
from runtime.brokers.links import Link
from runtime.brokers.specs import SinkSpec
from runtime.clock import Clock
from runtime.events import Event, Outcome


class SinkPublisher:
    """The executor of one sink's deliveries (what a worker pool is to a function)."""

    def __init__(self, spec: SinkSpec, link: Callable[[], Link | None], clock: Clock) -> None:
        """Args:
            link: the sink's broker link now (None while its broker is not declared).
        """
        self.spec = spec
        self._link = link
        self.clock = clock
        self.live_workers = 0

    async def invoke_many(self, items: Sequence[tuple[Event, int]]) -> list[Outcome]:
        """Publish each event, all at once; one outcome per item, in order."""
        if len(items) == 1:
            return [await self.publish(items[0][0])]
        outcomes: list[Outcome | None] = [None] * len(items)

        async def one(index: int, event: Event) -> None:
            outcomes[index] = await self.publish(event)

        async with anyio.create_task_group() as tg:
            for index, (event, _) in enumerate(items):
                tg.start_soon(one, index, event)
        return [o for o in outcomes if o is not None]

    async def publish(self, event: Event) -> Outcome:
        """One attempt: ok once the broker confirmed, else an error or a timeout."""
        started, t0 = self.clock.now(), time.monotonic()

        def failed(status: str, error: str) -> Outcome:
            return Outcome(status, started, time.monotonic() - t0, error=error)  # type: ignore[arg-type]

        link = self._link()
        if link is None:
            return failed("error", f"broker {self.spec.broker!r} is not declared")
        with anyio.move_on_after(self.spec.timeout):
            broker = await link.broker()
            message = binding.to_message(broker.binding, event,
                                         structured=self.spec.format == "structured")
            try:
                await broker.publish(self.endpoint(event), message)
            except BrokerUnavailable as exc:
                link.lost(broker, exc)
                return failed("error", str(exc))
            except BrokerError as exc:
                return failed("error", str(exc))
            return Outcome("ok", started, time.monotonic() - t0)
        state = link.status
        why = f"broker {self.spec.broker} is {state.state}" + (
            f": {state.error}" if state.error else "")
        if state.state == "up":
            why = f"the broker did not confirm within {self.spec.timeout:g}s"
        return failed("timeout", why)

    def endpoint(self, event: Event) -> Endpoint:
        """Where this event goes: the sink's names, `{type}` templates filled in."""
        spec = self.spec
        attributes = {"type": event.type, "subject": event.subject, "source": event.source}
        return Endpoint(
            queue=spec.queue, exchange=spec.exchange, topic=spec.topic, stream=spec.stream,
            routing_key=render(spec.routing_key, attributes) if spec.routing_key else None,
            subject=render(spec.subject, attributes) if spec.subject else None,
        )

    async def aclose(self, grace: float = 0.0) -> None:
        """Nothing to close: the connection is the link's."""
