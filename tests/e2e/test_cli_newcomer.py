"""What a newcomer reaches for first (issue 22): finding the project, help, `fnrun init`,
`fnrun new`, and an event that reaches nobody. Through the real `fnrun` command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from runtime.cli.options import build_parser
from tests.e2e.harness import Project, fnrun, wait_until

pytestmark = pytest.mark.timeout(120)

GREET = """
    functions:
      greet: {handler: greet.py:greet, triggers: [{event: greet.requested}]}
"""
GREET_CODE = """
    def greet(event, ctx):
        record(event, ctx)
        return {"hello": (event.data or {}).get("name")}
"""


@pytest.fixture
def greet(project: Project) -> Project:
    project.add("greet", GREET, GREET_CODE)
    return project


# -- project discovery ---------------------------------------------------------------


def test_commands_inside_functions_find_the_project_above(greet: Project) -> None:
    """`fnrun emit` in functions/ said `functions folder .../functions/functions does not exist`."""
    event_id = fnrun("emit", "greet.requested", "--data", '{"name": "Ada"}',
                     cwd=greet.functions).stdout.strip()
    assert (greet.root / ".fnrun" / "state.db").is_file()
    assert not (greet.functions / ".fnrun").exists()
    listing = json.loads(fnrun("ls", "--json", cwd=greet.functions).stdout)
    assert [(f["name"], f["pending"]) for f in listing] == [("greet", 1)]
    deep = greet.functions / "lib" / "deeper"
    deep.mkdir(parents=True)
    assert fnrun("validate", cwd=deep).stdout == f"ok: 1 function in {greet.functions}\n"
    assert event_id


def test_a_project_with_only_fnrun_yaml_is_found_from_its_functions_folder(
    tmp_path: Path,
) -> None:
    project = Project(tmp_path / "app")
    project.write("fnrun.yaml", "functions: src/handlers\n")
    project.write("src/handlers/greet.yaml", GREET)
    project.write("src/handlers/greet.py", "def greet(event, ctx):\n    pass\n")
    out = fnrun("validate", cwd=project.root / "src" / "handlers").stdout
    assert out == f"ok: 1 function in {project.root / 'src' / 'handlers'}\n"


@pytest.mark.parametrize("args", [["history"], ["ls"], ["emit", "greet.requested"],
                                  ["dead-letters", "list"], ["run"]])
def test_no_project_here_or_above_is_one_line(tmp_path: Path, args: list[str]) -> None:
    """`fnrun history` in an unrelated folder printed an empty table and exited 0."""
    empty = tmp_path / "unrelated"
    empty.mkdir()
    proc = fnrun(*args, cwd=empty, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (f"fnrun: no fnrun project in {empty} or above (no fnrun.yaml or "
                           "functions/ folder); start one with `fnrun init`, or name one with "
                           "--project DIR\n")
    assert list(empty.iterdir()) == []


def test_project_still_wins_over_the_folder_found(greet: Project, tmp_path: Path) -> None:
    other = Project(tmp_path / "other")
    other.add("solo", """
        functions:
          solo: {handler: solo.py:run, triggers: [{event: solo.x}]}
    """, "def run(event, ctx):\n    pass\n")
    out = fnrun("validate", "--project", str(other.root), cwd=greet.functions).stdout
    assert out == f"ok: 1 function in {other.functions}\n"


# -- an event that reaches nobody ------------------------------------------------------


def test_emit_of_a_type_nobody_subscribes_to_says_so_and_stores_it(greet: Project) -> None:
    proc = fnrun("emit", "greet.requestd", "--id", "typo", cwd=greet.root)
    assert proc.stdout == "typo\n"
    assert proc.stderr == ("fnrun: no function subscribes to greet.requestd: the event is "
                           "stored, but nothing runs it; did you mean greet.requested?\n")
    # stored: a replay of that type reaches greet
    out = fnrun("replay", "--function", "greet", "--type", "greet.requestd", "--all",
                cwd=greet.root).stdout
    assert out.startswith("replaying 1 event(s) to greet")
    matched = fnrun("emit", "greet.requested", cwd=greet.root)
    assert matched.stderr == ""


def test_post_events_counts_the_functions_each_event_reached(greet: Project) -> None:
    greet.start()
    batch = [{"specversion": "1.0", "source": "t", "id": i, "type": t}
             for i, t in (("hit", "greet.requested"), ("miss", "greet.requestd"))]
    answer = httpx.post(greet.url("/_/events"), content=json.dumps(batch), timeout=10,
                        headers={"content-type": "application/cloudevents-batch+json"})
    assert answer.status_code == 202
    assert answer.json() == {"ids": ["hit", "miss"], "matched": [1, 0]}
    wait_until(lambda: greet.handled("greet").get("hit") == 1)
    assert "miss" not in greet.handled()


# -- help ------------------------------------------------------------------------------


def test_every_command_has_a_description_examples_and_help_on_each_argument() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0]  # type: ignore[union-attr]
    helps = {a.dest: a.help for a in commands._choices_actions}
    assert set(helps) == set(commands.choices)
    for name, command in commands.choices.items():
        assert helps[name], name
        assert command.description and len(command.description) > 40, name
        assert command.epilog and command.epilog.startswith("examples:\n  fnrun "), name
        for action in command._actions:
            assert action.help, f"fnrun {name} {action.option_strings or action.dest}"


@pytest.mark.parametrize(("command", "shown"), [
    ("run", "(default: 30)"), ("dev", "(default: 30)"), ("history", "(default: 50,"),
    ("dead-letters", "list, replay (deliver again) or drop (discard)"),
])
def test_help_shows_defaults_and_choices(tmp_path: Path, command: str, shown: str) -> None:
    out = fnrun(command, "--help", cwd=tmp_path).stdout
    assert " ".join(out.split()).count(shown) == 1, out
    assert "examples:\n  fnrun " in out


def test_new_without_a_trigger_says_which_event_it_handles(project: Project) -> None:
    proc = fnrun("new", "plain", cwd=project.root)
    assert proc.stderr == ("fnrun: no trigger given: plain handles the event demo.hello "
                           "(fnrun emit demo.hello); --event, --cron or --webhook picks another\n")
    assert fnrun("new", "other", "--event", "x.y", cwd=project.root).stderr == ""


def test_new_in_an_empty_folder_starts_a_project_there(tmp_path: Path) -> None:
    fnrun("new", "first", "--event", "x.y", cwd=tmp_path)
    assert (tmp_path / "functions" / "first.yaml").is_file()
    assert fnrun("validate", cwd=tmp_path).stdout == f"ok: 1 function in {tmp_path}/functions\n"


# -- fnrun init --------------------------------------------------------------------------


def test_init_writes_a_project_that_validates_and_runs(tmp_path: Path) -> None:
    proc = fnrun("init", "my-app", cwd=tmp_path)
    app = tmp_path / "my-app"
    assert proc.stdout.splitlines()[:8] == [f"created my-app/{name}" for name in (
        "fnrun.yaml", "functions/greet.yaml", "functions/greet.py", "functions/hello_http.yaml",
        "functions/hello_http.py", "functions/tick.yaml", "functions/tick.py", ".gitignore")]
    assert (app / ".gitignore").read_text().splitlines()[0] == ".fnrun/"
    assert fnrun("validate", cwd=app).stdout == f"ok: 3 functions in {app}/functions\n"
    kinds = {f["name"]: [t["kind"] for t in f["triggers"]]
             for f in json.loads(fnrun("ls", "--json", cwd=app).stdout)}
    assert kinds == {"greet": ["event"], "hello-http": ["webhook"], "tick": ["schedule"]}

    project = Project(app)
    project.start()
    answer = httpx.get(project.url("/hello"), params={"name": "Ada"}, timeout=10)
    assert answer.json() == {"greeting": "hello, Ada!", "method": "GET"}
    fnrun("emit", "greet.requested", "--data", '{"name": "Ada"}', "--id", "first", cwd=app)

    def greeted() -> bool:
        history = json.loads(fnrun("history", "--json", cwd=app).stdout)
        return any(h["event_id"] == "first" and h["outcome"] == "ok" for h in history)

    wait_until(greeted)
    # `fnrun run` names the webhook URLs it serves, not only `ready: 3 functions`
    assert (f"webhook GET,POST http://127.0.0.1:{project.port}/hello -> hello-http (sync)"
            in project.output())
    project.close()


def test_init_refuses_a_folder_that_holds_a_project(greet: Project) -> None:
    before = sorted(p.name for p in greet.root.iterdir())
    proc = fnrun("init", cwd=greet.root, check=False)
    assert proc.returncode == 2
    assert proc.stderr == ("fnrun: . already has functions; not overwritten (fnrun new NAME adds "
                           "a function to it)\n")
    assert sorted(p.name for p in greet.root.iterdir()) == before


def test_init_adds_to_an_existing_gitignore(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("node_modules/")
    fnrun("init", str(tmp_path), cwd=tmp_path)
    assert (tmp_path / ".gitignore").read_text() == "node_modules/\n.fnrun/\n"
    fnrun("emit", "greet.requested", cwd=tmp_path)
    git = subprocess.run(["git", "init", "-q", str(tmp_path)], check=False)
    if git.returncode == 0:
        ignored = subprocess.run(["git", "-C", str(tmp_path), "status", "--porcelain"],
                                 capture_output=True, text=True, check=True).stdout
        assert ".fnrun" not in ignored and "functions/" in ignored


# -- samples -------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def test_the_readme_names_every_sample() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    samples = sorted(p.name for p in (REPO / "samples").iterdir() if p.is_dir())
    assert "payments" in samples
    assert [s for s in samples if f"`samples/{s}`" not in readme] == []


@pytest.mark.parametrize("written", ["payments/out/receipts.jsonl", "payments/.fnrun/state.db",
                                     "orders-brokers/out/fnrun.log",
                                     "shop/.fnrun/state.db", "hello/.fnrun/state.db"])
def test_what_running_a_sample_writes_is_ignored_by_git(written: str) -> None:
    inside = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--is-inside-work-tree"],
                            capture_output=True, text=True, check=False)
    if inside.stdout.strip() != "true":
        pytest.skip("not a git checkout")
    check = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", f"samples/{written}"],
                           check=False)
    assert check.returncode == 0, f"samples/{written} would show as untracked"
