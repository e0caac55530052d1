"""A number no double holds (`1e999`) is refused at input, as NaN is, never stored as inf.

Stored, it reached the handler as inf, whose result then failed to
serialize, and the event ended as a dead letter. Webhooks and `POST
/_/events` are covered in tests/runtime/test_http.py; this is `--data`.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.harness import Project, fnrun

pytestmark = pytest.mark.timeout(120)

ECHO = """
    functions:
      echo: {handler: echo.py:handle, triggers: [{event: "ping.*"}]}
"""
ECHO_CODE = """
    def handle(event, ctx):
        return event.data
"""


def pending(project: Project) -> int:
    out = fnrun("ls", "--json", "--project", str(project.root)).stdout
    return sum(f["pending"] for f in json.loads(out))


@pytest.mark.parametrize(("data", "literal"), [('{"x": 1e999}', "1e999"), ("[-1e400]", "-1e400")])
def test_emit_data_past_a_doubles_range_is_one_line_and_stores_nothing(
    project: Project, data: str, literal: str
) -> None:
    project.add("echo", ECHO, ECHO_CODE)
    (project.root / "data.json").write_text(data, encoding="utf-8")
    for given in (data, f"@{project.root / 'data.json'}"):
        proc = fnrun("emit", "ping.x", "--data", given, "--project", str(project.root),
                     check=False)
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.splitlines()
        assert line.startswith("fnrun: --data") and f": {literal} is out of range (" in line
    assert pending(project) == 0


def test_emit_data_with_ordinary_floats_is_stored(project: Project) -> None:
    project.add("echo", ECHO, ECHO_CODE)
    fnrun("emit", "ping.x", "--data", '{"a": 1.5, "b": -1e308, "c": 1e-999}',
          "--project", str(project.root))
    assert pending(project) == 1
