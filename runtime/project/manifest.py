"""Loading a project's function declarations with strict validation (SPEC section 3).

Every `*.yaml` / `*.yml` under the functions folder may hold a `functions:`
mapping. Each mistake becomes a `ManifestError` at FILE:LINE:COL and the scan
goes on, so `fnrun validate` shows all of them at once. Handlers are checked
without importing user code: the file must stay inside the functions folder
and its source must bind the callable at top level (read with `ast`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from runtime import plugins
from runtime.brokers import declarations
from runtime.errors import ManifestError, ManifestErrors, Where
from runtime.flow.declare import FLOW_KEYS, declares_flow, flow_rules
from runtime.project.code_files import code_files
from runtime.project.projectfiles import (
    MAX_SOURCE_BYTES,
    kind_of,
    read_regular,
    resolve,
    top_level_names,
)
from runtime.project.settings_loader import (
    CONFIG_FILE,
    concurrency,
    load_settings,
    retry_policy,
    timeout,
)
from runtime.project.yamlnodes import Node, Reader, decode, suggest
from runtime.specs import FunctionSpec, Project, Settings, TriggerSpec

__all__ = [
    "FileScan", "Scan", "function_fingerprint", "load_project", "load_settings",
    "scan_files", "scan_project", "top_level_names", "unset_secrets",
]

NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FUNCTION_KEYS = (
    "handler", "triggers", "timeout", "concurrency", "retry", "memory_mb", "env", "secrets",
    *FLOW_KEYS,
)
MIN_MEMORY_MB = 16
MAX_MEMORY_MB = 1024 * 1024
MAX_FILE_BYTES = 1024 * 1024
"""Largest functions YAML file read (1 MiB); fnrun.yaml has the same bound."""
SKIP_DIRS = frozenset({"__pycache__", "node_modules"})
T = TypeVar("T")


@dataclass
class Scan:
    """What one pass over the functions folder found: the valid functions and every error."""

    project: Project
    errors: list[ManifestError] = field(default_factory=list)
    warnings: list[ManifestError] = field(default_factory=list)
    """Not wrong here, maybe wrong where fnrun runs: an unset `secret_env`."""


def load_project(settings: Settings) -> Project:
    """The project's validated functions.

    Raises:
        ManifestErrors: every declaration error found, sorted by file and line.
    """
    scan = scan_project(settings)
    if scan.errors:
        raise ManifestErrors(scan.errors)
    return scan.project


def scan_project(settings: Settings) -> Scan:
    """Load what is valid and collect every error (the reloader keeps good functions)."""
    root = settings.functions
    errors: list[ManifestError] = []
    found: dict[str, FunctionSpec] = {}
    if not root.is_dir():
        errors.append(ManifestError(None, f"functions folder {root} does not exist"))
        return Scan(Project(settings, found), errors)
    first: dict[str, Where] = {}
    sources = _Sources()
    config = os.path.realpath(settings.project / CONFIG_FILE)
    parts = _config_part(settings, errors)
    for file in yaml_files(root):
        # `functions: .` puts fnrun.yaml in the scan. realpath, not resolve: a
        # link loop must reach the loader, which says so, not raise here.
        if os.path.realpath(file) == config:
            continue
        loader = _FileLoader(file, settings, sources, errors)
        loaded = loader.load()
        parts.append(loader.brokers)
        for name_node, spec in loaded:
            name = name_node.value
            if name in first:
                errors.append(ManifestError(
                    loader.reader.where(name_node),
                    f"duplicate function name {name!r} (first declared at {first[name]})",
                ))
                continue
            first[name] = loader.reader.where(name_node)
            if spec is not None:
                found[name] = spec
    errors.extend(conflicts(found.values()))
    declared = declarations.combine(parts, first, errors)
    project = Project(settings, found, declared.brokers, declared.sources, declared.sinks)
    return Scan(project, sort_errors(errors), unset_secrets(found.values()))


def unset_secrets(
    specs: Iterable[FunctionSpec], environ: Mapping[str, str] = os.environ
) -> list[ManifestError]:
    """A warning for each trigger whose `secret_env` names a variable not set in `environ`.

    Only a warning: the variable may well be set where the project runs, but
    where it is not, every signed request answers 500.
    """
    out = []
    for spec in specs:
        for trigger in spec.triggers:
            name = getattr(trigger, "secret_env", None)
            if name and not environ.get(name):  # empty is unset, as requests read it
                what = " ".join(filter(None, (trigger.kind, getattr(trigger, "path", None))))
                out.append(ManifestError(trigger.where, (
                    f"warning: {what}: secret_env {name} is not set here, so its requests would "
                    "answer 500 (not an error: it may be set where fnrun runs)"
                )))
    return sort_errors(out)


@dataclass
class FileScan:
    """What can load from a project that has errors (`fnrun dev`, hot reload, emit, ls).

    Declarations are checked as `scan_project` checks them, except the
    handlers' source, which a worker checks by loading it. A YAML file with
    any error contributes none of its functions, so hot reload keeps their
    last good versions: a half-edited file never applies half its changes.
    """

    project: Project
    """The functions of the files without errors."""
    errors: list[ManifestError] = field(default_factory=list)
    bad_files: set[Path] = field(default_factory=set)
    """YAML files with an error (and, for a duplicate name or a conflict, the later file)."""

    @property
    def unusable(self) -> bool:
        """An error no file owns (no functions folder): nothing of this scan is usable."""
        return any(e.where is None for e in self.errors)


def scan_files(settings: Settings) -> FileScan:
    """Load the functions of every YAML file without errors, and report the other files."""
    root = settings.functions
    if not root.is_dir():
        missing = ManifestError(None, f"functions folder {root} does not exist")
        return FileScan(Project(settings, {}), [missing])
    found: dict[str, FunctionSpec] = {}
    first: dict[str, Where] = {}
    scan = FileScan(Project(settings, found))
    config = os.path.realpath(settings.project / CONFIG_FILE)
    parts = _config_part(settings, scan.errors, scan.bad_files)
    for file in yaml_files(root):
        if os.path.realpath(file) == config:  # as in scan_project
            continue
        errors: list[ManifestError] = []
        loader = _FileLoader(file, settings, None, errors)
        loaded = loader.load()
        specs: dict[str, FunctionSpec] = {}
        for name_node, spec in loaded:
            where = loader.reader.where(name_node)
            if name_node.value in first or name_node.value in specs:
                at = first.get(name_node.value) or specs[name_node.value].where
                errors.append(ManifestError(
                    where, f"duplicate function name {name_node.value!r} (first declared at {at})"
                ))
            elif spec is not None:
                specs[spec.name] = spec
        if errors:
            scan.errors += errors
            scan.bad_files.add(file)
            continue
        first.update({name: spec.where for name, spec in specs.items()})
        found.update(specs)
        parts.append(loader.brokers)
    spanning = conflicts(found.values())
    declared = declarations.combine(parts, first, spanning)
    for error in spanning:
        scan.errors.append(error)
        if error.where is not None:
            scan.bad_files.add(error.where.file)
    scan.project = _good_files(Project(settings, found, declared.brokers, declared.sources,
                                       declared.sinks), scan.bad_files)
    scan.errors = sort_errors(scan.errors)
    return scan


def _config_part(
    settings: Settings, errors: list[ManifestError], bad_files: set[Path] | None = None
) -> list[declarations.Parsed]:
    """The broker sections of fnrun.yaml, as the first part of a scan (none when they
    have errors and `bad_files` collects the files with errors)."""
    if settings.config_file is None:
        return []
    before = len(errors)
    part = declarations.parse_config(settings.config_file, settings.defaults, errors)
    if bad_files is not None and len(errors) > before:
        bad_files.add(settings.config_file)
        return []
    return [part]


def _good_files(project: Project, bad_files: set[Path]) -> Project:
    """`project` without what the files with errors declare."""
    def good(specs: Mapping[str, Any]) -> dict[str, Any]:
        return {n: s for n, s in specs.items() if s.where.file not in bad_files}

    return Project(project.settings, good(project.functions), good(project.brokers),
                   good(project.sources), good(project.sinks))


def yaml_files(root: Path) -> Iterator[Path]:
    """YAML files under `root`, recursively, in a stable order; hidden folders skipped."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        for name in sorted(files):
            if name.endswith((".yaml", ".yml")) and not name.startswith("."):
                yield Path(folder) / name


