"""Commands that read create no store: no folders, no empty database for a typo."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.e2e.harness import Project, fnrun
from tests.e2e.test_store_location import PING, PING_CODE, one_line

pytestmark = pytest.mark.timeout(60)

READING = [["ls"], ["ls", "--json"], ["history"], ["dead-letters", "list"],
           ["dead-letters", "drop", "--all"], ["replay", "--function", "ping", "--type", "a"]]


@pytest.mark.parametrize("args", READING, ids=" ".join)
@pytest.mark.parametrize("via", ["--store", "FNRUN_STORE"])
def test_reading_a_store_that_is_not_there_says_so_and_creates_nothing(
    project: Project, tmp_path: Path, args: list[str], via: str
) -> None:
    project.add("ping", PING, PING_CODE)
    typo = tmp_path / "typo" / "dir" / "x.db"
    url = f"sqlite:///{typo}"
    flags = ["--store", url] if via == "--store" else []
    env = {**os.environ, "FNRUN_STORE": url} if via == "FNRUN_STORE" else None
    proc = fnrun(*args, *flags, "--project", str(project.root), check=False, env=env)
    assert proc.returncode == 2
    assert one_line(proc) == (
        f"fnrun: {via}: no store at {typo} (fnrun emit or fnrun run creates it)"
    )
    assert not (tmp_path / "typo").exists()
    assert not (project.root / ".fnrun").exists()


@pytest.mark.parametrize("args", READING, ids=" ".join)
def test_reading_a_project_whose_store_is_not_made_yet_shows_nothing_and_creates_nothing(
    project: Project, args: list[str]
) -> None:
    """Nothing was ever stored: nothing to show, and no folder or database made to show it."""
    project.add("ping", PING, PING_CODE)
    proc = fnrun(*args, "--project", str(project.root), check=False)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert not (project.root / ".fnrun").exists()
    if args == ["ls", "--json"]:
        [ping] = json.loads(proc.stdout)
        assert (ping["pending"], ping["running"], ping["dead"]) == (0, 0, 0)
