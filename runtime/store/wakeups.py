"""Wake-ups of this process's dispatchers: `notify` when work may have arrived.

An idle dispatcher waits for a wake-up (`wait_for_notify`), with the idle
poll as its timeout (runtime/store/polling.py). A dispatcher that found
nothing to claim is not yet waiting: between its claim (or `next_due`) and
its wait, a publish can commit and call `notify`. Dropped, such a wake-up
left the new work to the idle poll (300 s; issue 17 point 11), so one that
comes while no one waits is kept, and the next wait returns at once: at
worst one claim that finds nothing.
"""

from __future__ import annotations

import anyio


class WakeUps:
    """Per function: the event its waiting dispatcher waits on, or a kept wake-up."""

    def __init__(self) -> None:
        self._wakeups: dict[str, anyio.Event] = {}
        """Per function, the event its waiting dispatcher waits on (only while it waits)."""
        self._woken: set[str] = set()
        """Functions notified while no one waited: their next wait returns at once."""

    def notify(self, function: str) -> None:
        """Wake whoever waits for work of `function` in this process, or, if no one
        waits, make the next wait return at once."""
        event = self._wakeups.pop(function, None)
        if event is not None:
            event.set()
        else:
            self._woken.add(function)

    def waiting(self) -> tuple[str, ...]:
        """The functions whose dispatcher waits for a wake-up now."""
        return tuple(self._wakeups)

    def take_wakeup(self, function: str) -> bool:
        """Consume a wake-up of `function` that came while no one waited."""
        if function in self._woken:
            self._woken.discard(function)
            return True
        return False

    async def wait_for_notify(self, function: str, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait up to `timeout` for a `notify` of `function`; whether one came."""
        if self.take_wakeup(function):
            return True
        event = self._wakeups.setdefault(function, anyio.Event())
        try:
            with anyio.move_on_after(timeout):
                await event.wait()
        finally:
            # Gone once the wait ends, so that `notify` can tell whether anyone waits.
            if self._wakeups.get(function) is event:
                del self._wakeups[function]
        return event.is_set()
