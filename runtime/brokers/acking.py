"""What the adapters share to acknowledge: a batch settled in as few broker calls as it can.

`Acks` (from base) is what each adapter's `consume` hands its `Window`: one
call for some of that consumer's messages, by their tokens (one XACK, one
Kafka commit, one NATS flush). An AMQP `basic.ack` with `multiple` settles
every unacknowledged delivery of its channel up to its tag, so it is safe
only up to the first tag handed out and not yet acknowledged: `DeliveryTags`
keeps that account. Pure bookkeeping, no client: table-tested on its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from runtime.brokers.base import Acks

__all__ = ["Acks", "DeliveryTags", "Settlement"]


@dataclass(frozen=True)
class Settlement:
    """How to acknowledge some delivery tags: one `multiple` ack up to `multiple` (None: no
    such ack), and a single ack for each of `singles`."""

    multiple: int | None
    singles: list[int]


class DeliveryTags:
    """One AMQP channel's delivery tags handed out in order, and which are acknowledged.

    A `multiple` ack at a tag also settles every earlier unacknowledged delivery
    of the channel, including any handed out and not yet acknowledged here: it
    may only go as far as the acknowledged prefix. Its tag must itself be
    unacknowledged at the broker, so it is one of the tags being settled now.
    """

    def __init__(self) -> None:
        self._handed: deque[int] = deque()
        self._acked: set[int] = set()

    def handed(self, tag: int) -> None:
        """`tag` was handed out (tags come in increasing order)."""
        self._handed.append(tag)

    def settle(self, tags: Iterable[int]) -> Settlement:
        """Acknowledge `tags` (handed out, none acknowledged before): how to tell the broker."""
        now = sorted(tags)
        self._acked.update(now)
        while self._handed and self._handed[0] in self._acked:
            self._acked.discard(self._handed.popleft())
        first_out = self._handed[0] if self._handed else None
        covered = [t for t in now if first_out is None or t < first_out]
        return Settlement(covered[-1] if covered else None, now[len(covered):])
