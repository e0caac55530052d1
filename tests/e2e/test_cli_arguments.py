"""Arguments that are empty or in the wrong place are one clear line and exit 2."""

from __future__ import annotations

import pytest

from tests.e2e.harness import Project, fnrun

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(("args", "message"), [
    # `--functions ""` made the project root the functions folder
    (["validate", "--functions", ""],
     "fnrun: argument --functions: must not be empty (see fnrun validate --help)"),
    # `--project ""` meant the current folder
    (["ls", "--project", ""], "fnrun: argument --project: must not be empty "
                              "(use . for the current folder) (see fnrun ls --help)"),
    (["history", "--store", ""], "fnrun: argument --store: must not be empty "
                                 "(see fnrun history --help)"),
    (["run", "--host", ""], "fnrun: argument --host: must not be empty (see fnrun run --help)"),
    (["ls", "--host", ""], "fnrun: argument --host: must not be empty (see fnrun ls --help)"),
    # said `no such dead letter: ` with nothing after it
    (["dead-letters", "list", ""],
     "fnrun: argument ID: must not be empty (see fnrun dead-letters --help)"),
    (["dead-letters", "drop", "1", ""],
     "fnrun: argument ID: must not be empty (see fnrun dead-letters --help)"),
])
def test_an_empty_argument_is_one_line(project: Project, args: list[str], message: str) -> None:
    project.write("functions/x.py", "def handle(event):\n    pass\n")
    proc = fnrun(*args, cwd=project.root, check=False)
    assert proc.returncode == 2
    assert proc.stderr == f"{message}\n"


@pytest.mark.parametrize(("args", "message"), [
    (["--project", "X", "ls"], "fnrun ls --project X"),
    (["--project=my dir", "--json", "ls", "--store", "s"],
     "fnrun ls '--project=my dir' --json --store s"),
    (["--store", "sqlite:///x.db"], "fnrun COMMAND --store sqlite:///x.db"),
])
def test_options_before_the_command_are_named_as_such(
    project: Project, args: list[str], message: str
) -> None:
    """It said `invalid choice: 'X'`, as argparse took the option's value for the command."""
    proc = fnrun(*args, cwd=project.root, check=False)
    assert proc.returncode == 2
    assert proc.stderr == f"fnrun: options go after the command: {message} (see fnrun --help)\n"
    assert fnrun("ls", "--project", str(project.root)).stdout.startswith("FUNCTION")
