"""The `fnrun` commands as a user types them: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import Project, fnrun, wait_until

ECHO = """
    functions:
      echo:
        handler: echo.py:handle
        triggers: [{event: "ping.*"}]
        retry: {max_attempts: 1}
      listener:
        handler: echo.py:listen
        triggers: [{event: pong}]
"""
ECHO_CODE = """
    def handle(event, ctx):
        record(event, ctx)
        if event.data and event.data.get("fail"):
            raise RuntimeError("asked to fail")
        ctx.emit("pong", {"echo": event.data})
        return {"echo": event.data, "attempt": ctx.attempt, "type": event.type}

    def listen(event, ctx):
        record(event, ctx)
"""


@pytest.fixture
def echo(project: Project) -> Project:
    project.add("echo", ECHO, ECHO_CODE)
    return project


def run(project: Project, *args: str, check: bool = True) -> str:
    return fnrun(*args, "--project", str(project.root), check=check).stdout


def test_invoke_prints_the_return_value_as_json(echo: Project) -> None:
    out = run(echo, "invoke", "echo", "--data", '{"n": 1}', "--type", "ping.x")
    assert json.loads(out) == {"echo": {"n": 1}, "attempt": 1, "type": "ping.x"}
    assert len(echo.calls()) == 1


def test_invoke_data_from_a_file(echo: Project) -> None:
    data = echo.write("data.json", '{"from": "file"}')
    out = run(echo, "invoke", "echo", "--data", f"@{data}")
    assert json.loads(out)["echo"] == {"from": "file"}


def test_invoke_data_from_a_file_that_is_not_utf8_is_one_line(echo: Project) -> None:
    data = echo.root / "latin1.json"
    data.write_bytes('"caf\xe9"'.encode("latin-1"))
    proc = fnrun("invoke", "echo", "--data", f"@{data}", "--project", str(echo.root),
                 check=False)
    assert proc.returncode == 2
    assert proc.stderr == f"fnrun: --data: {data} is not UTF-8 text: invalid continuation byte " \
                          "at byte 4\n"
    assert echo.calls() == []


def test_invoke_failure_exits_1_with_the_traceback(echo: Project) -> None:
    proc = fnrun("invoke", "echo", "--data", '{"fail": true}', "--project", str(echo.root),
                 check=False)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "RuntimeError: asked to fail" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["invoke", "nope"], "fnrun: no such function 'nope' (known: echo, listener)"),
        (["invoke", "echo", "--data", "{bad"], "fnrun: --data is not valid JSON"),
        (["invoke", "echo", "--data", "@/no/such/file"], "fnrun: --data: cannot read"),
        (["invoke", "echo", "--data", "@"], "fnrun: --data @FILE needs a file name after @"),
        (["invoke", "echo", "--data", "@/"], "fnrun: --data: cannot read /: Is a directory"),
        (["invoke", "echo", "--data", "NaN"],
         "fnrun: --data is not valid JSON: NaN is not a JSON value"),
        (["emit", "ping.x", "--data", '{"n": -Infinity}'],
         "fnrun: --data is not valid JSON: -Infinity is not a JSON value"),
        (["emit", "ping.x", "--data", "[" * 100_000], "fnrun: --data is not valid JSON"),
        (["emit", ""], "fnrun: event type must not be empty"),
        (["emit", "ping.x", "--id", ""], "fnrun: --id must not be empty"),
        (["invoke", "echo", "--type", " "], "fnrun: --type must not be empty"),
        (["replay", "--function", "nope"], "fnrun: no such function 'nope'"),
        (["history", "--function", "nope"],
         "fnrun: no such function 'nope' (known: echo, listener)"),
        (["dead-letters", "list", "--function", "ecoh"], "fnrun: no such function 'ecoh'"),
        (["dead-letters", "drop", "--function", "ecoh"], "fnrun: no such function 'ecoh'"),
        (["dead-letters", "replay", "42"], "fnrun: no such dead letter: 42"),
        (["dead-letters", "list", "42", "--function", "echo"],
         "fnrun: no such dead letter of function 'echo': 42"),
        (["ls", "--store", "redis://127.0.0.1:1/abc"],
         "fnrun: --store: bad Redis database 'abc' in store URL"),
        (["emit", "x", "--store", "redis://127.0.0.1:notaport/9"],
         "fnrun: --store: bad port in store URL"),
        (["history", "--store", "redis://[::1/9"], "fnrun: --store: bad store URL"),
        (["ls", "--store", "postgres://x/y"], "fnrun: --store: unknown store URL"),
        (["ls", "--store", "sqlite:///:memory:"], "fnrun: --store: bad SQLite store URL"),
        (["ls", "--store", "sqlite:///functions"], "fnrun: the SQLite store "),
        (["replay", "--function", "echo", "--since", "yesterday"], "fnrun: --since:"),
        (["replay", "--function", "echo", "--type", "a..b"], "fnrun: --type: bad event pattern"),
        (["dead-letters", "drop"], "fnrun: dead-letters drop needs IDs, --all or --function"),
        (["history", "--limit", "0"], "fnrun: --limit must be from 1 to 1000, got 0"),
        (["history", "--limit", "-3"], "fnrun: --limit must be from 1 to 1000, got -3"),
        (["history", "--limit", "99999999999999999999"], "fnrun: --limit must be from 1 to 1000"),
        (["replay", "--function", "echo", "--since", "2999-01-01"],
         "fnrun: --since: '2999-01-01' is in the future"),
        (["run", "--port", "70000"], "fnrun: --port must be a port number 0-65535, got 70000"),
        (["dev", "--port", "-1"], "fnrun: --port must be a port number 0-65535, got -1"),
        (["run", "--grace", "-5"], "fnrun: --grace must be 0 or more seconds, got -5"),
        (["dev", "--grace", "nan"], "fnrun: --grace must be 0 or more seconds, got nan"),
        (["new", "Bad_Name"], "fnrun: bad function name 'Bad_Name'"),
    ],
)
def test_user_mistakes_get_one_line_and_exit_2(
    echo: Project, args: list[str], message: str
) -> None:
    proc = fnrun(*args, "--project", str(echo.root), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_project_is_one_line(tmp_path: pytest.TempPathFactory) -> None:
    proc = fnrun("ls", "--project", "/definitely/not/here", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "fnrun: project folder /definitely/not/here does not exist"


@pytest.mark.parametrize("command", ["validate", "ls", "run", "invoke x"])
def test_a_missing_functions_folder_is_one_fnrun_line(project: Project, command: str) -> None:
    missing = project.root / "nowhere"
    proc = fnrun(*command.split(), "--functions", str(missing), "--project", str(project.root),
                 check=False)
    assert proc.returncode == 1
    assert proc.stderr == f"fnrun: functions folder {missing} does not exist\n"


def test_a_functions_folder_that_is_a_file_is_named_so(project: Project) -> None:
    a_file = project.write("notes.txt", "mine\n")
    proc = fnrun("validate", "--functions", str(a_file), "--project", str(project.root),
                 check=False)
    assert proc.returncode == 2
    assert proc.stderr == f"fnrun: functions folder {a_file} is a file, not a folder\n"


def test_validate_reports_every_error_with_its_position(project: Project) -> None:
    project.write("functions/a.yaml", """
        functions:
          Bad-Name: {handler: a.py:f}
          ok-one: {handler: a.py:missing}
    """)
    project.write("functions/a.py", "def f(event):\n    return 1\n")
    proc = fnrun("validate", "--project", str(project.root), check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{project.functions / 'a.yaml'}:2:3: ")
    assert lines[1].startswith(f"{project.functions / 'a.yaml'}:3:")


def test_validate_ok(echo: Project) -> None:
    assert run(echo, "validate").startswith("ok: 2 functions")


def test_emit_without_a_supervisor_waits_then_runs(echo: Project) -> None:
    event_id = run(echo, "emit", "ping.one", "--data", '{"k": "v"}', "--id", "my-id").strip()
    assert event_id == "my-id"
    listing = {f["name"]: f for f in json.loads(run(echo, "ls", "--json"))}
    assert listing["echo"]["pending"] == 1 and listing["listener"]["pending"] == 0
    echo.start()
    wait_until(lambda: len(echo.calls()) == 2)  # echo, then the emitted pong
    assert [c["fn"] for c in echo.calls()] == ["echo", "listener"]
    history = json.loads(run(echo, "history", "--json", "--function", "echo"))
    assert [(h["event_id"], h["outcome"]) for h in history] == [("my-id", "ok")]
    table = run(echo, "history")
    assert "my-id" in table and "OUTCOME" in table


def test_ls_shows_triggers_and_counts(echo: Project) -> None:
    table = run(echo, "ls")
    assert "echo" in table and "event ping.*" in table and "PENDING" in table
    listing = json.loads(run(echo, "ls", "--json"))
    assert [f["name"] for f in listing] == ["echo", "listener"]
    assert listing[0]["triggers"][0]["pattern"] == "ping.*"


def test_dead_letters_list_drop_and_replay_a_past_event(echo: Project) -> None:
    echo.start()
    run(echo, "emit", "ping.bad", "--data", '{"fail": true}', "--id", "doomed")
    wait_until(lambda: json.loads(run(echo, "dead-letters", "list", "--json")))
    [letter] = json.loads(run(echo, "dead-letters", "list", "--json"))
    assert letter["event"]["id"] == "doomed" and letter["attempts"] == 1
    assert "doomed" in run(echo, "dead-letters", "list")
    proc = fnrun("dead-letters", "drop", letter["id"], "nope", "--project", str(echo.root),
                 check=False)
    assert (proc.returncode, proc.stderr) == (2, "fnrun: no such dead letter: nope\n")
    assert len(json.loads(run(echo, "dead-letters", "list", "--json"))) == 1  # all or nothing
    assert "dropped 1" in run(echo, "dead-letters", "drop", letter["id"])
    assert json.loads(run(echo, "dead-letters", "list", "--json")) == []

    run(echo, "emit", "ping.good", "--id", "good")
    wait_until(lambda: echo.handled("echo").get("good") == 1)
    out = run(echo, "replay", "--function", "echo", "--since", "1h", "--type", "ping.good")
    assert out.startswith("replaying 1 event(s) to echo")
    wait_until(lambda: echo.handled("echo").get("good") == 2)


def test_new_scaffolds_a_function_that_validates_and_runs(project: Project) -> None:
    for args in (["hello", "--event", "greet.*"], ["tick", "--cron", "*/5 * * * *"],
                 ["hook", "--webhook", "/hooks/hook"]):
        out = run(project, "new", *args)
        assert "created" in out
    assert run(project, "validate").startswith("ok: 3 functions")
    assert json.loads(run(project, "invoke", "hello", "--data", '{"x": 1}'))["data"] == {"x": 1}
    proc = fnrun("new", "hello", "--project", str(project.root), check=False)
    assert proc.returncode == 2 and "already exists" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["taken"], "fnrun: function 'taken' already exists ({functions}/other.yaml:2:3)"),
        (["tick", "--cron", "not a cron"], "fnrun: --cron: bad cron expression 'not a cron'"),
        (["greet", "--event", "a..b"], "fnrun: --event: bad event pattern 'a..b'"),
        (["hook", "--webhook", "/a b"], "fnrun: --webhook: webhook path '/a b' must be"),
        (["hook", "--webhook", "/busy"], "fnrun: not created: the project would not validate: "
                                         "{functions}/other.yaml:2:53: webhook POST /busy is "
                                         "already declared by function 'hook'"),
        (["json"], "fnrun: function name 'json' would create json.py, which hides the Python "
                   "module 'json' from every handler"),
        (["runtime"], "fnrun: function name 'runtime' would create runtime.py"),
    ],
)
def test_new_refuses_what_would_break_the_project(
    project: Project, args: list[str], message: str
) -> None:
    project.write("functions/other.yaml", """
        functions:
          taken: {handler: other.py:f, triggers: [{webhook: /busy}]}
    """)
    project.write("functions/other.py", "def f(event):\n    pass\n")
    before = sorted(project.functions.iterdir())
    proc = fnrun("new", *args, "--project", str(project.root), check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith(message.format(functions=project.functions)), proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert sorted(project.functions.iterdir()) == before
    assert run(project, "validate").startswith("ok: 1 function")


def test_new_never_writes_through_a_link(project: Project) -> None:
    target = project.root / "outside.txt"
    (project.functions / "hello.py").symlink_to(target)  # dangling: exists() is False
    proc = fnrun("new", "hello", "--project", str(project.root), check=False)
    assert proc.returncode == 2
    assert proc.stderr == f"fnrun: {project.functions / 'hello.py'} already exists (a link); " \
                          "not overwritten\n"
    assert not target.exists() and not (project.functions / "hello.yaml").exists()


def test_new_with_a_functions_path_that_is_a_file(project: Project) -> None:
    not_a_folder = project.write("notes.txt", "mine\n")
    proc = fnrun("new", "hello", "--functions", str(not_a_folder), "--project",
                 str(project.root), check=False)
    assert proc.returncode == 2
    assert proc.stderr == f"fnrun: functions folder {not_a_folder} is a file, not a folder\n"
    assert not_a_folder.read_text() == "mine\n"


def test_run_on_a_busy_port_is_one_line(echo: Project) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = fnrun("run", "--port", str(port), "--project", str(echo.root), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fnrun: cannot listen on 127.0.0.1:{port}")


def test_run_with_a_broken_declaration_prints_it_and_exits_1(project: Project) -> None:
    project.write("functions/x.yaml", "functions:\n  x:\n    handler: x.py:f\n    timout: 3s\n")
    project.write("functions/x.py", "def f(event):\n    pass\n")
    proc = fnrun("run", "--project", str(project.root), check=False)
    assert proc.returncode == 1
    where = project.functions / "x.yaml"
    assert proc.stderr.strip().startswith(f"{where}:4:5: unknown key 'timout'")
    assert "Traceback" not in proc.stderr


def test_sync_webhook_calls_show_in_history(project: Project) -> None:
    project.add("hook", """
        functions:
          hook:
            handler: hook.py:handle
            triggers: [{webhook: {path: /hook, mode: sync}}]
    """, """
        def handle(event):
            if event.data.get("fail"):
                raise ValueError("no")
            return {"got": event.data}
    """)
    proc = project.start()
    assert httpx.post(project.url("/hook"), json={"n": 1}).json() == {"got": {"n": 1}}
    assert httpx.post(project.url("/hook"), json={"fail": True}).status_code == 500

    def listed() -> list[dict[str, object]]:
        return json.loads(run(project, "history", "--json", "--function", "hook"))

    history = wait_until(lambda: len(listed()) == 2 and listed())
    assert [(h["outcome"], h["attempt"]) for h in history] == [("error", 1), ("ok", 1)]
    assert history[0]["error"] == "ValueError: no"
    httpx.post(project.url("/hook"), json={"n": 2})
    assert project.stop(proc) == 0  # what is still queued is written on the way out
    assert len(listed()) == 3


@pytest.mark.parametrize("args", [["history"], ["history", "--json"], ["ls"], ["validate"]])
def test_a_closed_stdout_pipe_ends_quietly(echo: Project, args: list[str]) -> None:
    """`fnrun history | head -1`: the reader leaves; no traceback, the SIGPIPE exit code."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "runtime", *args, "--project", str(echo.root)],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
        )
    finally:
        os.close(write)
    assert proc.stderr == ""
    assert proc.returncode == 141


