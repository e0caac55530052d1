"""Prometheus metrics of one supervisor (prometheus-client, own registry).

The dispatcher and pools report through these methods; `GET /_/metrics`
renders `Metrics.render()`. Gauges that mirror state elsewhere (queue
depth, live workers) are read at scrape time through `set_sources`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

DEPTH_SOURCE = Callable[[], Awaitable[Mapping[str, tuple[int, int, int]]]]
"""Async source of {function: (pending, running, dead)}."""


class Metrics:
    """The supervisor's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.invocations = Counter(
            "fnrun_invocations", "Finished attempts by function and outcome.",
            ["function", "outcome"], registry=self.registry,
        )
        self.duration = Histogram(
            "fnrun_invocation_duration_seconds", "Attempt duration by function.",
            ["function"], registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.redeliveries = Counter(
            "fnrun_redeliveries", "Attempts after the first, by function.",
            ["function"], registry=self.registry,
        )
        self.dead_letters = Counter(
            "fnrun_dead_letters", "Deliveries moved to the dead-letter store.",
            ["function"], registry=self.registry,
        )
        self.queue_depth = Gauge(
            "fnrun_queue_depth", "Deliveries by function and state.",
            ["function", "state"], registry=self.registry,
        )
        self.workers = Gauge(
            "fnrun_workers", "Live worker processes by function.",
            ["function"], registry=self.registry,
        )
        self._children: dict[tuple[str, str], tuple[Counter, Histogram, Counter]] = {}
        self._depth: DEPTH_SOURCE | None = None
        self._workers: Callable[[], Mapping[str, int]] | None = None

    def set_sources(
        self, depth: DEPTH_SOURCE, workers: Callable[[], Mapping[str, int]]
    ) -> None:
        """Where the scrape-time gauges read from."""
        self._depth, self._workers = depth, workers

    def invocation(self, function: str, outcome: str, duration: float, attempt: int) -> None:
        """Record one finished attempt."""
        # `labels()` validates and hashes its arguments on every call: at
        # thousands of attempts a second, keep the children it returns.
        children = self._children.get((function, outcome))
        if children is None:
            children = self._children[(function, outcome)] = (
                self.invocations.labels(function, outcome),
                self.duration.labels(function),
                self.redeliveries.labels(function),
            )
        count, duration_of, redeliveries = children
        count.inc()
        duration_of.observe(duration)
        if attempt > 1:
            redeliveries.inc()

    def dead_letter(self, function: str) -> None:
        self.dead_letters.labels(function).inc()

    async def render(self) -> bytes:
        """The Prometheus text exposition, gauges refreshed first."""
        if self._depth is not None:
            for function, (pending, running, dead) in (await self._depth()).items():
                for state, value in (("pending", pending), ("running", running), ("dead", dead)):
                    self.queue_depth.labels(function, state).set(value)
        if self._workers is not None:
            for function, count in self._workers().items():
                self.workers.labels(function).set(count)
        return generate_latest(self.registry)
