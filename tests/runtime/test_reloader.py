"""The reloader, driven by scripted change sets against a real supervisor.

Real worker processes and a real SQLite file; only the file events are
scripted (STYLE: the watcher is the one thing faked). The pure pieces (the
watch filter, live settings, the reload line and the banner) are tested from
tables.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.memory import MemoryObjectSendStream
from watchfiles import Change

from runtime.cli.banner import render_banner, trigger_line
from runtime.events import Event
from runtime.pool.workerpool import WorkerPool
from runtime.project.manifest import function_fingerprint, load_project, load_settings
from runtime.project.registry import Diff
from runtime.project.reload_rules import SourceFilter, live_settings, reload_line
from runtime.project.reloader import Reloader, Result
from runtime.specs import Defaults, HttpSettings, Retention, Settings
from runtime.supervisor import Supervisor
from tests.runtime.procs import appended_lines

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

HANDLER = '''
import os, time

def handle(event, ctx):
    with open({log!r}, "a") as out:
        out.write(event.id + "\\n")
    time.sleep(float((event.data or {{}}).get("sleep", 0)))
    return {{"version": {version}}}
'''


def declare(name: str, topic: str, extra: str = "") -> str:
    return f"functions:\n  {name}:\n    handler: {name}.py:handle\n" \
           f"    triggers:\n      - event: {topic}\n{extra}"


class Rig:
    """A project folder, a running supervisor and a reloader fed by `changes`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.functions = root / "functions"
        self.functions.mkdir(parents=True)
        self.supervisor: Supervisor
        self.reloader: Reloader
        self.changes: MemoryObjectSendStream[set[tuple[Change, str]]]
        self.checked: list[str] = []

    async def check(self, pool: WorkerPool) -> str | None:
        """The real warm-up of a new version's pool, remembering which functions it tried."""
        self.checked.append(pool.spec.name)
        return await pool.warm()

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    def function(self, name: str, version: int, topic: str = "t.go", folder: str = "") -> None:
        """functions/[FOLDER/]NAME.yaml and .py; a folder keeps others from reloading."""
        self.write(f"functions/{folder}{name}.yaml", declare(name, topic))
        self.write(f"functions/{folder}{name}.py", self.code(version))

    def code(self, version: int) -> str:
        return HANDLER.format(version=version, log=str(self.root / "calls.log"))

    async def save(self, *paths: str) -> Result:
        """Tell the reloader these files changed; wait for the reload they cause."""
        before = self.reloader.reloads
        await self.changes.send({(Change.modified, str(self.root / p)) for p in paths})
        await until(lambda: self.reloader.reloads > before)
        assert self.reloader.last is not None
        return self.reloader.last

    async def version(self, name: str) -> Any:
        outcome = await self.supervisor.ingress.invoke(name, Event(type="t.go", source="tests"))
        assert outcome.ok, outcome.error
        assert isinstance(outcome.result, dict)
        return outcome.result["json"]["version"]

    def handled(self) -> list[str]:
        return [word for line in appended_lines(self.root / "calls.log") for word in line.split()]


