"""Each attempt as an OpenTelemetry span, when asked for (SPEC 11, issue 19 point 5).

With the `otel` extra installed (`pip install 'fnrun[otel]'`) and
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set,
`install` hooks `runtime.tracing.spans` to the `fnrun.runs` record the settling
code logs after each outcome commit: every attempt becomes a span in its
event's trace, exported over OTLP/HTTP by a batch span processor (its own
thread; the event loop only queues). Without the variable nothing of
OpenTelemetry is imported and a run costs nothing more; with the variable but
without the extra, one warning says what to install.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Protocol

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

log = logging.getLogger("fnrun.otel")


class Export(Protocol):
    """The installed export; `close` flushes the spans still queued."""

    def close(self) -> None: ...


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether an OTLP endpoint is configured (the OpenTelemetry variables)."""
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in ENDPOINT_VARIABLES)


def install(environ: Mapping[str, str] | None = None) -> Export | None:
    """Start exporting each finished attempt as a span, if `wanted`; None otherwise."""
    if not wanted(environ):
        return None
    try:
        from runtime.tracing import spans
    except ImportError as exc:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed "
                    "(%s): pip install 'fnrun[otel]' to export spans", exc.name)
        return None
    return spans.install()
