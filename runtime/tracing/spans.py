"""Finished attempts -> OpenTelemetry spans (imported only by `otel.install`).

A span per attempt, in the trace of the event's `traceparent`: its parent is
the span that event names (the producer's, or the attempt that emitted it),
its own id `context.attempt_span(...)`, the very id that attempt's emitted
events name as their parent, so the spans of a chain nest. Attributes follow
the OpenTelemetry messaging semantic conventions
(https://opentelemetry.io/docs/specs/semconv/messaging/messaging-spans/): a
`process` span of a CONSUMER, the destination being the event type.
"""

from __future__ import annotations

import logging
import os

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from runtime import __version__
from runtime.cli.logs import RUNS
from runtime.events import Event
from runtime.store.runs import RunRecord
from runtime.tracing.context import TRACEPARENT, attempt_span, new_trace, parse

SCOPE = InstrumentationScope("fnrun", __version__)


def span_of(run: RunRecord, event: Event, resource: Resource) -> ReadableSpan:
    """The span of one finished attempt."""
    caller = parse(event.extensions.get(TRACEPARENT)) or new_trace()
    flags = TraceFlags(int(caller.flags, 16) & TraceFlags.SAMPLED)
    trace_id = int(caller.trace_id, 16)
    own = SpanContext(trace_id, int(attempt_span(run.event_id, run.function, run.attempt), 16),
                      is_remote=False, trace_flags=flags)
    parent = SpanContext(trace_id, int(caller.span_id, 16), is_remote=True, trace_flags=flags)
    start = int(run.started * 1e9)
    status = Status(StatusCode.UNSET) if run.status == "ok" else Status(
        StatusCode.ERROR, (run.error or run.status).partition("\n")[0])
    return ReadableSpan(
        name=f"process {run.event_type}", context=own, parent=parent, resource=resource,
        kind=SpanKind.CONSUMER, status=status, start_time=start,
        end_time=start + int(run.duration * 1e9), instrumentation_scope=SCOPE,
        attributes={
            "messaging.system": "fnrun",
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": run.event_type,
            "messaging.message.id": run.event_id,
            "faas.name": run.function,
            "faas.invocation_id": run.invocation,
            "fnrun.attempt": run.attempt,
            "fnrun.outcome": run.status,
        },
    )


class SpanExport(logging.Handler):
    """A handler on `fnrun.runs` that queues each finished attempt's span for export."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "fnrun"}
        self.resource = Resource.create(attributes)
        self.processor = BatchSpanProcessor(OTLPSpanExporter())

    def emit(self, record: logging.LogRecord) -> None:
        run, event = getattr(record, "run", None), getattr(record, "event", None)
        if isinstance(run, RunRecord) and isinstance(event, Event):
            self.processor.on_end(span_of(run, event, self.resource))

    def close(self) -> None:
        """Flush what is queued (a stop must not lose the last spans), then stop."""
        logging.getLogger(RUNS).removeHandler(self)
        self.processor.shutdown()  # type: ignore[no-untyped-call]
        super().close()


def install() -> SpanExport:
    """Export every finished attempt from now on; `close()` the result at stop."""
    export = SpanExport()
    runs = logging.getLogger(RUNS)
    runs.addHandler(export)
    runs.setLevel(logging.INFO)
    return export
