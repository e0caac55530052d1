"""One bad save is one error line in the supervisor's log (the pool's), not two."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.harness import RECORDER, Project, wait_until

pytestmark = pytest.mark.timeout(60)

DECL = """
functions:
  ver:
    handler: ver.py:handle
    triggers: [{event: v.go}]
"""
GOOD = "def handle(event, ctx):\n    record(event, ctx)\n"
MARK = "not deployable yet 4711"


def health(project: Project) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(project.url("/_/health"), timeout=5).json()
    return answer


def watching(project: Project) -> None:
    """Wait until saves are seen: /_/health answers before the file watch has started."""
    saves = iter(range(1_000_000))

    def seen() -> bool:
        project.write("functions/notes.txt", f"save {next(saves)}\n")
        return "no function changed" in project.output()

    wait_until(seen, timeout=20, interval=0.3)


def test_new_code_that_does_not_load_is_logged_once(project: Project) -> None:
    project.add("ver", DECL, GOOD)
    project.start("--reload")
    watching(project)
    project.write("functions/ver.py", RECORDER + GOOD + f"raise RuntimeError({MARK!r})\n")

    # Where a user looks: /_/health, and the reload line (fnrun dev shows it)
    error = wait_until(lambda: health(project)["reload_error"], timeout=20)
    where = f"{project.functions / 'ver.py'}:15:1"  # the raise, after RECORDER and GOOD
    assert error == f"{where}: RuntimeError: {MARK} (function ver keeps its last good version)"
    wait_until(lambda: "kept the old version of ver" in project.output(), timeout=10)

    output = project.output()
    lines = [line for line in output.splitlines() if MARK in line]
    assert len(lines) == output.count("kept the old version of ver") >= 1, output  # 1 a save
    assert "function ver: cannot load " in lines[0]
    assert f"ver.py:handle: {where}: RuntimeError: {MARK}" in lines[0]
