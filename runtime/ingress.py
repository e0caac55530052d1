"""What triggers see of the runtime: the `Ingress` they publish through, and
the `Trigger` shape each trigger module implements.

Each module named in `runtime.plugins.TRIGGERS` provides:

- `parse(reader, node) -> TriggerSpec`: validate one trigger declaration (the
  value under its kind key, e.g. the cron string or mapping under
  `schedule:`), raising `ManifestError` at the offending node;
- `Trigger(ingress)`: the live binding, with `bind(project)` (called at start
  and after every reload: swap tables, start/stop nothing blocking) and
  `async run()` (long-running work such as the schedule loop; returns at once
  when there is none). A trigger that routes events by type is also a
  `Router`; one that serves HTTP is also an `HttpTrigger`, whose `asgi` app
  is mounted behind fnrun's `/_/` routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from runtime.clock import Clock
from runtime.events import Event, Outcome
from runtime.specs import Project
from runtime.store.base import Store


class Ingress(Protocol):
    """The runtime's door for triggers."""

    store: Store
    clock: Clock

    @property
    def accepting(self) -> bool:
        """False while starting or draining: webhooks answer 503."""
        ...

    def targets(self, event_type: str) -> list[str]:
        """The functions whose event patterns match `event_type` right now."""
        ...

    async def publish(self, events: Sequence[Event]) -> list[bool]:
        """Fan out and store durably (idempotent by id); True per new event."""
        ...

    async def invoke(self, function: str, event: Event) -> Outcome:
        """Run `function` once, now, in its pool (sync webhooks); no retry."""
        ...


class Trigger(Protocol):
    """A live trigger binding; see the module docstring."""

    def bind(self, project: Project) -> None: ...

    async def run(self) -> None: ...


@runtime_checkable
class Router(Protocol):
    """A trigger that knows which functions an event type goes to (the event trigger)."""

    def targets(self, event_type: str) -> list[str]: ...


@runtime_checkable
class HttpTrigger(Protocol):
    """A trigger that serves HTTP (webhooks): an ASGI app behind fnrun's `/_/` routes."""

    async def asgi(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI app (starlette's types; not imported here, triggers' peers stay HTTP-free)."""
        ...
