"""Prometheus metrics of one supervisor (prometheus-client, own registry).

The dispatcher and pools report through these methods; `GET /_/metrics`
renders `Metrics.render()`. Gauges that mirror state elsewhere (queue
depth, live workers) are read at scrape time through `set_sources`.
Per-attempt figures are plain counts turned into metric families only when
scraped (`_Attempts`): prometheus-client's Counter and Histogram take a lock
and walk the buckets in Python on every update, a visible share of a no-op
sync webhook at thousands of requests a second.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

DEPTH_SOURCE = Callable[[], Awaitable[Mapping[str, tuple[int, int, int]]]]
"""Async source of {function: (pending, running, dead)}."""


class Metrics:
    """The supervisor's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.attempts = _Attempts()
        self.registry.register(self.attempts)
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
        self._depth: DEPTH_SOURCE | None = None
        self._workers: Callable[[], Mapping[str, int]] | None = None
        self.brokers = _Brokers()
        self.registry.register(self.brokers)

    def set_sources(
        self, depth: DEPTH_SOURCE, workers: Callable[[], Mapping[str, int]]
    ) -> None:
        """Where the scrape-time gauges read from."""
        self._depth, self._workers = depth, workers

    def invocation(self, function: str, outcome: str, duration: float, attempt: int) -> None:
        """Record one finished attempt."""
        self.attempts.add(function, outcome, duration, attempt)

    def dead_letter(self, function: str) -> None:
        self.dead_letters.labels(function).inc()

    async def render(self) -> bytes:
        """The Prometheus text exposition, gauges refreshed first."""
        if self._depth is not None:
            depth = await self._depth()
            self.brokers.pending = {name: counts[0] + counts[1] for name, counts in depth.items()}
            for function, (pending, running, dead) in depth.items():
                for state, value in (("pending", pending), ("running", running), ("dead", dead)):
                    self.queue_depth.labels(function, state).set(value)
        if self._workers is not None:
            for function, count in self._workers().items():
                self.workers.labels(function).set(count)
        return generate_latest(self.registry)


class _Brokers:
    """Brokers, sources and sinks (SPEC 10) as read at scrape time from `view`
    (`BrokerHub.describe`): `fnrun_broker_up{broker}`, `fnrun_source_messages_total{source}`,
    `fnrun_source_lag{source}` where the broker tells it, `fnrun_sink_pending{sink}`."""

    def __init__(self) -> None:
        self.view: Callable[[], Mapping[str, Any]] | None = None
        self.pending: Mapping[str, int] = {}
        """Deliveries not yet done (pending or running) by subscriber, as of the last
        scrape's depth: for a sink, the events not yet exported."""

    def collect(self) -> Iterator[Metric]:
        if self.view is None:
            return
        state = self.view()
        up = GaugeMetricFamily("fnrun_broker_up", "1 while connected to the broker, else 0.",
                               labels=["broker"])
        for name, broker in state.get("brokers", {}).items():
            up.add_metric([name], 1.0 if broker.get("state") == "up" else 0.0)
        messages = CounterMetricFamily("fnrun_source_messages", "Messages a source stored and "
                                       "acknowledged.", labels=["source"])
        lag = GaugeMetricFamily("fnrun_source_lag", "Messages waiting at the broker for a "
                                "source, where the broker tells it.", labels=["source"])
        for name, source in state.get("sources", {}).items():
            messages.add_metric([name], float(source.get("messages") or 0))
            if source.get("lag") is not None:
                lag.add_metric([name], float(source["lag"]))
        pending = GaugeMetricFamily("fnrun_sink_pending", "Deliveries waiting to be exported "
                                    "by a sink.", labels=["sink"])
        for name in state.get("sinks", {}):
            pending.add_metric([name], float(self.pending.get(name, 0)))
        yield from (up, messages, lag, pending)


FOLD_EVERY = 1024
"""Most attempts kept unfolded between scrapes (bounds the memory they take)."""
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
"""Upper bounds (seconds) of the attempt duration histogram; +Inf follows."""


class _Attempts:
    """Finished attempts as plain counts; a prometheus-client collector at scrape time.

    Renders `fnrun_invocations_total{function,outcome}`,
    `fnrun_invocation_duration_seconds{function}` (a histogram) and
    `fnrun_redeliveries_total{function}`, as labelled Counter and Histogram
    objects would. Updated from the event loop only.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[str, str, float, int]] = []
        """Attempts not yet folded into the counts: appending is all `add` costs."""
        self._counts: dict[tuple[str, str], int] = {}
        self._durations: dict[str, list[float]] = {}
        """function -> a count per bucket (the last one past every bound), then the sum."""
        self._redeliveries: dict[str, int] = {}
        self._created: dict[object, float] = {}

    def add(self, function: str, outcome: str, duration: float, attempt: int) -> None:
        pending = self._pending
        pending.append((function, outcome, duration, attempt))
        if len(pending) >= FOLD_EVERY:
            self.fold()

    def fold(self) -> None:
        """Move the pending attempts into the counts (at each scrape, and every `FOLD_EVERY`)."""
        pending, self._pending = self._pending, []
        counts, durations, redeliveries = self._counts, self._durations, self._redeliveries
        for function, outcome, duration, attempt in pending:
            key = (function, outcome)
            if key not in counts:
                self._first(key, function)
            counts[key] += 1
            histogram = durations[function]
            histogram[bisect_left(BUCKETS, duration)] += 1
            histogram[-1] += duration
            if attempt > 1:
                redeliveries[function] += 1

    def _first(self, key: tuple[str, str], function: str) -> None:
        now = time.time()
        self._counts[key] = 0
        self._created[key] = now
        if function not in self._durations:
            self._durations[function] = [0.0] * (len(BUCKETS) + 2)
            self._redeliveries[function] = 0
            self._created[function] = now

    def collect(self) -> Iterator[Metric]:
        """The three metric families (prometheus-client's collector interface)."""
        self.fold()
        counts = CounterMetricFamily("fnrun_invocations", "Finished attempts by function and "
                                     "outcome.", labels=["function", "outcome"])
        for key, count in self._counts.items():
            counts.add_metric(key, float(count), created=self._created[key])
        durations = HistogramMetricFamily("fnrun_invocation_duration_seconds",
                                          "Attempt duration by function.", labels=["function"])
        redeliveries = CounterMetricFamily("fnrun_redeliveries", "Attempts after the first, "
                                           "by function.", labels=["function"])
        for function, histogram in self._durations.items():
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, observed in zip((*map(_bound, BUCKETS), "+Inf"), histogram, strict=False):
                cumulative += observed
                buckets.append((bound, cumulative))
            durations.add_metric([function], buckets, histogram[-1])
            redeliveries.add_metric([function], float(self._redeliveries[function]),
                                    created=self._created[function])
        yield counts
        yield durations
        yield redeliveries


def _bound(value: float) -> str:
    """A bucket bound as prometheus-client writes it (`le="1.0"`)."""
    return repr(float(value))
