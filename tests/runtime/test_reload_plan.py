"""Hot reload's decisions, from a table: which functions serve, get tried, or stay failed.

`reload_rules.plan` and `settle` are pure but for reading the handler files
they fingerprint, so the cases write real files in a tmp folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from runtime.errors import Where
from runtime.pool.warmup import LoadFailure
from runtime.project.manifest import function_fingerprint
from runtime.project.reload_rules import plan, settle
from runtime.specs import FunctionSpec, Project, Settings

Case = tuple[Project, Project, dict[str, str], dict[str, LoadFailure]]
NAMES = ("same", "edited", "config", "new", "failing", "bad-file", "bad-file-down")


def specs(root: Path, *, edited: bool) -> dict[str, FunctionSpec]:
    """One function per case, each with its own handler file."""
    out = {}
    for name in NAMES:
        file = root / f"{name}.py"
        if not file.exists() or (edited and name in ("edited", "failing")):
            file.write_text(f"def handle(event):\n    return {name!r}  # {edited}\n")
        timeout = 9.0 if edited and name == "config" else 60.0
        out[name] = FunctionSpec(name=name, where=Where(root / f"{name}.yaml", 2, 3),
                                 handler_file=file, handler_attr="handle", timeout=timeout)
    return out


@pytest.fixture
def case(tmp_path: Path) -> Case:
    settings = Settings(project=tmp_path, functions=tmp_path)
    before = specs(tmp_path, edited=False)
    running = {n: function_fingerprint(s) for n, s in before.items()
               if n not in ("new", "bad-file-down")}
    after = specs(tmp_path, edited=True)
    del before["new"]
    failures = {
        "failing": LoadFailure(function_fingerprint(after["failing"]), "x.py:1:1: boom"),
        "bad-file-down": LoadFailure("old", "y.py:1:1: boom"),
    }
    return Project(settings, before), Project(settings, after), running, failures


def test_plan_serves_what_did_not_change_and_tries_only_new_code(case: Case) -> None:
    old, new, running, failures = case
    decided = plan(new, old, running, failures, last_good={"bad-file", "bad-file-down"})
    assert decided.trial == ("edited", "new")
    assert set(decided.serve) == {"same", "config", "failing", "bad-file"}
    assert decided.serve["same"] == running["same"]
    assert decided.serve["failing"] == running["failing"], "still its last good version"
    assert decided.serve["bad-file"] == running["bad-file"]
    # A changed declaration whose code already loaded is served without a trial.
    assert decided.serve["config"] == function_fingerprint(new.functions["config"])
    assert decided.serve["config"] != running["config"]
    assert set(decided.failures) == {"failing", "bad-file-down"}


@pytest.mark.parametrize(("failed", "serve", "kept", "bound"), [
    ({}, {"edited": "new", "new": "new"}, (), {"edited": "new", "new": "new"}),
    ({"edited": "e.py:1:1: no"}, {"edited": "running"}, ("edited",), {"edited": "old"}),
    ({"new": "n.py:1:1: no"}, {"new": None}, (), {"new": "new"}),
])
def test_settle_keeps_the_old_version_of_what_fails_to_load(
    case: Case, failed: dict[str, str], serve: dict[str, str | None],
    kept: tuple[str, ...], bound: dict[str, str],
) -> None:
    old, new, running, failures = case
    decided = plan(new, old, running, failures, last_good=())
    project, served, now_failing, kept_now = settle(new, old, decided, failed)
    assert kept_now == kept
    for name, version in serve.items():
        wanted = {"new": decided.fingerprints.get(name), "running": running.get(name),
                  None: None}[version]
        assert served.get(name) == wanted, name
    for name, version in bound.items():
        source = new if version == "new" else old
        assert project.functions[name] == source.functions[name]
    assert set(failed) <= set(now_failing)
    assert dataclasses.asdict(now_failing["failing"]) == dataclasses.asdict(failures["failing"])