def sort_errors(errors: list[ManifestError]) -> list[ManifestError]:
    """Errors by file, line and column, each reported once."""
    unique = {str(e): e for e in errors}
    return sorted(
        unique.values(),
        key=lambda e: (str(e.where.file), e.where.line, e.where.column) if e.where else ("", 0, 0),
    )


def conflicts(specs: Iterable[FunctionSpec]) -> list[ManifestError]:
    """Triggers that claim the same key (a webhook's method and path) as an earlier one."""
    seen: dict[Any, tuple[str, Where]] = {}
    errors = []
    ordered = sorted(specs, key=lambda s: (str(s.where.file), s.where.line, s.where.column))
    for spec in ordered:
        for trigger in spec.triggers:
            keys_of = getattr(trigger, "conflict_keys", None)
            for key in sorted(keys_of() if keys_of else (), key=repr):
                if key in seen:
                    owner, where = seen[key]
                    what = " ".join(map(str, key)) if isinstance(key, tuple) else str(key)
                    errors.append(ManifestError(
                        trigger.where,
                        f"{trigger.kind} {what} is already declared by function {owner!r}"
                        f" at {where}",
                    ))
                    break
                seen[key] = (spec.name, trigger.where)
    return errors


class _Sources:
    """Top-level names of handler files, parsed once per scan."""

    def __init__(self) -> None:
        self._names: dict[Path, set[str] | None | ManifestError] = {}

    def names(self, file: Path) -> set[str] | None:
        """Names bound at top level of `file` (None: a star import hides them).

        Raises:
            ManifestError: the file cannot be read or has a syntax error.
        """
        if file not in self._names:
            try:
                self._names[file] = top_level_names(file)
            except ManifestError as exc:
                self._names[file] = exc
        found = self._names[file]
        if isinstance(found, ManifestError):
            raise found
        return found


