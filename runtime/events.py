"""Events, CloudEvents 1.0 shaped, and what an invocation produced.

Leaf module: standard library only. The same envelope (`Event.to_dict`) is
stored by every store and sent to workers, so it must stay JSON-safe:
`bytes` data travels as `data_base64`, times as RFC 3339 strings.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

JSON = Any


class _EventIds:
    """Version 7 UUID strings (RFC 9562 section 5.7), 256 from each getrandom call.

    Time-ordered: the first 48 bits are the Unix time in milliseconds, the
    other 74 are random. The SQLite store keeps events in a B-tree keyed by
    id: random (version 4) ids each land on a random page, while ids that
    grow with time are inserted near one end, so a commit touches and logs
    fewer pages. Under the async webhook benchmark this took the
    supervisor's CPU per request down by about a sixth (bench/README.md).
    No syscall and no `uuid.UUID` object per id either.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forget()
        # A forked child must not hand out the random bits its parent holds.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool = b""
        self._next = 0

    def __call__(self) -> str:
        with self._lock:
            at = self._next
            if at >= len(self._pool):
                self._pool, at = os.urandom(10 * 256), 0
            self._next = at + 10
            r = self._pool[at : at + 10].hex()
        t = f"{time.time_ns() // 1_000_000:012x}"
        # Version nibble 7; variant bits 10.
        return f"{t[:8]}-{t[8:]}-7{r[:3]}-{_VARIANT[r[3]]}{r[4:7]}-{r[7:19]}"


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
new_event_id = _EventIds()
"""A fresh, globally unique, time-ordered event id."""


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class HttpInfo:
    """The HTTP request behind a webhook event (`event.http`)."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": dict(self.query),
            "headers": dict(self.headers),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> HttpInfo:
        return cls(
            method=raw["method"],
            path=raw["path"],
            query=_frozen(raw.get("query")),
            headers=_frozen(raw.get("headers")),
        )


@dataclass(frozen=True)
class Event:
    """One event: what happened (`type`), where (`source`), when, and its data."""

    type: str
    data: JSON | bytes = None
    id: str = field(default_factory=new_event_id)
    source: str = "fnrun"
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    subject: str | None = None
    extensions: Mapping[str, Any] = field(default_factory=dict)
    http: HttpInfo | None = None

    def to_dict(self) -> dict[str, Any]:
        """The storable, JSON-safe envelope."""
        out: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "time": self.time.isoformat(),
        }
        if self.subject is not None:
            out["subject"] = self.subject
        if isinstance(self.data, bytes | bytearray):
            out["data_base64"] = base64.b64encode(self.data).decode("ascii")
        else:
            out["data"] = self.data
        if self.extensions:
            out["extensions"] = dict(self.extensions)
        if self.http is not None:
            out["http"] = self.http.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Event:
        """Inverse of `to_dict`."""
        if "data_base64" in raw:
            data: Any = base64.b64decode(raw["data_base64"])
        else:
            data = raw.get("data")
        http = raw.get("http")
        return cls(
            id=raw["id"],
            type=raw["type"],
            source=raw.get("source", "fnrun"),
            time=datetime.fromisoformat(raw["time"]),
            subject=raw.get("subject"),
            data=data,
            extensions=_frozen(raw.get("extensions")),
            http=HttpInfo.from_dict(http) if http else None,
        )


Status = Literal["ok", "error", "timeout", "crash", "superseded"]
"""`superseded`: a debounced delivery that a later event of its key replaced (SPEC 12)."""


@dataclass(frozen=True)
class LogLine:
    """One line a run wrote: `ctx.log` (with its level) or the handler's stdout or stderr."""

    at: float
    """When it was written, epoch seconds."""
    stream: str
    """"log" (`ctx.log`), "stdout" or "stderr"."""
    level: str
    """The `ctx.log` level in lower case ("info", "warning", ...); "" for stdout and stderr."""
    text: str


@dataclass(frozen=True)
class Outcome:
    """What one attempt produced, as the pool reports it to the dispatcher.

    `result` is the handler's return value encoded by the worker protocol
    (see `runtime.results.encode_result`); `emits` are the events the
    handler passed to `ctx.emit`, to be committed only if `status == "ok"`.
    `invocation` is the id the pool gave the attempt (the one its log lines
    are tagged with); `logs` the lines it wrote, bounded by the worker.
    """

    status: Status
    started: float
    duration: float
    result: JSON = None
    emits: tuple[Event, ...] = ()
    error: str | None = None
    traceback: str | None = None
    invocation: str = ""
    logs: tuple[LogLine, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"