@pytest.mark.parametrize("since", ["99999999999999999d", "0001-01-01"])
def test_replay_since_further_back_than_time_means_everything(echo: Project, since: str) -> None:
    run(echo, "emit", "ping.old", "--id", "old")
    out = run(echo, "replay", "--function", "echo", "--since", since)
    assert out.startswith("replaying 1 event(s) to echo (since 1970-01-01T00:00:00+00:00)")


@pytest.mark.parametrize(
    "args", [["emit", "ping.\udcff"], ["history", "--function", "\udcff"],
             ["emit", "ping.x", "--subject", "caf\udce9"]],
)
def test_arguments_that_are_not_utf8_are_one_line(echo: Project, args: list[str]) -> None:
    """A Latin-1 byte on the command line (Python passes it on as a lone surrogate)."""
    argv = [os.fsencode(a) for a in (sys.executable, "-m", "runtime", *args)]
    proc = subprocess.run([*argv, b"--project", os.fsencode(echo.root)],
                          capture_output=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.decode().startswith("fnrun: argument '"), proc.stderr
    assert proc.stderr.decode().endswith("' is not valid UTF-8\n")
    assert json.loads(run(echo, "ls", "--json"))[0]["pending"] == 0


def test_a_bad_store_url_in_the_environment_is_named(echo: Project) -> None:
    env = {**os.environ, "FNRUN_STORE": "redis://127.0.0.1:1/zero"}
    proc = fnrun("ls", "--project", str(echo.root), check=False, env=env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("fnrun: FNRUN_STORE: bad Redis database 'zero'"), proc.stderr
    # --store wins over it (emit creates the store; ls only reads one that exists)
    run_env(echo, env, "emit", "ping.x", "--store", "sqlite:///other.db")
    assert run_env(echo, env, "ls", "--store", "sqlite:///other.db").startswith("FUNCTION")


def test_a_bad_store_url_in_fnrun_yaml_has_its_position(echo: Project) -> None:
    echo.write("fnrun.yaml", "http: {port: 8080}\nstore: redis://127.0.0.1:1/db9\n")
    proc = fnrun("history", "--project", str(echo.root), check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"{echo.root / 'fnrun.yaml'}:2:8: bad Redis database 'db9'")


def run_env(project: Project, env: dict[str, str], *args: str) -> str:
    return fnrun(*args, "--project", str(project.root), env=env).stdout


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_invoke_stops_it_and_its_worker(
    project: Project, sig: signal.Signals
) -> None:
    """Ctrl-C, `timeout`, a closed terminal: no traceback, 128+N, no worker left running."""
    project.add("slow", """
        functions:
          slow: {handler: slow.py:handle, timeout: 5m}
    """, """
        import time

        def handle(event, ctx):
            record(event, ctx)
            time.sleep(300)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime", "invoke", "slow", "--project", str(project.root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    worker = 0
    try:
        [call] = wait_until(project.calls)
        worker = call["pid"]
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 128 + sig
        assert "Traceback" not in err and out == ""
        wait_until(lambda: not _alive(worker), timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if worker and _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_history_of_a_removed_function_stays_listable(echo: Project) -> None:
    proc = echo.start()
    run(echo, "emit", "ping.one", "--id", "kept")
    wait_until(lambda: echo.handled("echo").get("kept") == 1)
    assert echo.stop(proc) == 0
    echo.write("functions/echo.yaml", """
        functions:
          listener: {handler: echo.py:listen, triggers: [{event: pong}]}
    """)
    history = json.loads(run(echo, "history", "--json", "--function", "echo"))
    assert [h["event_id"] for h in history] == ["kept"]


def test_replay_without_type_delivers_only_what_the_function_subscribes_to(
    echo: Project,
) -> None:
    run(echo, "emit", "ping.a", "--id", "for-echo")
    run(echo, "emit", "pong", "--id", "for-listener")
    out = run(echo, "replay", "--function", "listener", "--all")
    assert out.startswith("replaying 1 event(s) to listener")
    assert run(echo, "replay", "--function", "listener", "--type", "ping.*", "--all").startswith(
        "replaying 1 event(s) to listener"
    )
    counts = {f["name"]: f["pending"] for f in json.loads(run(echo, "ls", "--json"))}
    assert counts == {"echo": 1, "listener": 3}


def test_replay_to_a_function_without_event_triggers_needs_type(project: Project) -> None:
    project.add("hook", """
        functions:
          hook: {handler: hook.py:handle, triggers: [{webhook: /hook}]}
    """, "def handle(event):\n    pass\n")
    proc = fnrun("replay", "--function", "hook", "--project", str(project.root), check=False)
    assert proc.returncode == 2
    assert proc.stderr == ("fnrun: function 'hook' has no event triggers; say which events to "
                           "replay with --type PATTERN\n")
