"""Which Kafka offsets may be committed: only those acknowledged with all before them.

Kafka keeps one committed offset per partition, "everything before this is
done". Messages are acknowledged out of order (a slow handler, a retry), so
a partition's commit point is the first offset handed out and not yet
acknowledged. Pure bookkeeping, no client: table-tested on its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable


class Offsets:
    """Per partition: offsets handed out in order, which of them are acknowledged, and
    the commit point (one past the longest acknowledged prefix) not yet committed."""

    def __init__(self) -> None:
        self._pending: dict[Hashable, deque[int]] = {}
        self._acked: dict[Hashable, set[int]] = {}
        self._due: dict[Hashable, int] = {}

    def handed(self, partition: Hashable, offset: int) -> None:
        """`offset` of `partition` was handed out (offsets come in increasing order)."""
        self._pending.setdefault(partition, deque()).append(offset)
        self._acked.setdefault(partition, set())

    def ack(self, partition: Hashable, offset: int) -> None:
        """`offset` was acknowledged; moves the commit point if it was the oldest pending."""
        pending = self._pending.get(partition)
        if pending is None or offset < pending[0] or offset > pending[-1]:
            return  # a partition since revoked, or an offset not handed out by this consumer
        acked = self._acked[partition]
        acked.add(offset)
        while pending and pending[0] in acked:
            done = pending.popleft()
            acked.discard(done)
            self._due[partition] = done + 1

    def due(self) -> dict[Hashable, int]:
        """The commit points that moved since the last call (taken: the caller commits them)."""
        due, self._due = self._due, {}
        return due

    def redue(self, points: dict[Hashable, int]) -> None:
        """Put back commit points whose commit failed, unless a later one is due already."""
        for partition, offset in points.items():
            if partition in self._pending and self._due.get(partition, -1) < offset:
                self._due[partition] = offset

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """Drop revoked partitions: their unacknowledged offsets go to their next owner."""
        for partition in partitions:
            self._pending.pop(partition, None)
            self._acked.pop(partition, None)
            self._due.pop(partition, None)

    def unacked(self) -> int:
        """How many handed-out offsets wait for their acknowledgement."""
        return sum(len(p) for p in self._pending.values())
