"""What a change on disk means to hot reload (used by `runtime.reloader`).

Which file events matter (`SourceFilter`), which fnrun.yaml settings follow
live and which need a restart (`live_settings`), and why a changed
function reloads: its declaration or only its code (`reasons`,
`same_code`).
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from watchfiles import Change

from runtime.errors import ManifestError, UsageError, Where
from runtime.manifest import function_fingerprint, load_settings
from runtime.settings_loader import CONFIG_FILE
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
