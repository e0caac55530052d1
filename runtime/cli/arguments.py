"""What the commands share: the project, store and function their arguments name.

Without `--project`, the project is found as git finds `.git`: the nearest
folder, from the current one up, holding `fnrun.yaml` or a `functions/`
folder. So `fnrun emit` works from inside `functions/`, and `fnrun history`
in an unrelated folder says there is no project rather than showing nothing.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from runtime import plugins
from runtime.errors import UsageError
from runtime.project.manifest import load_project, load_settings
from runtime.project.settings_loader import CONFIG_FILE
from runtime.specs import FunctionSpec, Project, Settings
from runtime.store.base import Store

FUNCTIONS_FOLDER = "functions"
"""The functions folder a project has unless its fnrun.yaml names another."""


def find_project(start: Path) -> Path | None:
    """The nearest folder from `start` up holding fnrun.yaml or a functions/ folder."""
    for folder in (start, *start.parents):
        if (folder / CONFIG_FILE).is_file() or (folder / FUNCTIONS_FOLDER).is_dir():
            return folder
    return None


def project_folder(args: argparse.Namespace, *, creates: bool = False) -> Path:
    """The folder `--project` names, else the one found from the current folder up.

    With `--functions` (or FNRUN_FUNCTIONS) the current folder is the project
    when none is found: the functions are named, nothing needs finding. A
    command that `creates` (`fnrun new`) starts a project in the current folder.

    Raises:
        UsageError: no project here or above, and none named.
    """
    if args.project is not None:
        return Path(args.project)
    here = Path.cwd()
    found = find_project(here)
    if found is not None:
        return found
    if creates or args.functions is not None or os.environ.get("FNRUN_FUNCTIONS"):
        return here
    raise UsageError(
        f"no fnrun project in {here} or above (no {CONFIG_FILE} or {FUNCTIONS_FOLDER}/ "
        "folder); start one with `fnrun init`, or name one with --project DIR"
    )


def settings(args: argparse.Namespace, *, creates: bool = False) -> Settings:
    return load_settings(
        project_folder(args, creates=creates),
        functions=args.functions,
        store=args.store,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
    )


def project(args: argparse.Namespace) -> Project:
    return load_project(settings(args))


def function(project: Project, name: str) -> FunctionSpec:
    if name not in project.functions:
        known = ", ".join(sorted(project.functions)) or "none"
        raise UsageError(f"no such function {name!r} (known: {known})")
    return project.functions[name]


def check_type(what: str, value: str) -> None:
    """An event type as `ctx.emit` and `POST /_/events` take one (SPEC 4)."""
    from runtime import cloudevents  # imports the worker's rule: only when needed

    if not value.strip():  # CloudEvents requires a non-empty type
        raise UsageError(f"{what} must not be empty")
    cloudevents.check_type(what, value)


def check_id(value: str) -> None:
    """An event id as `ctx.emit` and `POST /_/events` take one, and not blank."""
    from runtime import cloudevents

    if not value.strip():
        raise UsageError("--id must not be empty")
    cloudevents.check_id("--id", value)


def with_store(settings: Settings, work: Callable[[Store], Awaitable[int]]) -> int:
    async def main() -> int:
        async with plugins.store_for(settings.store) as store:
            return await work(store)

    return anyio.run(main)


def existing_store(
    args: argparse.Namespace, settings: Settings, work: Callable[[Store | None], Awaitable[int]]
) -> int:
    """`work` on a store that already exists: a command that reads creates none.

    The project's own store not made yet (nothing stored, nothing to show)
    gives `work` None; one that --store or FNRUN_STORE names and is not
    there is one line: a typo made folders and an empty database.
    """
    missing = plugins.missing_file(settings.store)
    if missing is None:
        return with_store(settings, work)
    if args.store is None and not os.environ.get("FNRUN_STORE"):
        return anyio.run(work, None)
    given = "--store" if args.store is not None else "FNRUN_STORE"
    raise UsageError(f"{given}: no store at {missing} (fnrun emit or fnrun run creates it)")


def check_function_name(settings: Settings, name: str | None) -> None:
    """A --function filter that matched nothing must at least name a declared function.

    Records of a removed function stay listable: only a name the project does
    not know *and* that matched nothing is a mistake (a typo, most likely).
    Said only when the project loads cleanly, so a broken file cannot hide one.
    """
    if name is None:
        return
    from runtime.project.manifest import scan_project

    scan = scan_project(settings)
    if not scan.errors and name not in scan.project.functions:
        function(scan.project, name)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def read_data(raw: str | None, limit: int) -> Any:
    """`--data JSON` or `--data @FILE` (UTF-8): strict JSON, so no NaN or Infinity.

    At most `limit` bytes (`http.max_body`, what `POST /_/events` takes), read
    no further than that, so `--data @/dev/zero` stops at once.
    """
    from runtime import strict_json  # loaded only by the commands that take --data

    if raw is None:
        return None
    if raw.startswith("@"):
        name = raw[1:]
        if not name:
            raise UsageError("--data @FILE needs a file name after @")
        body = _read_bounded(name, limit)
        _check_size(f"--data {raw}", len(body), limit)
        try:
            raw = body.decode("utf-8-sig")  # a BOM, as POST /_/events takes one (RFC 8259 8.1)
        except UnicodeDecodeError as exc:
            raise UsageError(f"--data: {name} is not UTF-8 text: {exc.reason} "
                             f"at byte {exc.start}") from None
    else:
        _check_size("--data", len(raw.encode("utf-8")), limit)
    try:
        return strict_json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"--data is not valid JSON: {exc}") from None


def _check_size(what: str, size: int, limit: int) -> None:
    from runtime.units import format_size

    if size > limit:
        raise UsageError(f"{what}: larger than {format_size(limit)} (http.max_body in fnrun.yaml)")


def _read_bounded(name: str, limit: int) -> bytes:
    """At most `limit + 1` bytes of the file `name`: one more than allowed tells it is over."""
    try:
        with open(name, "rb") as file:
            return file.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"--data: cannot read {name}: {exc.strerror or exc}") from None