async def until(predicate: Callable[[], Any], within: float = 20.0) -> Any:
    """Poll `predicate` until truthy, failing after `within` seconds."""
    with anyio.fail_after(within):
        while True:
            value = predicate()
            if value:
                return value
            await anyio.sleep(0.02)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = Rig(tmp_path / "proj")
    rig.function("echo", 1)
    settings = load_settings(rig.root, store=f"sqlite:///{tmp_path}/state.db", port=0)
    send, receive = anyio.create_memory_object_stream[set[tuple[Change, str]]](16)
    rig.changes = send
    rig.supervisor = Supervisor(settings, grace=5, handle_signals=False)
    rig.reloader = Reloader(
        rig.supervisor, settings, changes=receive, check=rig.check
    )
    stopped = anyio.Event()

    async def serve(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        await rig.supervisor.run(task_status=task_status)
        stopped.set()

    async with send, receive, anyio.create_task_group() as tg:
        await tg.start(serve)
        tg.start_soon(rig.reloader.run)
        try:
            yield rig
        finally:
            rig.supervisor.request_stop()
            with anyio.fail_after(20):
                await stopped.wait()
            tg.cancel_scope.cancel()


async def test_a_code_edit_is_served_by_new_workers(rig: Rig) -> None:
    assert await rig.version("echo") == 1
    rig.function("echo", 2)
    result = await rig.save("functions/echo.py")
    assert result.change == Diff(changed=("echo",))
    assert result.reasons == {"echo": "code"}
    assert rig.checked == ["echo"]  # new code is tried in a worker before it serves
    assert await rig.version("echo") == 2


async def test_a_declaration_edit_is_a_config_reload_and_rebinds_triggers(rig: Rig) -> None:
    assert rig.supervisor.ingress.targets("t.go") == ["echo"]
    rig.write("functions/echo.yaml", declare("echo", "t.other"))
    result = await rig.save("functions/echo.yaml")
    assert result.reasons == {"echo": "config"}
    assert rig.checked == []  # the code that runs already loaded: no trial start
    assert rig.supervisor.ingress.targets("t.go") == []
    assert rig.supervisor.ingress.targets("t.other") == ["echo"]


async def test_broken_yaml_keeps_the_last_good_version_and_shows_the_error(rig: Rig) -> None:
    assert await rig.version("echo") == 1
    rig.write("functions/echo.yaml", declare("echo", "t.go", "    timeout: [1\n"))
    result = await rig.save("functions/echo.yaml")
    assert result.errors and result.change == Diff()
    yaml_file = rig.functions / "echo.yaml"
    assert all(line.startswith(f"{yaml_file}:") for line in result.errors), result.errors
    detail = rig.supervisor.view.health_detail()
    assert detail["reload_error"].startswith(f"{yaml_file}:")
    assert await rig.version("echo") == 1
    assert rig.supervisor.ingress.targets("t.go") == ["echo"]
    rig.write("functions/echo.yaml", declare("echo", "t.go"))
    result = await rig.save("functions/echo.yaml")
    assert not result.errors
    assert rig.supervisor.view.health_detail()["reload_error"] is None


async def test_a_syntax_error_keeps_the_old_version(rig: Rig) -> None:
    assert await rig.version("echo") == 1
    rig.write("functions/echo.py", "def handle(event:\n")
    result = await rig.save("functions/echo.py")
    assert result.kept == ("echo",) and not result.errors
    # Found by loading the file in a worker, at the line and column of the caret.
    assert result.failed["echo"].startswith(f"{rig.functions / 'echo.py'}:1:11: SyntaxError")
    assert await rig.version("echo") == 1


async def test_an_import_error_keeps_the_old_version_serving(rig: Rig) -> None:
    # The old version keeps serving from its warm worker: invoke once first.
    assert await rig.version("echo") == 1
    rig.write("functions/echo.py", "import no_such_module_here\n" + rig.code(2))
    result = await rig.save("functions/echo.py")
    assert not result.errors
    assert result.change == Diff()
    assert "no_such_module_here" in result.failed["echo"]
    assert "no_such_module_here" in rig.supervisor.view.health_detail()["reload_error"]
    assert await rig.version("echo") == 1
    rig.function("echo", 3)
    result = await rig.save("functions/echo.py")
    assert result.change == Diff(changed=("echo",)) and not result.failed
    assert rig.supervisor.view.health_detail()["reload_error"] is None
    assert await rig.version("echo") == 3


async def test_a_new_function_that_cannot_import_is_not_served_and_its_events_wait(
    rig: Rig,
) -> None:
    rig.write("functions/bad.yaml", declare("bad", "t.bad"))
    rig.write("functions/bad.py", "raise RuntimeError('boom at import')\ndef handle(e): pass\n")
    result = await rig.save("functions/bad.py", "functions/bad.yaml")
    # echo does not import bad.py: it does not reload.
    assert result.change == Diff() and result.kept == ()
    assert result.failed["bad"] == f"{rig.functions / 'bad.py'}:1:1: RuntimeError: boom at import"
    assert rig.supervisor.serving().fingerprints.keys() == {"echo"}
    # Declared, so bound: its events are stored and wait for a version that loads.
    assert rig.supervisor.ingress.targets("t.bad") == ["bad"]
    [event] = [Event(type="t.bad", source="tests")]
    assert await rig.supervisor.ingress.publish([event])
    listing = {f["name"]: f for f in await rig.supervisor.view.functions_json()}
    assert listing["bad"]["load_error"] == result.failed["bad"]
    assert listing["echo"]["load_error"] is None
    assert rig.supervisor.view.health_detail()["load_errors"] == {"bad": result.failed["bad"]}
    # A save of another file does not try it again (nor log its error again).
    rig.checked.clear()
    rig.function("echo", 2)
    result = await rig.save("functions/echo.py")
    assert result.change == Diff(changed=("echo",)) and rig.checked == ["echo"]
    assert "bad" in rig.supervisor.view.health_detail()["load_errors"]
    rig.function("bad", 1, topic="t.bad")
    result = await rig.save("functions/bad.py")
    assert result.change == Diff(added=("bad",)) and not result.failed
    await until(lambda: event.id in rig.handled())
    assert rig.supervisor.view.health_detail()["load_errors"] == {}


async def test_a_bad_yaml_file_does_not_block_other_functions(rig: Rig) -> None:
    rig.function("other", 1, topic="t.other", folder="o/")
    await rig.save("functions/o/other.yaml")
    rig.write("functions/echo.yaml", declare("echo", "t.go", "    timeout: [1\n"))
    rig.function("fresh", 1, topic="t.fresh", folder="f/")
    rig.function("other", 2, topic="t.other", folder="o/")
    result = await rig.save("functions/echo.yaml", "functions/f/fresh.yaml", "functions/o/other.py")
    # The valid files apply; the bad one keeps echo at its last good version.
    assert result.change == Diff(added=("fresh",), changed=("other",))
    assert len(result.errors) == 1 and result.errors[0].startswith(f"{rig.functions}/echo.yaml:")
    assert await rig.version("echo") == 1 and await rig.version("other") == 2
    assert rig.supervisor.ingress.targets("t.go") == ["echo"]
    assert rig.supervisor.view.reload_error == result.errors[0]
    # A function first declared in a bad file stays out until the file is fixed.
    rig.write("functions/new.yaml", declare("new", "t.new", "    triggers: []\n"))
    rig.write("functions/new.py", rig.code(1))
    result = await rig.save("functions/new.yaml")
    assert "new" not in rig.supervisor.serving().fingerprints and len(result.errors) == 2
    rig.write("functions/new.yaml", declare("new", "t.new"))
    rig.write("functions/echo.yaml", declare("echo", "t.go"))
    result = await rig.save("functions/new.yaml", "functions/echo.yaml")
    assert result.change == Diff(added=("new",)) and not result.errors
    assert rig.supervisor.view.reload_error is None


async def test_only_functions_whose_files_changed_reload(rig: Rig) -> None:
    rig.write("functions/shared.py", "GREETING = 'hi'\n")
    rig.write("functions/uses.yaml", declare("uses", "t.uses"))
    rig.write("functions/uses.py", "from shared import GREETING\n" + rig.code(1))
    rig.function("plain", 1, topic="t.plain")
    result = await rig.save("functions/uses.yaml", "functions/plain.yaml")
    assert result.change == Diff(added=("plain", "uses"))
    rig.write("functions/shared.py", "GREETING = 'hello'\n")
    result = await rig.save("functions/shared.py")
    assert result.change == Diff(changed=("uses",)), "only the function importing it"
    rig.write("functions/unrelated.py", "X = 1\n")
    result = await rig.save("functions/unrelated.py")
    assert result.change == Diff()
    rig.function("plain", 2, topic="t.plain")
    result = await rig.save("functions/plain.py")
    assert result.change == Diff(changed=("plain",))


async def test_dropped_in_function_goes_live_and_deleted_one_keeps_its_deliveries(
    rig: Rig,
) -> None:
    rig.function("slow", 1, topic="t.slow", folder="slow/")
    result = await rig.save("functions/slow/slow.py", "functions/slow/slow.yaml")
    assert result.change == Diff(added=("slow",))
    events = [Event(type="t.slow", source="tests", data={"sleep": 0.2}) for _ in range(6)]
    assert all(await rig.supervisor.ingress.publish(events))
    await until(rig.handled)  # the first one is running
    for suffix in ("py", "yaml"):
        (rig.functions / f"slow/slow.{suffix}").unlink()
    result = await rig.save("functions/slow/slow.py", "functions/slow/slow.yaml")
    assert result.change == Diff(removed=("slow",))
    assert rig.supervisor.ingress.targets("t.slow") == []
    # The old version finishes what it runs and gives back what it had claimed.
    with anyio.fail_after(20):
        while (counts := (await rig.supervisor.store.counts())["slow"]).running:
            await anyio.sleep(0.02)
    assert counts.pending > 0, "the test needs deliveries left waiting"
    rig.function("slow", 2, topic="t.slow", folder="slow/")
    result = await rig.save("functions/slow/slow.py", "functions/slow/slow.yaml")
    assert result.change == Diff(added=("slow",))
    wanted = {e.id for e in events}
    await until(lambda: wanted <= set(rig.handled()))


async def test_fnrun_yaml_applies_defaults_live_and_asks_for_a_restart_for_the_port(
    rig: Rig,
) -> None:
    rig.write("fnrun.yaml", "defaults: {timeout: 7s}\nhttp: {port: 1}\n")
    result = await rig.save("fnrun.yaml")
    assert result.change == Diff(changed=("echo",))
    assert result.reasons == {"echo": "config"}
    assert rig.supervisor.project is not None
    assert rig.supervisor.project.functions["echo"].timeout == 7.0
    # The port came from a flag (port=0), so the file's port does not apply at all.
    assert result.restart == ()
    rig.write("fnrun.yaml", "defaults: {timeout: 7s}\nstore: sqlite:///elsewhere.db\n")
    result = await rig.save("fnrun.yaml")
    # The store came from a flag too; nothing else changed.
    assert result.change == Diff() and result.restart == ()


async def test_bad_fnrun_yaml_is_reported_at_its_position(rig: Rig) -> None:
    rig.write("fnrun.yaml", "defaults: {timeout: soon}\n")
    result = await rig.save("fnrun.yaml")
    assert len(result.errors) == 1
    assert result.errors[0].startswith(f"{rig.root / 'fnrun.yaml'}:1:")
    assert await rig.version("echo") == 1


async def test_a_burst_of_saves_coalesces_into_few_reloads(rig: Rig) -> None:
    before = rig.reloader.reloads
    for version in range(2, 12):
        rig.function("echo", version)
        await rig.changes.send({(Change.modified, str(rig.functions / "echo.py"))})
    spec = load_project(rig.supervisor.settings).functions["echo"]  # as the files are now
    # .get: a reload may read echo.yaml between its truncation and its write (the
    # scan runs in a thread), find no function there, and remove echo for a moment.
    new = function_fingerprint(spec)
    await until(lambda: rig.supervisor.serving().fingerprints.get("echo") == new)
    assert await rig.version("echo") == 11
    # Saves that land while a reload runs fold into the next one.
    assert 1 <= rig.reloader.reloads - before < 10


# -- pure pieces -----------------------------------------------------------------


FILTER_CASES = [
    ("functions/orders.py", True),
    ("functions/sub/orders.yaml", True),
    ("fnrun.yaml", True),
    ("functions", True),  # the folder itself appearing or going away
    ("other.yaml", False),
    ("functions/.orders.py.swp", False),
    ("functions/orders.py~", False),
    ("functions/.#orders.py", False),
    ("functions/#orders.py#", False),
    ("functions/4913", False),
    ("functions/__pycache__/orders.cpython-311.pyc", False),
    ("functions/.fnrun/state.db", False),
    ("functions/.hidden/x.py", False),
    ("functions/node_modules/x.py", False),
    (".fnrun/state.db-wal", False),
]


@pytest.mark.parametrize(("relative", "wanted"), FILTER_CASES)
def test_watch_filter(tmp_path: Path, relative: str, wanted: bool) -> None:
    accept = SourceFilter(tmp_path / "functions", tmp_path / "fnrun.yaml")
    assert accept(Change.modified, str(tmp_path / relative)) is wanted


def _settings(tmp_path: Path, **changes: Any) -> Settings:
    base = Settings(project=tmp_path, functions=tmp_path / "functions")
    return dataclasses.replace(base, **changes)


def test_live_settings_follow_the_file_unless_a_flag_overrides(tmp_path: Path) -> None:
    before = _settings(tmp_path)
    after = _settings(
        tmp_path, defaults=Defaults(timeout=5.0), retention=Retention(events=60.0),
        http=HttpSettings(port=9000, max_body=10), store="redis://127.0.0.1:6379/3",
    )
    applied, restart = live_settings(before, before, after)
    assert applied.defaults.timeout == 5.0 and applied.retention.events == 60.0
    assert applied.http.max_body == 10 and applied.http.port == 8080
    assert applied.store == before.store
    assert [line.split(" changed")[0] for line in restart] == [
        "fnrun.yaml: store", "fnrun.yaml: http.port",
    ]
    flagged = _settings(tmp_path, http=HttpSettings(port=7000), store="sqlite:///x.db")
    applied, restart = live_settings(flagged, before, after)
    assert restart == [] and applied.http.port == 7000 and applied.store == "sqlite:///x.db"


RELOAD_LINES = [
    (Diff(), {}, {}, "no function changed in 12 ms"),
    (Diff(), {}, {"fixed": True}, "errors fixed, no function changed in 12 ms"),
    (Diff(changed=("charge-card",), added=("send-mail",)), {"charge-card": "code"}, {},
     "reloaded charge-card (code), added send-mail in 12 ms"),
    (Diff(removed=("a", "b")), {}, {"kept": ("c",)},
     "removed a, b, kept the old version of c in 12 ms"),
    (Diff(), {}, {"down": ("d",)}, "cannot load d in 12 ms"),
    (Diff(added=("e",)), {}, {"errors": 2},
     "added e, left the files with 2 errors as they were in 12 ms"),
]


@pytest.mark.parametrize(("change", "reasons", "options", "line"), RELOAD_LINES)
def test_reload_line(change: Diff, reasons: dict[str, str], options: dict[str, Any],
                     line: str) -> None:
    assert reload_line(change, reasons, 12.3, **options) == line


def test_banner_lists_functions_triggers_urls_and_next_ticks(tmp_path: Path) -> None:
    listing: list[dict[str, Any]] = [
        {"name": "charge", "handler": "orders.py:charge", "triggers": [
            {"kind": "event", "pattern": "order.*", "start": "now"},
            {"kind": "webhook", "methods": ["POST"], "url": "http://127.0.0.1:8080/hooks/o",
             "mode": "async", "secret_env": "S"},
            {"kind": "schedule", "cron": "*/5 * * * *", "timezone": "Europe/Berlin",
             "next": "2026-01-01T10:05:00+01:00"},
        ]},
        {"name": "lonely", "handler": "l.py:h", "triggers": []},
    ]
    text = render_banner(listing, _settings(tmp_path))
    assert "charge  orders.py:charge" in text
    assert "event    order.*" in text
    assert "webhook  POST http://127.0.0.1:8080/hooks/o (async, signed)" in text
    assert "schedule */5 * * * * (Europe/Berlin), next 2026-01-01T10:05:00+01:00" in text
    assert "lonely" in text and "fnrun invoke" in text
    assert "\033[" not in text
    assert "\033[1m" in render_banner(listing, _settings(tmp_path), colour=True)
    assert trigger_line({"kind": "schedule", "cron": "0 0 30 2 *", "next": None}).endswith(
        "never fires again"
    )


def test_banner_shows_what_does_not_load(tmp_path: Path) -> None:
    listing: list[dict[str, Any]] = [
        {"name": "greet", "handler": "greet.py:handle", "triggers": [],
         "load_error": "/p/functions/greet.py:1:1: ModuleNotFoundError: No module named 'x'"},
        {"name": "fine", "handler": "fine.py:handle", "triggers": [], "load_error": None},
    ]
    text = render_banner(listing, _settings(tmp_path), errors=["/p/functions/b.yaml:2:3: bad"])
    assert ("  greet  greet.py:handle\n      (no triggers: run it with `fnrun invoke`)\n"
            "      does not load: /p/functions/greet.py:1:1: ModuleNotFoundError") in text
    assert text.count("does not load") == 1
    assert "1 error (the functions of these files are not loaded):\n" \
           "  /p/functions/b.yaml:2:3: bad" in text
    clean = render_banner(listing[1:], _settings(tmp_path))
    assert "error" not in clean and "save a fix" not in clean


@pytest.mark.parametrize(("host", "url"), [
    ("127.0.0.1", "http://127.0.0.1:43210"),
    ("::1", "http://[::1]:43210"),  # was http://::1:0, no port a browser could open
])
def test_banner_shows_where_the_supervisor_listens(tmp_path: Path, host: str, url: str) -> None:
    settings = _settings(tmp_path, http=HttpSettings(host=host, port=0))
    text = render_banner([], settings, served=HttpSettings(host=host, port=43210))
    assert f"  http   {url}  (health: /_/health" in text
