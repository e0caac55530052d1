"""The fresh-delivery hand-off: deliveries a publish stores already claimed for a
dispatcher of this process, handed to it as soon as the write is visible.

A dispatcher whose last claim came back short is *caught up*: nothing older is
due. Attached as its function's `Consumer`, it then gets fresh deliveries
straight from the publish's own write (SQLite: before its fsync; the publish
itself still returns only once it is durable), and the claim, a second store
write between publish and handler start, is skipped. A handed delivery is a
claim like any other (running, attempt 1), so a crash recovers it the same way.

This module is the hand-off's one owner: which consumer is attached
(`Handoff`), whether it is caught up and how much room publishes in flight
hold in it (`Inlet`), and what one publish reserved and must hand over or free
(`Grant`). The adapter only stores up to `Grant.counts` deliveries claimed,
calls `Grant.hand_over` once its write is visible (or `Grant.cancel` if it
failed) and releases `Grant.refused`. SQLite does; Redis stores every delivery
pending (its consumer groups are the claim), so its inlets are never granted.

The invariant:

    A publish stores a delivery claimed for a consumer only within room that
    consumer granted while attached and caught up; once the write is visible
    each such delivery is either in that consumer's buffer or in
    `Grant.refused`, which the adapter makes pending again.

Hence no delivery is both handed over and claimed (it is stored running, which
a claim skips), and none is lost: a consumer that detached before the write
was visible refuses it (released), a slow one grants less room than asked (the
rest is stored pending, the consumer is no longer caught up so it claims next,
in order, and the function is woken), and a write that fails frees its room.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from runtime.events import Event
from runtime.store.delivery import Delivery, Targets

Stored = tuple[Sequence[bool], Sequence[tuple[int, str, int | str]]]
"""What a publish's write reports: per item whether its event was new, and the
deliveries it stored claimed (item index, function, delivery id)."""


class Consumer(Protocol):
    """A dispatcher of this process that takes fresh deliveries straight from publish."""

    def room(self) -> int:
        """How many more deliveries it can start soon (none once stopping)."""

    def accept(self, deliveries: Sequence[Delivery]) -> None:
        """Queue handed deliveries: claimed, so it runs them or releases them."""


def distinct(targets: Targets) -> Iterable[str]:
    """Each function once: an event has one delivery per target function."""
    return targets if len(targets) < 2 else dict.fromkeys(targets)


class Inlet:
    """The hand-off's state of one attached consumer."""

    __slots__ = ("attached", "caught_up", "consumer", "reserved")

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.caught_up = False
        """Set by the consumer after each claim: True when it came back short. Only
        then is fresh work handed over, so that older work is claimed first."""
        self.reserved = 0
        """Room held by publishes whose write is not visible yet."""
        self.attached = True

    def reserve(self, count: int) -> int:
        """Room for up to `count` fresh deliveries, held until `settle`."""
        if not self.caught_up:
            return 0
        granted = max(0, min(count, self.consumer.room() - self.reserved))
        if granted < count:
            self.caught_up = False  # the rest waits in the store: claim it, in order
        self.reserved += granted
        return granted

    def settle(self, deliveries: Sequence[Delivery], reserved: int) -> list[Delivery]:
        """Free `reserved` room and hand `deliveries` over; returns them if detached."""
        self.reserved -= reserved
        if not self.attached:
            return list(deliveries)
        if deliveries:
            self.consumer.accept(deliveries)
        return []


class Grant:
    """One publish's share of the hand-off, from before its write until it is visible."""

    __slots__ = ("_held", "_notify", "counts", "items", "refused")

    def __init__(
        self, items: Sequence[tuple[Event, Targets]], held: dict[str, tuple[Inlet, int]],
        notify: Callable[[str], None],
    ) -> None:
        self.items = items
        self._held = held
        self._notify = notify
        self.counts = {fn: n for fn, (_, n) in held.items() if n}
        """Per function, how many of its deliveries the write may store claimed."""
        self.refused: list[Delivery] = []
        """Deliveries stored claimed whose consumer detached: the adapter releases them."""

    def hand_over(self, stored: Stored) -> None:
        """The write is visible: give each consumer what was stored claimed for it,
        and wake each function that got deliveries it was not handed."""
        fresh, handed = stored
        items = self.items
        by_function: dict[str, list[Delivery]] = {fn: [] for fn in self._held}
        for index, function, delivery_id in handed:
            by_function[function].append(Delivery(str(delivery_id), function, items[index][0], 1))
        pending: dict[str, int] = {}
        for (_, targets), new in zip(items, fresh, strict=True):
            if new:
                for fn in distinct(targets):
                    pending[fn] = pending.get(fn, 0) + 1
        for fn, count in pending.items():
            got = by_function.get(fn)
            if got is None or len(got) < count:
                self._notify(fn)
        held, self._held = self._held, {}
        for function, (inlet, reserved) in held.items():
            self.refused += inlet.settle(by_function[function], reserved)

    def cancel(self) -> None:
        """The write failed: free the room held (none once handed over)."""
        held, self._held = self._held, {}
        for inlet, reserved in held.values():
            inlet.settle((), reserved)


class Handoff:
    """This process's consumers of fresh deliveries, one per function at most."""

    __slots__ = ("_inlets", "_notify")

    def __init__(self, notify: Callable[[str], None]) -> None:
        self._inlets: dict[str, Inlet] = {}
        self._notify = notify
        """Wakes a function whose fresh deliveries wait in the store."""

    def attach(self, function: str, consumer: Consumer) -> Inlet:
        """Offer `function`'s fresh deliveries to `consumer` (a newer one replaces it)."""
        inlet = self._inlets[function] = Inlet(consumer)
        return inlet

    def detach(self, function: str, inlet: Inlet) -> None:
        """Stop offering: publishes in flight get its deliveries back (`Grant.refused`)."""
        inlet.attached = False
        if self._inlets.get(function) is inlet:
            del self._inlets[function]

    def functions(self) -> Iterable[str]:
        """The functions with a consumer attached."""
        return self._inlets.keys()

    def grant(self, items: Sequence[tuple[Event, Targets]]) -> Grant:
        """For a publish of `items`: the room its consumers grant its deliveries."""
        inlets = self._inlets
        held: dict[str, tuple[Inlet, int]] = {}
        if inlets:
            wanted: dict[str, int] = {}
            for _, targets in items:
                for fn in distinct(targets):
                    if fn in inlets:
                        wanted[fn] = wanted.get(fn, 0) + 1
            held = {fn: (inlets[fn], inlets[fn].reserve(n)) for fn, n in wanted.items()}
        return Grant(items, held, self._notify)
