"""The `otel` export (SPEC 11): each attempt a span in its event's trace, received by a
real OTLP/HTTP receiver run here; and nothing of OpenTelemetry loaded without the
variable."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from runtime.tracing.context import attempt_span
from tests.e2e.harness import Project, wait_until

pytestmark = pytest.mark.timeout(90)

TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"

YAML = """
functions:
  a:
    handler: chain.py:a
    triggers:
      - webhook: {path: /start}
    retry: {max_attempts: 3, backoff: 50ms}
  b:
    handler: chain.py:b
    triggers:
      - event: chain.b
"""

CODE = """
def a(event, ctx):
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    ctx.emit("chain.b", {"from": "a"})

def b(event, ctx):
    record(event, ctx)
"""


class _Receiver(BaseHTTPRequestHandler):
    spans: list[Any]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        ok = self.path == "/v1/traces"
        if ok:
            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self.spans.extend(scope.spans)
        self.send_response(200 if ok else 404)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[Any]]]:
    spans: list[Any] = []
    handler = type("Receiver", (_Receiver,), {"spans": spans})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", spans
    finally:
        server.shutdown()
        server.server_close()


def test_each_attempt_is_a_span_in_its_events_trace(
    project: Project, receiver: tuple[str, list[Any]]
) -> None:
    endpoint, spans = receiver
    project.add("chain", YAML, CODE)
    project.start(env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"})
    answer = httpx.post(project.url("/start"), json={},
                        headers={"traceparent": f"00-{TRACE}-{CALLER_SPAN}-01"})
    assert answer.status_code == 202
    root = answer.json()["id"]
    wait_until(lambda: len(spans) >= 3)
    attrs = [{kv.key: _value(kv.value) for kv in span.attributes} for span in spans]
    got = sorted(((a["faas.name"], a["fnrun.attempt"]), s) for a, s in zip(attrs, spans,
                                                                          strict=True))
    assert [key for key, _ in got] == [("a", 1), ("a", 2), ("b", 1)]
    (_, first), (_, second), (_, child) = got
    assert {s.trace_id.hex() for s in (first, second, child)} == {TRACE}
    # The retries hang under the webhook caller's span, the emitted event's run under
    # the attempt that emitted it.
    assert first.parent_span_id.hex() == second.parent_span_id.hex() == CALLER_SPAN
    assert second.span_id.hex() == attempt_span(root, "a", 2)
    assert child.parent_span_id.hex() == second.span_id.hex()
    assert first.status.code == 2 and "first attempt fails" in first.status.message
    a2 = next(a for a in attrs if a["faas.name"] == "a" and a["fnrun.attempt"] == 2)
    assert a2["messaging.system"] == "fnrun"
    assert a2["messaging.operation.name"] == "process"
    assert a2["messaging.destination.name"] == "fnrun.webhook"
    assert a2["messaging.message.id"] == root
    assert a2["faas.invocation_id"]


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value"))


def test_without_the_variable_nothing_of_opentelemetry_is_imported() -> None:
    code = (
        "import sys, runtime.cli.main, runtime.cli.commands, runtime.supervisor, "
        "runtime.tracing.otel as o;"
        "assert o.install({}) is None;"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"
