"""Where the SQLite store lives: inside the project, whatever characters its path holds."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import Project, fnrun, wait_until

pytestmark = pytest.mark.timeout(90)

PING = """
    functions:
      ping:
        handler: ping.py:handle
        triggers: [{event: demo.ping}]
"""
PING_CODE = """
    def handle(event, ctx):
        record(event, ctx)
        return {"ok": True}
"""


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_project_folder_named_what_y_z_keeps_its_store_inside(tmp_path: Path) -> None:
    """`/x/what?y#z` wrote its database to `/x/what`: the URL was cut at the `?`."""
    project = Project(tmp_path / "what?y#z")
    project.add("ping", PING, PING_CODE)
    try:
        event_id = fnrun("emit", "demo.ping", "--project", str(project.root)).stdout.strip()
        assert (project.root / ".fnrun" / "state.db").is_file()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["what?y#z"]
        listed = json.loads(fnrun("ls", "--json", "--project", str(project.root)).stdout)
        assert listed[0]["pending"] == 1  # ls reads the store emit wrote

        proc = project.start()
        wait_until(lambda: project.handled("ping")[event_id] == 1, timeout=30)
        assert project.stop(proc) == 0
        out = fnrun("history", "--json", "--project", str(project.root)).stdout
        assert [(r["event_id"], r["outcome"]) for r in json.loads(out)] == [(event_id, "ok")]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["what?y#z"]
    finally:
        project.close()


def test_an_explicit_sqlite_path_is_percent_decoded(project: Project) -> None:
    """%3F and %23 are how a path holds `?` and `#`; a bare one is refused, not cut at."""
    project.add("ping", PING, PING_CODE)
    store = "sqlite:///data%3Fx%23y.db"
    event_id = fnrun("emit", "demo.ping", "--store", store,
                     "--project", str(project.root)).stdout.strip()
    assert (project.root / "data?x#y.db").is_file()
    listed = json.loads(fnrun("ls", "--json", "--store", store,
                              "--project", str(project.root)).stdout)
    assert listed[0]["pending"] == 1
    assert event_id

    bare = fnrun("emit", "demo.ping", "--store", "sqlite:///data?x.db",
                 "--project", str(project.root), check=False)
    assert bare.returncode == 2
    assert one_line(bare).startswith(
        "fnrun: --store: SQLite store URL 'sqlite:///data?x.db' has '?x.db' after its path"
    )
    assert not (project.root / "data").exists()
