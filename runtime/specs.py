"""What a project declares, after validation: frozen settings and function specs.

Leaf module. `runtime.project.manifest` builds these from YAML; everything else only
reads them. Durations are float seconds, sizes are int bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from runtime.errors import Where
from runtime.flow.rules import FlowRules

if TYPE_CHECKING:
    from runtime.brokers.specs import BrokerSpec, SinkSpec, SourceSpec

MiB = 1024 * 1024
DEFAULT_STORE = "sqlite:///.fnrun/state.db"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; `max_attempts` counts the first try."""

    max_attempts: int = 3
    backoff: float = 1.0
    max_backoff: float = 300.0


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body: int = MiB
    allowed_hosts: tuple[str, ...] = ()
    """Host names (besides the address served and loopback) that `/_/` routes answer."""


@dataclass(frozen=True)
class Defaults:
    """Per-function defaults that a function's own keys override."""

    timeout: float = 60.0
    concurrency: int = 1
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True)
class Retention:
    events: float = 7 * 86400.0
    history: float = 7 * 86400.0


@dataclass(frozen=True)
class Logs:
    """What a run record keeps of a run's output (SPEC 11)."""

    max_lines_per_run: int = 200


@dataclass(frozen=True)
class Isolation:
    """How workers are confined (SPEC 6): the user they run as when the supervisor is root."""

    user: str = "nobody"


@dataclass(frozen=True)
class Settings:
    """The project's settings: fnrun.yaml, then environment, then flags."""

    project: Path
    functions: Path
    store: str = DEFAULT_STORE
    http: HttpSettings = field(default_factory=HttpSettings)
    defaults: Defaults = field(default_factory=Defaults)
    retention: Retention = field(default_factory=Retention)
    isolation: Isolation = field(default_factory=Isolation)
    logs: Logs = field(default_factory=Logs)
    config_file: Path | None = None


@dataclass(frozen=True)
class TriggerSpec:
    """Base of every trigger declaration; each trigger module subclasses it."""

    kind: ClassVar[str] = ""
    where: Where


@dataclass(frozen=True)
class FunctionSpec:
    """One declared function, fully resolved."""

    name: str
    where: Where
    handler_file: Path
    handler_attr: str
    triggers: tuple[TriggerSpec, ...] = ()
    timeout: float = 60.0
    concurrency: int = 1
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    memory_mb: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    flow: FlowRules | None = None
    """Flow-control rules (SPEC 12); None for a function that declares none."""
    log_lines: int = 200
    """`logs.max_lines_per_run` of the project: most log lines its run records keep."""

    @property
    def handler(self) -> str:
        return f"{self.handler_file}:{self.handler_attr}"

    def triggers_of(self, kind: str) -> list[TriggerSpec]:
        return [t for t in self.triggers if t.kind == kind]


@dataclass(frozen=True)
class Project:
    """A loaded project: its settings, its functions by name, and its brokers (SPEC 10)."""

    settings: Settings
    functions: Mapping[str, FunctionSpec]
    brokers: Mapping[str, BrokerSpec] = field(default_factory=dict)
    sources: Mapping[str, SourceSpec] = field(default_factory=dict)
    sinks: Mapping[str, SinkSpec] = field(default_factory=dict)
