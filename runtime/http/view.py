"""What the HTTP API, the dashboard and the banner read of a running node.

`LiveView` implements `runtime.http.app.RuntimeView` (and the dashboard's and
the banner's parts of it): `/_/health`'s detail, `/_/functions`,
`/_/brokers` and the reload error, derived on each request from what the
supervisor runs. It owns no state: the supervisor writes what runs
(`Node`), the ingress whether events are taken, the store every count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from runtime.brokers.hub import BrokerHub
from runtime.clock import Clock
from runtime.http.catalog import describe_functions
from runtime.ingress import Ingress
from runtime.metrics import Metrics
from runtime.pool.warmup import LoadFailure
from runtime.specs import HttpSettings, Project, Settings

if TYPE_CHECKING:
    from runtime.http.server import Listening


class Node(Protocol):
    """What the view reads of the supervisor, which alone changes it (start, reload, stop)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def project(self) -> Project | None:
        """Every function declared and bound (events for it are stored), served or not."""
        ...

    @property
    def declaration_errors(self) -> tuple[str, ...]:
        """FILE:LINE:COL lines of the files left out (or kept at their last good version)."""
        ...

    @property
    def load_failures(self) -> Mapping[str, LoadFailure]:
        """Functions of `project` whose newest code does not load."""
        ...

    @property
    def http_server(self) -> Listening | None: ...

    @property
    def draining(self) -> bool: ...

    def live_workers(self) -> Mapping[str, int]:
        """Worker processes alive now, for every function running (0 when it has none)."""
        ...

    def claim_error(self) -> str | None:
        """Why a dispatcher's claims fail now, if one's do."""
        ...


class LiveView:
    """A running node as `/_/` shows it; see the module docstring."""

    def __init__(
        self, node: Node, ingress: Ingress, metrics: Metrics, brokers: BrokerHub, clock: Clock
    ) -> None:
        self.node = node
        self.ingress = ingress
        self.metrics = metrics
        self.brokers = brokers
        self.clock = clock

    @property
    def settings(self) -> Settings:
        return self.node.settings

    @property
    def declaration_errors(self) -> tuple[str, ...]:
        return self.node.declaration_errors

    @property
    def draining(self) -> bool:
        return self.node.draining

    @property
    def served(self) -> HttpSettings:
        """The HTTP settings with the port listened on: `--port 0` asks for any free one."""
        http, listening = self.node.settings.http, self.node.http_server
        return http if listening is None else replace(http, port=listening.port)

    async def functions_json(self) -> list[dict[str, Any]]:
        project = self.node.project
        if project is None:
            return []
        counts = await self.ingress.store.counts()
        listing = describe_functions(
            project, counts, self.clock.now(), self.node.live_workers(), self.served
        )
        failures = self.node.load_failures
        for function in listing:
            failure = failures.get(function["name"])
            function["load_error"] = failure.line if failure else None
        return listing

    async def brokers_json(self) -> dict[str, Any]:
        """`GET /_/brokers`: brokers, sources and sinks with their state (SPEC 10), and
        each sink's deliveries not yet exported."""
        out = self.brokers.describe()
        if out["sinks"]:
            counts = await self.ingress.store.counts()
            for name, sink in out["sinks"].items():
                found = counts.get(name)  # not yet exported: waiting or being published
                sink["pending"] = found.pending + found.running if found else 0
        return out

    @property
    def reload_error(self) -> str | None:
        """What keeps the project from running as it is on disk: one line per problem."""
        lines = list(self.node.declaration_errors)
        running = self.node.live_workers()
        for name, failure in sorted(self.node.load_failures.items()):
            state = "keeps its last good version" if name in running else "is not running"
            lines.append(f"{failure.line} (function {name} {state})")
        return "\n".join(lines) or None

    def health_detail(self) -> dict[str, Any]:
        failures = self.node.load_failures
        return {
            "functions": len(self.node.live_workers()),
            "draining": self.node.draining,
            "reload_error": self.reload_error,
            "load_errors": {name: f.line for name, f in sorted(failures.items())},
            # Claims that fail, or else what producers were last refused for (a
            # node with no claims going on learns of an outage only from them).
            # Informative, not a 503: restarting a node cannot bring its store back.
            "store_error": self.node.claim_error() or self.ingress.store.outage.error,
            # Informative too: a broker that is down is named, and reconnected meanwhile.
            **self.brokers.describe(),
        }