class _FileLoader:
    """Validates the functions of one YAML file, appending every error to `errors`."""

    def __init__(
        self,
        file: Path,
        settings: Settings,
        sources: _Sources | None,
        errors: list[ManifestError],
    ) -> None:
        """Args:
            sources: parses handler files to check them; None leaves that to a worker.
        """
        self.file = file
        self.settings = settings
        self.root = settings.functions.resolve()
        self.sources = sources
        self.errors = errors
        self.reader = Reader(file)
        self.brokers = declarations.Parsed(file)
        """The file's `brokers`, `sources` and `sinks` (SPEC 10), once `load` ran."""

    def attempt(self, parse: Callable[..., T], *args: Any) -> T | None:
        """Run one check; record its error and return None if it fails."""
        try:
            return parse(*args)
        except ManifestError as exc:
            self.errors.append(exc)
            return None

    def load(self) -> list[tuple[Node, FunctionSpec | None]]:
        """(name node, spec or None if invalid) for each function in the file."""
        entries = self.attempt(self._entries)
        if not entries:
            return []
        out = []
        for name_node, value in entries:
            before = len(self.errors)
            spec = self.function(name_node, value)
            out.append((name_node, spec if len(self.errors) == before else None))
        return out

    def _entries(self) -> list[tuple[Node, Node]]:
        text = decode(self.file, read_regular(self.file, MAX_FILE_BYTES))
        self.reader = Reader(self.file, text)
        root = self.reader.compose()
        if root is None:
            return []
        top = self.reader.mapping(
            root, "a functions file", allowed=("functions", *declarations.SECTIONS)
        )
        self.brokers = declarations.parse_sections(
            self.reader, top, self.settings.defaults, self.errors
        )
        node = top.get("functions")
        if node is None or node.tag == "tag:yaml.org,2002:null":
            return []
        self.reader.mapping(node, "functions")  # type and key checks
        return list(node.value)

    def function(self, name_node: Node, node: Node) -> FunctionSpec | None:
        """One function's spec; None (errors recorded) if anything is invalid."""
        name = name_node.value
        if not NAME.fullmatch(name):
            self.errors.append(self.reader.error(
                name_node, f"bad function name {name!r} (use [a-z][a-z0-9-]{{0,62}})"
            ))
        keys = self.attempt(
            self.reader.mapping, node, f"function {name!r}", FUNCTION_KEYS, ("handler",)
        )
        if keys is None:
            return None
        d, reader = self.settings.defaults, self.reader
        parsers: dict[str, Callable[[Node], Any]] = {
            "triggers": self.triggers,
            "timeout": lambda n: timeout(reader, n, "timeout"),
            "concurrency": lambda n: (None if n.tag == "tag:yaml.org,2002:map"
                                      else concurrency(reader, n, name)),
            "retry": lambda n: retry_policy(reader, n, d.retry, name),
            "memory_mb": self.memory,
            "env": self.env,
            "secrets": self.secrets,
        }
        values = {key: self.attempt(parse, keys[key]) for key, parse in parsers.items()
                  if key in keys}
        handler = self.attempt(self.handler, keys["handler"])
        if handler is None:
            return None
        base: dict[str, Any] = {
            "timeout": d.timeout, "concurrency": d.concurrency, "retry": d.retry,
            "log_lines": self.settings.logs.max_lines_per_run,
        }
        if declares_flow(keys):
            plain = values.pop("concurrency", None) or base["concurrency"]
            rules = self.attempt(flow_rules, reader, keys, name, plain)
            if rules is None:
                return None
            values.update(flow=rules, concurrency=rules.limit)
        return FunctionSpec(
            name=name, where=reader.where(name_node),
            handler_file=handler[0], handler_attr=handler[1], **{**base, **values},
        )

    def handler(self, node: Node) -> tuple[Path, str]:
        """`FILE:CALLABLE`, FILE inside the functions folder, CALLABLE bound in it."""
        text = self.reader.string(node, "handler")
        file_part, sep, attr = text.rpartition(":")
        if not sep or not file_part or not attr:
            raise self.reader.error(node, f"handler must be FILE:CALLABLE (like orders.py:charge), "
                                          f"got {text!r}")
        if not attr.isidentifier():
            raise self.reader.error(node, f"handler callable {attr!r} is not a Python name")
        if Path(file_part).is_absolute():
            raise self.reader.error(node, f"handler file {file_part!r} must be relative, "
                                          "not an absolute path")
        if not file_part.endswith(".py"):
            raise self.reader.error(node, f"handler file {file_part!r} must be a .py file")
        lexical = Path(os.path.normpath(self.file.parent / file_part))
        try:
            resolved = resolve(lexical)
        except ManifestError as exc:
            raise self.reader.error(node, f"handler file {file_part!r} {exc.message}") from None
        if not resolved.is_relative_to(self.root):
            how = "links to" if lexical.is_relative_to(self.settings.functions) else "is"
            raise self.reader.error(
                node, f"handler file {file_part!r} {how} outside the functions folder {self.root}"
            )
        self.check_regular(node, file_part, resolved)
        names = self.sources.names(resolved) if self.sources is not None else None
        if names is not None and attr not in names:
            raise self.reader.error(node, f"handler file {file_part!r} has no top-level {attr!r}")
        return resolved, attr

    def check_regular(self, node: Node, file_part: str, path: Path) -> None:
        """The handler file exists and is a regular file (a FIFO's read would block)."""
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise self.reader.error(node, f"handler file {file_part!r} does not exist") from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise self.reader.error(node, f"handler file {file_part!r}: {reason}") from None
        if not stat.S_ISREG(mode):
            raise self.reader.error(
                node, f"handler file {file_part!r} is {kind_of(mode)}, not a regular file"
            )

    def triggers(self, node: Node) -> tuple[TriggerSpec, ...]:
        items = self.attempt(self.reader.sequence, node, "triggers") or []
        found = (self.attempt(self.trigger, item) for item in items)
        return tuple(t for t in found if t is not None)

    def trigger(self, item: Node) -> TriggerSpec:
        """One `- KIND: VALUE` entry, parsed by the module registered for KIND."""
        known = ", ".join(plugins.TRIGGERS)
        if not isinstance(item, yaml.MappingNode) or len(item.value) != 1:
            raise self.reader.error(item, f"a trigger must be a mapping with one key ({known})")
        key, value = item.value[0]
        kind = self.reader.string(key, "trigger kind")
        if kind not in plugins.TRIGGERS:
            hint = suggest(kind, plugins.TRIGGERS)
            raise self.reader.error(key, f"unknown trigger kind {kind!r} ({hint}known: {known})")
        try:
            module = plugins.load(plugins.TRIGGERS[kind])
        except ImportError as exc:
            raise self.reader.error(key, f"trigger kind {kind!r} is not available: {exc}") from None
        spec: TriggerSpec = module.parse(self.reader, value)
        return spec

    def memory(self, node: Node) -> int:
        value = self.reader.integer(node, "memory_mb", minimum=MIN_MEMORY_MB)
        if value > MAX_MEMORY_MB:
            raise self.reader.error(node, f"memory_mb must be at most {MAX_MEMORY_MB}")
        return value

    def env(self, node: Node) -> dict[str, str]:
        self.reader.mapping(node, "env")
        out = {}
        for key, value in node.value:
            if not ENV_NAME.fullmatch(key.value):
                raise self.reader.error(key, f"env: {key.value!r} is not a variable name")
            if not isinstance(value, yaml.ScalarNode):
                raise self.reader.error(value, f"env.{key.value} must be a string")
            if "\0" in value.value:  # a worker's exec would fail on it, after validate said ok
                raise self.reader.error(value, f"env.{key.value} must not hold a NUL character")
            out[key.value] = str(value.value)
        return out

    def secrets(self, node: Node) -> tuple[str, ...]:
        out = []
        for item in self.reader.sequence(node, "secrets"):
            name = self.reader.string(item, "secrets item")
            if not ENV_NAME.fullmatch(name):
                raise self.reader.error(item, f"secrets: {name!r} is not a variable name")
            out.append(name)
        return tuple(out)


def function_fingerprint(spec: FunctionSpec) -> str:
    """A hash of what a function's workers depend on: its spec and its code.

    Positions (`where`) are left out, so editing another function in the same
    YAML does not look like a change to this one. Code is the handler file
    and the modules it imports from its folder (`runtime.project.code_files`), so
    saving another function's handler is not a change to this one either.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(_canonical(spec), sort_keys=True, default=str).encode())
    for file in code_files(spec.handler_file):
        digest.update(str(file).encode() + b"\0")
        try:  # bounded, regular files only: a FIFO named x.py must not hang a reload
            digest.update(read_regular(file, MAX_SOURCE_BYTES))
        except ManifestError:
            digest.update(b"<missing>")
    return digest.hexdigest()


def _canonical(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in fields(value) if f.name != "where"]
        out = {name: _canonical(getattr(value, name)) for name in names}
        out["__kind__"] = type(value).__qualname__
        return out
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_canonical(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    return value if isinstance(value, str | int | float | bool | None) else str(value)
