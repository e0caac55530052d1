"""Events, CloudEvents 1.0 shaped, and what an invocation produced.

Leaf module: standard library only. The same envelope (`Event.to_dict`) is
stored by every store and sent to workers, so it must stay JSON-safe:
`bytes` data travels as `data_base64`, times as RFC 3339 strings.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

JSON = Any


def new_event_id() -> str:
    """A fresh, globally unique event id."""
    return str(uuid.uuid4())


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


Status = Literal["ok", "error", "timeout", "crash"]


@dataclass(frozen=True)
class Outcome:
    """What one attempt produced, as the pool reports it to the dispatcher.

    `result` is the handler's return value encoded by the worker protocol
    (see `runtime.protocol.encode_result`); `emits` are the events the
    handler passed to `ctx.emit`, to be committed only if `status == "ok"`.
    """

    status: Status
    started: float
    duration: float
    result: JSON = None
    emits: tuple[Event, ...] = ()
    error: str | None = None
    traceback: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"
