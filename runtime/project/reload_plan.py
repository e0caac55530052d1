"""What one hot reload asks of the supervisor, and what it reads of it.

The reloader (`runtime.project.reloader`) decides and the supervisor applies:
the reloader plans from a `Serving` snapshot and hands a frozen `ReloadPlan`
to `Target.apply`, the only way a reload changes what runs. The supervisor
is the one writer of what runs, its settings and the errors shown. Here,
not in the reloader, so that the supervisor imports no file watcher.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from runtime.pool.warmup import LoadFailure
from runtime.pool.workerpool import WorkerPool
from runtime.project.registry import Diff
from runtime.specs import FunctionSpec, Project, Settings

__all__ = ["ReloadPlan", "Serving", "Target"]


@dataclass(frozen=True)
class ReloadPlan:
    """What one reload asks of the supervisor, applied whole by `Target.apply`.

    The reloader decides; the supervisor owns what runs and changes it only
    here. A skipped reload (`project` None) changes nothing but the errors shown.
    """

    errors: tuple[str, ...]
    """Declaration errors to show in /_/health (FILE:LINE:COL lines); () for none."""
    settings: Settings | None = None
    """The settings to run under from now on; None when the reload was skipped."""
    project: Project | None = None
    """Every function to bind (events for it are stored), served or not."""
    serve: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Function -> fingerprint of the version to serve: the running one is left alone,
    another is started (added or changed), a function absent here is stopped (removed,
    or its code does not load) and its deliveries wait in the store (SPEC 5.5)."""
    pools: Mapping[str, WorkerPool] = dataclasses.field(default_factory=dict)
    """Pools already warmed for new versions (`new_pool` + `check`)."""
    failures: Mapping[str, LoadFailure] = dataclasses.field(default_factory=dict)
    """Functions of `project` whose newest code does not load."""


@dataclass(frozen=True)
class Serving:
    """What the supervisor runs as a reload starts: all the reloader reads of it."""

    project: Project | None
    """Every function bound now (None before the first start)."""
    fingerprints: Mapping[str, str]
    """Function -> fingerprint of the version serving now."""
    failures: Mapping[str, LoadFailure]
    """Functions of `project` whose newest code does not load."""
    broken: bool
    """Some of the project does not run as it is on disk (/_/health's reload_error)."""


class Target(Protocol):
    """What the reloader needs from the supervisor: a snapshot to plan from, and `apply`.

    The supervisor is the one writer of what runs, its settings and the
    errors shown; the reloader keeps its own settings (those of its last
    applied plan) and never reads the supervisor's.
    """

    @property
    def draining(self) -> bool: ...

    def serving(self) -> Serving: ...

    def new_pool(self, spec: FunctionSpec) -> WorkerPool: ...

    async def apply(self, plan: ReloadPlan) -> Diff:
        """Show `plan.errors` and, unless it was skipped, switch to `plan.project`."""
        ...
