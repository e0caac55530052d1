"""Hot reload as a user sees it: `fnrun run --reload`, real file saves, real watchfiles."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import RECORDER, Project, fnrun, wait_until

pytestmark = pytest.mark.timeout(90)

DECL = """
functions:
  ver:
    handler: ver.py:handle
    triggers:
      - event: "v.*"
"""


def code(version: int) -> str:
    return f"def handle(event, ctx):\n    record(event, ctx, v={version})\n"


def versions_of(project: Project, ids: set[str]) -> set[int]:
    return {c["v"] for c in project.calls() if c["id"] in ids}


def served_version(project: Project, within: float = 10.0) -> int:
    """Publish one event and return the version of the code that handled it."""
    [event_id] = project.publish([{"type": "v.probe"}])
    found = wait_until(lambda: versions_of(project, {event_id}), timeout=within)
    return int(min(found))


def health(project: Project) -> dict[str, Any]:
    response = httpx.get(project.url("/_/health"), timeout=5)
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def started(project: Project, version: int = 1) -> Project:
    project.add("ver", DECL, code(version))
    project.start("--reload")
    assert served_version(project) == version
    return project


def test_a_save_is_served_without_a_restart(project: Project) -> None:
    # How fast is bench/'s business (reload scenario); here: that it happens.
    first = started(project).procs[-1]
    project.write("functions/ver.py", RECORDER + code(2))
    wait_until(lambda: served_version(project, within=10) == 2, timeout=30)
    assert "reloaded ver (code)" in project.output()
    assert first.poll() is None


BREAKAGES = {
    "yaml": ("functions/ver.yaml", "functions:\n  ver: {handler: ver.py:handle\n", "ver.yaml:"),
    "syntax": ("functions/ver.py", "def handle(event, ctx:\n", "ver.py:1:11: SyntaxError"),
    "import": ("functions/ver.py", "import no_such_module_xyz\n", "no_such_module_xyz"),
}


@pytest.mark.parametrize("kind", sorted(BREAKAGES))
def test_a_broken_save_keeps_the_old_version_serving(project: Project, kind: str) -> None:
    started(project)
    relative, text, shown = BREAKAGES[kind]
    good = (project.root / relative).read_text()
    project.write(relative, text if kind != "import" else text + good)
    error = wait_until(lambda: health(project)["reload_error"], timeout=10)
    assert shown in error
    assert served_version(project) == 1
    if kind == "import":  # only the running supervisor knows: `fnrun ls` asks it
        listing = fnrun("ls", "--project", str(project.root),
                        env={**os.environ, "FNRUN_PORT": str(project.port)})
        assert "handlers that do not load" in listing.stdout and shown in listing.stdout
        assert f"ver: {project.functions / 'ver.py'}:1:1: ModuleNotFoundError" in listing.stdout
    project.write(relative, good.replace("v=1", "v=3"))
    wait_until(lambda: health(project)["reload_error"] is None, timeout=10)
    wanted = 3 if relative.endswith(".py") else 1
    wait_until(lambda: served_version(project) == wanted, timeout=10)


def functions_listed(project: Project) -> set[str]:
    response = httpx.get(project.url("/_/functions"), timeout=5)
    return {f["name"] for f in response.json()}


def test_fnrun_new_is_live_at_once_and_a_deleted_function_goes_away(project: Project) -> None:
    started(project)
    fnrun("new", "greet", "--event", "greet.hello", "--project", str(project.root))
    wait_until(lambda: "greet" in functions_listed(project), timeout=5)
    [event_id] = project.publish([{"type": "greet.hello", "data": {"who": "you"}}])

    def greeted() -> bool:
        records = httpx.get(project.url("/_/invocations"), timeout=5).json()
        return any(r["event_id"] == event_id and r["outcome"] == "ok" for r in records)

    wait_until(greeted, timeout=10)
    for name in ("greet.py", "greet.yaml"):
        (project.functions / name).unlink()
    wait_until(lambda: "greet" not in functions_listed(project), timeout=5)
    assert "removed greet" in project.output()
    assert served_version(project) == 1


def test_a_functions_folder_removed_and_restored_is_watched_again(project: Project) -> None:
    started(project)
    saved = {p.name: p.read_text() for p in project.functions.iterdir() if p.is_file()}
    shutil.rmtree(project.functions)
    error = wait_until(lambda: health(project)["reload_error"], timeout=10)
    assert "does not exist" in error
    project.functions.mkdir()
    for name, text in saved.items():
        (project.functions / name).write_text(text.replace("v=1", "v=4"))
    # An empty folder is a valid project too: wait for the function to be back.
    wait_until(lambda: health(project)["reload_error"] is None, timeout=10)
    wait_until(lambda: "ver" in functions_listed(project), timeout=10)
    assert served_version(project) == 4
    # ... and the new folder is watched: a further save is served.
    (project.functions / "ver.py").write_text(saved["ver.py"].replace("v=1", "v=5"))
    wait_until(lambda: served_version(project, within=5) == 5, timeout=10)


class Load(threading.Thread):
    """Publishes `v.load` events steadily until stopped; remembers every acknowledged id."""

    def __init__(self, project: Project) -> None:
        super().__init__(daemon=True)
        self.project = project
        self.ids: list[str] = []
        self.stopping = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.ids += self.project.publish([{"type": "v.load"} for _ in range(5)])
                self.stopping.wait(0.02)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            self.failure = exc


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_twenty_edits_under_steady_load_lose_no_event(project: Project) -> None:
    started(project)
    load = Load(project)
    load.start()
    try:
        for version in range(2, 22):
            project.write("functions/ver.py", RECORDER + code(version))
            wait_until(lambda: version in {c["v"] for c in project.calls()}, timeout=15)  # noqa: B023
    finally:
        load.stopping.set()
        load.join(timeout=30)
    assert load.failure is None, load.failure
    published = set(load.ids)
    assert len(published) >= 100, "the load must overlap the edits"
    wait_until(lambda: published <= set(project.handled("ver")), timeout=60)
    assert project.output().count("reloaded ver (code)") >= 20 - 1


SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.mark.parametrize("name", ["hello", "shop"])
def test_samples_validate(name: str) -> None:
    out = fnrun("validate", "--project", str(SAMPLES / name)).stdout
    assert out.startswith("ok: ")


def test_the_shop_demo_runs_with_one_command(tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    shutil.copytree(SAMPLES / "shop", shop, ignore=shutil.ignore_patterns(".fnrun", "out"))
    demo = subprocess.run(
        [sys.executable, "demo.py"], cwd=shop, capture_output=True, text=True, timeout=80,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "CardDeclined: card ending 0000 declined for ord-1002" in demo.stdout
    receipts = (shop / "out" / "receipts.jsonl").read_text().splitlines()
    assert [json.loads(line)["to"] for line in receipts] == ["ada@example.com"]
