"""A sink's executor: runs its deliveries by publishing each event to its broker.

A sink is a subscriber like a function (SPEC 10): the dispatcher claims its
deliveries, retries failures with the sink's retry policy and dead-letters
them, and records every attempt in the history. Only the executor differs:
instead of a worker pool, `SinkPublisher.invoke_many` publishes a batch of
events as CloudEvents (binary mode, or structured with `format: structured`)
keeping their ids, all at once (`Broker.publish_many`: the confirmations are
awaited together), and each attempt succeeds only on its own message's
confirmation. A broker that is down fails the attempt after waiting up to
the sink's `timeout` for it to come back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import anyio

from runtime.brokers import binding
from runtime.brokers.base import BrokerError, BrokerUnavailable, Endpoint
from runtime.brokers.declarations import render
from runtime.brokers.links import Link
from runtime.brokers.specs import SinkSpec
from runtime.clock import Clock
from runtime.events import Event, Outcome, Status


class SinkPublisher:
    """The executor of one sink's deliveries (what a worker pool is to a function)."""

    pipelined = True
    """A batch's publishes wait on the broker together, not one after another: the
    dispatcher gives it full batches rather than a few milliseconds' worth."""

    def __init__(self, spec: SinkSpec, link: Callable[[], Link | None], clock: Clock) -> None:
        """Args:
            link: the sink's broker link now (None while its broker is not declared).
        """
        self.spec = spec
        self._link = link
        self.clock = clock
        self.live_workers = 0
        self._endpoint = None if _templated(spec) else self._render({})
        """The endpoint of every event, when the sink's names have no `{...}` templates."""

    async def invoke_many(self, items: Sequence[tuple[Event, int]]) -> list[Outcome]:
        """Publish the events in one `publish_many`; one outcome per item, in order: ok
        once the broker confirmed that event, else its error, or a timeout."""
        batch = _Batch(self.clock.now(), time.monotonic(), len(items))
        link = self._link()
        if link is None:
            return batch.fail_rest("error", f"broker {self.spec.broker!r} is not declared")
        with anyio.move_on_after(self.spec.timeout):
            broker = await link.broker()
            structured = self.spec.format == "structured"
            messages = [(self.endpoint(event), binding.to_message(broker.binding, event,
                                                                  structured=structured))
                        for event, _ in items]

            def settle(index: int, error: BrokerError | None) -> None:
                if isinstance(error, BrokerUnavailable):
                    link.lost(broker, error)
                batch.settle(index, error)

            try:
                await broker.publish_many(messages, settle)
            except BrokerUnavailable as exc:
                link.lost(broker, exc)
                return batch.fail_rest("error", str(exc))
            except BrokerError as exc:
                return batch.fail_rest("error", str(exc))
            return batch.fail_rest("error", "the broker did not settle the message")
        state = link.status
        why = f"broker {self.spec.broker} is {state.state}" + (
            f": {state.error}" if state.error else "")
        if state.state == "up":
            why = f"the broker did not confirm within {self.spec.timeout:g}s"
        return batch.fail_rest("timeout", why)

    async def publish(self, event: Event) -> Outcome:
        """One attempt: ok once the broker confirmed, else an error or a timeout."""
        return (await self.invoke_many([(event, 1)]))[0]

    def endpoint(self, event: Event) -> Endpoint:
        """Where this event goes: the sink's names, `{type}` templates filled in."""
        if self._endpoint is not None:
            return self._endpoint
        return self._render({"type": event.type, "subject": event.subject,
                             "source": event.source})

    def _render(self, attributes: Mapping[str, str | None]) -> Endpoint:
        spec = self.spec
        return Endpoint(
            queue=spec.queue, exchange=spec.exchange, topic=spec.topic, stream=spec.stream,
            routing_key=render(spec.routing_key, attributes) if spec.routing_key else None,
            subject=render(spec.subject, attributes) if spec.subject else None,
        )

    async def aclose(self, grace: float = 0.0) -> None:
        """Nothing to close: the connection is the link's."""


def _templated(spec: SinkSpec) -> bool:
    return any("{" in (name or "") for name in (spec.routing_key, spec.subject))


class _Batch:
    """The outcomes of one `invoke_many`, filled in as the broker settles each message."""

    def __init__(self, started: float, t0: float, size: int) -> None:
        self.started, self.t0 = started, t0
        self.outcomes: list[Outcome | None] = [None] * size

    def settle(self, index: int, error: BrokerError | None) -> None:
        """The broker confirmed message `index` (no error) or failed it; the first word stands."""
        if self.outcomes[index] is None:
            elapsed = time.monotonic() - self.t0
            self.outcomes[index] = (
                Outcome("ok", self.started, elapsed) if error is None
                else Outcome("error", self.started, elapsed, error=str(error)))

    def fail_rest(self, status: Status, error: str) -> list[Outcome]:
        """Every outcome, those not settled yet failed with `status` and `error`."""
        elapsed = time.monotonic() - self.t0
        return [o if o is not None else Outcome(status, self.started, elapsed, error=error)
                for o in self.outcomes]
