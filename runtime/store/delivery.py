"""A delivery, as the store hands it out: one function's claim on one event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from runtime.events import Event

Targets = Sequence[str]
"""Names of the functions that get a delivery of one event."""


@dataclass(frozen=True)
class Delivery:
    """One function's claim on one event, as handed out by `claim`."""

    id: str
    function: str
    event: Event
    attempt: int
    """The attempt this claim is, 1-based (already counted)."""
