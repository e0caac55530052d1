"""Traces across events: W3C trace context on every event (`context`), the tree of
what an event caused (`tree`), and the optional OpenTelemetry export (`otel`)."""
