"""Events as the stores keep them: one JSON envelope in, and handed out as that
envelope until a field is read.

A drained delivery usually only travels: its id goes into history, its
envelope to a worker. Building an `Event` from the envelope on claim and
turning it back into one for the worker was a tenth of the supervisor's time
per delivery, so a claimed event keeps the envelope and parses it only when
someone reads a field other than its id and type.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from runtime.events import Event

_FIELDS = tuple(f.name for f in dataclasses.fields(Event))
_ENCODER = json.JSONEncoder(separators=(",", ":"))
"""Built once: `json.dumps` with options builds an encoder per call (half its cost)."""


def envelope_json(event: Event) -> str:
    """The event's envelope (`Event.to_dict`) as compact JSON, as every store keeps it."""
    return _ENCODER.encode(event.to_dict())


class _Parsed:
    """A field of a `StoredEvent`: parses the envelope on first read.

    A non-data descriptor, so once the fields are in the instance's
    `__dict__` reads go straight there.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, event: StoredEvent | None, owner: type | None = None) -> Any:
        if event is None:
            return getattr(Event, self.name, None)
        parsed = Event.from_dict(event.__dict__["_envelope"])
        for field in _FIELDS:
            event.__dict__.setdefault(field, getattr(parsed, field))
        return event.__dict__[self.name]


class StoredEvent(Event):
    """An `Event` parsed lazily from the envelope `Event.to_dict` stored."""

    @classmethod
    def of(cls, envelope: dict[str, Any]) -> Event:
        """The event of a stored envelope; only its id is read now."""
        event = object.__new__(cls)
        # Frozen dataclass: set in its __dict__ (object.__setattr__ costs a slot
        # wrapper call each). Its type too, which every run record keeps (SPEC 11):
        # reading it must not parse.
        fields = event.__dict__
        fields["id"], fields["type"], fields["_envelope"] = (
            envelope["id"], envelope["type"], envelope)
        return event

    def __eq__(self, other: object) -> bool:
        # The dataclass __eq__ wants the very same class: equal to a plain
        # Event with the same fields, as the event it stands for is.
        if not isinstance(other, Event):
            return NotImplemented
        return all(getattr(self, field) == getattr(other, field) for field in _FIELDS)

    __hash__ = Event.__hash__

    def to_dict(self) -> dict[str, Any]:
        envelope = self.__dict__.get("_envelope")
        return super().to_dict() if envelope is None else dict(envelope)


for _name in _FIELDS:
    if _name not in ("id", "type"):
        setattr(StoredEvent, _name, _Parsed(_name))
