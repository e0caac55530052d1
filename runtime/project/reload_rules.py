"""What a change on disk means to hot reload (used by `runtime.project.reloader`).

Which file events matter (`SourceFilter`), which fnrun.yaml settings follow
live and which need a restart (`live_settings`), which functions to serve,
try or leave as they are (`with_last_good`, `plan`, `settle`), and why a
changed function reloads: its declaration or only its code (`reasons`,
`same_code`), and the one line a reload logs (`reload_line`).
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchfiles import Change

from runtime.brokers.declarations import Declarations, last_good
from runtime.errors import ManifestError, UsageError, Where
from runtime.pool.warmup import LoadFailure
from runtime.project.manifest import FileScan, function_fingerprint, load_settings
from runtime.project.registry import Diff
from runtime.project.settings_loader import CONFIG_FILE
from runtime.specs import FunctionSpec, Project, Settings

IGNORED_DIRS = frozenset({"__pycache__", "node_modules", ".fnrun", ".git", ".venv"})
TEMP_FILE = re.compile(
    r"(\.sw[a-p]|~|\.tmp|\.py[cod]|\.bak|\.orig|\.kate-swp)$"  # vim, emacs, kate, tools
    r"|^\.?#"  # emacs lock and autosave files
    r"|^4913$"  # vim's probe file for a writable folder
)
_NOWHERE = Where(Path(), 0, 0)


class SourceFilter:
    """Which file events matter: fnrun.yaml and the functions folder, minus editor litter."""

    def __init__(self, functions: Path, config: Path) -> None:
        self.functions = functions
        self.config = config

    def __call__(self, change: Change, path: str) -> bool:
        file = Path(path)
        if file in (self.config, self.functions):
            return True
        try:
            parts = file.relative_to(self.functions).parts
        except ValueError:
            return False
        if not parts or TEMP_FILE.search(parts[-1]):
            return False
        return not any(p in IGNORED_DIRS or p.startswith(".") for p in parts)


def live_settings(
    running: Settings, before: Settings, after: Settings
) -> tuple[Settings, list[str]]:
    """Apply what fnrun.yaml changed that can change live; say what needs a restart.

    A key is followed only if the running value came from the file (`running`
    equals `before`): a flag or environment override keeps winning.

    Args:
        running: the settings in force; before/after: fnrun.yaml read then and now.
    """
    def followed(get: Callable[[Settings], Any]) -> bool:
        return bool(get(before) != get(after) and get(running) == get(before))

    live: dict[str, Any] = {"config_file": after.config_file}
    for key in ("functions", "defaults", "retention"):
        if followed(operator.attrgetter(key)):
            live[key] = getattr(after, key)
    http = running.http
    if followed(lambda s: s.http.max_body):
        http = dataclasses.replace(http, max_body=after.http.max_body)
    live["http"] = http
    fixed: dict[str, Callable[[Settings], Any]] = {
        "store": operator.attrgetter("store"),
        "http.host": operator.attrgetter("http.host"),
        "http.port": operator.attrgetter("http.port"),
        "isolation.user": operator.attrgetter("isolation.user"),
    }
    restart = [
        f"{CONFIG_FILE}: {what} changed from {get(before)} to {get(after)}:"
        " restart fnrun to apply it"
        for what, get in fixed.items()
        if followed(get)
    ]
    return dataclasses.replace(running, **live), restart


def declaration(spec: FunctionSpec) -> FunctionSpec:
    """The spec without source positions, so moving a function is not a change."""
    triggers = tuple(dataclasses.replace(t, where=_NOWHERE) for t in spec.triggers)
    return dataclasses.replace(spec, where=_NOWHERE, triggers=triggers)


def same_code(old: FunctionSpec, new: FunctionSpec, running: str) -> bool:
    """Whether `new` loads exactly the code `old` runs (only triggers or limits changed).

    Then its workers need no trial start: that code loaded already.
    """
    loads = ("handler_file", "handler_attr", "memory_mb", "env", "secrets")
    if any(getattr(old, field) != getattr(new, field) for field in loads):
        return False
    return function_fingerprint(old) == running  # the files on disk are still the old ones


def reasons(old: Project | None, new: Project, changed: Sequence[str]) -> dict[str, str]:
    """Why each changed function reloads: its declaration ("config") or only its code."""
    if old is None:
        return {}
    return {
        name: "code" if declaration(old.functions[name]) == declaration(new.functions[name])
        else "config"
        for name in changed
        if name in old.functions and name in new.functions
    }


def file_settings(settings: Settings) -> Settings:
    """fnrun.yaml and the environment as they are now, without command-line flags."""
    try:
        return load_settings(settings.project)
    except (ManifestError, UsageError):
        return settings


def with_last_good(scan: FileScan, old: Project | None) -> Project:
    """The functions to bind: the scan's, plus the running version of each function
    declared in a file that now has errors (one never loaded stays out)."""
    functions = dict(scan.project.functions)
    for name, spec in (old.functions.items() if old is not None else ()):
        if name not in functions and spec.where.file in scan.bad_files:
            functions[name] = spec
    new = scan.project
    if old is not None:  # brokers, sources and sinks likewise (SPEC 10)
        kept = last_good(Declarations(new.brokers, new.sources, new.sinks),
                         Declarations(old.brokers, old.sources, old.sinks), scan.bad_files)
        new = dataclasses.replace(new, brokers=kept.brokers, sources=kept.sources,
                                  sinks=kept.sinks)
    return dataclasses.replace(new, functions=functions)


@dataclass(frozen=True)
class Plan:
    """What a reload does with each function, before any new code is tried."""

    serve: Mapping[str, str]
    """Function -> fingerprint to serve, decided without a trial."""
    trial: tuple[str, ...]
    """New versions to try in a worker first."""
    fingerprints: Mapping[str, str]
    """Of each new version, taken before any is tried."""
    running: Mapping[str, str]
    """Fingerprints running now."""
    failures: Mapping[str, LoadFailure]
    """Carried over: the same code still does not load."""


def plan(
    project: Project,
    old: Project | None,
    running: Mapping[str, str],
    failures: Mapping[str, LoadFailure],
    last_good: Collection[str],
) -> Plan:
    """Which functions keep running, which to try, which stay failed.

    Args:
        project: the functions to bind (`with_last_good`).
        running: fingerprints of the versions running now.
        failures: functions whose newest code did not load.
        last_good: functions whose file has errors: left as they are.
    """
    serve: dict[str, str] = {}
    carried: dict[str, LoadFailure] = {}
    fingerprints: dict[str, str] = {}
    trial = []
    for name, spec in project.functions.items():
        failure = failures.get(name)
        if name in last_good:  # its file has errors: as it was
            if name in running:
                serve[name] = running[name]
            if failure is not None:
                carried[name] = failure
            continue
        fingerprint = fingerprints[name] = function_fingerprint(spec)
        if running.get(name) == fingerprint:  # unchanged, or a failing edit undone
            serve[name] = fingerprint
        elif failure is not None and failure.fingerprint == fingerprint:
            # Tried already: not again (nor its error logged again) until a file changes.
            carried[name] = failure
            if name in running:
                serve[name] = running[name]
        elif old is not None and name in old.functions and name in running and same_code(
            old.functions[name], spec, running[name]
        ):
            serve[name] = fingerprint
        else:
            trial.append(name)
    return Plan(serve, tuple(sorted(trial)), fingerprints, dict(running), carried)


def settle(
    project: Project, old: Project | None, plan: Plan, failed: Mapping[str, str]
) -> tuple[Project, dict[str, str], dict[str, LoadFailure], tuple[str, ...]]:
    """After the trials: (project to bind, fingerprints to serve, load failures, kept).

    A tried version that loads is served; one that does not keeps the running
    version (`kept`), or is bound but not served.

    Args:
        failed: function -> load error of its tried version.
    """
    functions = dict(project.functions)
    serve = dict(plan.serve)
    failures = dict(plan.failures)
    kept = []
    for name in plan.trial:
        if name not in failed:
            serve[name] = plan.fingerprints[name]
            continue
        failures[name] = LoadFailure(plan.fingerprints[name], failed[name])
        if name in plan.running and old is not None and name in old.functions:
            serve[name] = plan.running[name]
            functions[name] = old.functions[name]
            kept.append(name)
    return dataclasses.replace(project, functions=functions), serve, failures, tuple(kept)


def reload_line(
    change: Diff,
    reasons: Mapping[str, str],
    millis: float,
    *,
    kept: Sequence[str] = (),
    down: Sequence[str] = (),
    errors: int = 0,
    fixed: bool = False,
) -> str:
    """One line per reload, e.g. `reloaded charge-card (code), added send-mail in 38 ms`.

    Args:
        reasons: why each changed function reloaded ("code", "config").
        kept: functions whose new version did not load and keep their old one.
        down: functions whose new version did not load and that have none running.
        errors: declaration errors: their files were left as they were.
        fixed: the previous reload had errors and this one has none.
    """
    parts = ["errors fixed"] if fixed else []
    if change.changed:
        parts.append("reloaded " + ", ".join(
            f"{name} ({reasons[name]})" if name in reasons else name for name in change.changed
        ))
    if change.added:
        parts.append("added " + ", ".join(change.added))
    if change.removed:
        parts.append("removed " + ", ".join(change.removed))
    if kept:
        parts.append("kept the old version of " + ", ".join(kept))
    if down:
        parts.append("cannot load " + ", ".join(down))
    if errors:
        parts.append(f"left the files with {errors} error{'' if errors == 1 else 's'} as they were")
    if not (change or kept or down or errors):
        parts.append("no function changed")
    return f"{', '.join(parts)} in {millis:.0f} ms"
