"""Bad input on the command line: one clear line on stderr, a non-zero exit, no traceback."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from runtime.events import Event
from runtime.store.sqlite import SqliteStore
from tests.e2e.harness import Project, fnrun, wait_until

ECHO = """
    functions:
      echo: {handler: echo.py:handle, triggers: [{event: "ping.*"}]}
"""
ECHO_CODE = """
    def handle(event, ctx):
        record(event, ctx)
        return {"echo": event.data}
"""
MEMORY_CAP = 1024**3
"""Address space of a command under test that must not read a file to its end."""


@pytest.fixture
def echo(project: Project) -> Project:
    project.add("echo", ECHO, ECHO_CODE)
    return project


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def fnrun_capped(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """`fnrun ARGS` in a process that fails fast (MemoryError) if it reads without a bound."""
    return subprocess.run(
        [sys.executable, "-m", "runtime", *args, "--project", str(project.root)],
        capture_output=True, text=True, timeout=60, check=False, preexec_fn=_capped,
    )


def one_line(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def pending(project: Project) -> int:
    out = fnrun("ls", "--json", "--project", str(project.root)).stdout
    return sum(f["pending"] for f in json.loads(out))


@pytest.mark.parametrize("command", [["emit", "ping.x"], ["invoke", "echo"]])
def test_data_from_an_endless_file_stops_at_the_event_body_limit(
    echo: Project, command: list[str]
) -> None:
    proc = fnrun_capped(echo, *command, "--data", "@/dev/zero")
    assert one_line(proc) == ("fnrun: --data @/dev/zero: larger than 1 MiB "
                              "(http.max_body in fnrun.yaml)")
    assert pending(echo) == 0 and echo.calls() == []


def test_data_file_limit_follows_http_max_body(echo: Project) -> None:
    echo.write("fnrun.yaml", "http: {max_body: 16KiB}\n")
    exact = echo.root / "exact.json"
    exact.write_text('"' + "x" * (16 * 1024 - 2) + '"')
    over = echo.root / "over.json"
    over.write_text('"' + "x" * (16 * 1024 - 1) + '"')
    assert fnrun("emit", "ping.x", "--data", f"@{exact}", "--project", str(echo.root))
    proc = fnrun("emit", "ping.x", "--data", f"@{over}", "--project", str(echo.root),
                 check=False)
    assert one_line(proc) == (f"fnrun: --data @{over}: larger than 16 KiB "
                              "(http.max_body in fnrun.yaml)")
    assert pending(echo) == 1


def test_inline_data_over_http_max_body_is_refused_too(echo: Project) -> None:
    echo.write("fnrun.yaml", "http: {max_body: 100}\n")
    proc = fnrun("emit", "ping.x", "--data", json.dumps("y" * 100), "--project",
                 str(echo.root), check=False)
    assert one_line(proc) == "fnrun: --data: larger than 100 bytes (http.max_body in fnrun.yaml)"
    assert pending(echo) == 0


@pytest.mark.parametrize("command", [["emit", "ping.x"], ["invoke", "echo"]])
def test_data_from_a_directory_or_an_unreadable_file_is_one_line(
    echo: Project, command: list[str], tmp_path: Path
) -> None:
    folder = tmp_path / "a folder"
    folder.mkdir()
    proc = fnrun(*command, "--data", f"@{folder}", "--project", str(echo.root), check=False)
    assert one_line(proc) == f"fnrun: --data: cannot read {folder}: Is a directory"
    # Opens, then fails to read (even for root, which chmod 000 would not stop).
    proc = fnrun(*command, "--data", "@/proc/self/mem", "--project", str(echo.root),
                 check=False)
    assert one_line(proc) == "fnrun: --data: cannot read /proc/self/mem: Input/output error"
    assert pending(echo) == 0 and echo.calls() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "fnrun: the following arguments are required: COMMAND (see fnrun --help)"),
        (["nope"], "fnrun: argument COMMAND: invalid choice: 'nope' (choose from "),
        (["emit"], "fnrun: the following arguments are required: TYPE (see fnrun emit --help)"),
        (["history", "--limit", "abc"],
         "fnrun: argument --limit: invalid int value: 'abc' (see fnrun history --help)"),
        (["ls", "--port", "80.5"],
         "fnrun: argument --port: invalid int value: '80.5' (see fnrun ls --help)"),
        (["run", "--grace", "soon"], "fnrun: argument --grace: invalid float value: 'soon'"),
        (["new", "x", "--event", "a", "--cron", "* * * * *"],
         "fnrun: argument --cron: not allowed with argument --event (see fnrun new --help)"),
        (["dead-letters", "frob"], "fnrun: argument action: invalid choice: 'frob'"),
        (["replay"], "fnrun: the following arguments are required: --function "
                     "(see fnrun replay --help)"),
        (["ls", "--unknown"], "fnrun: unrecognized arguments: --unknown (see fnrun --help)"),
        (["invoke", "echo", "--data"], "fnrun: argument --data: expected one argument"),
    ],
)
def test_argument_errors_are_one_line_not_a_usage_dump(
    echo: Project, args: list[str], message: str
) -> None:
    proc = fnrun(*args, cwd=echo.root, check=False)
    assert one_line(proc).startswith(message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["emit", "ping.*"], "fnrun: event type 'ping.*' is not dot-separated segments of "
                             "letters, digits, '_' or '-' (at most 255 characters)"),
        (["emit", "order created"], "fnrun: event type 'order created' is not dot-separated"),
        (["emit", "ping..x"], "fnrun: event type 'ping..x' is not dot-separated"),
        (["emit", "ping.x\n"], "fnrun: event type 'ping.x\\n' is not dot-separated"),
        (["emit", "p" * 256], "fnrun: event type 'ppp"),
        (["invoke", "echo", "--type", "ping.**"], "fnrun: --type 'ping.**' is not dot-separated"),
        (["emit", "ping.x", "--id", "a\nb"],
         "fnrun: --id 'a\\nb' is not 1 to 255 printable characters"),
        (["emit", "ping.x", "--id", "i" * 256], "fnrun: --id 'iii"),
    ],
)
def test_event_types_and_ids_follow_what_ctx_emit_takes(
    echo: Project, args: list[str], message: str
) -> None:
    """A type no trigger pattern can match would be stored and delivered to nobody."""
    proc = fnrun(*args, "--project", str(echo.root), check=False)
    assert one_line(proc).startswith(message)
    assert pending(echo) == 0 and echo.calls() == []


def test_the_longest_event_type_and_id_ctx_emit_takes_are_taken(echo: Project) -> None:
    event_type, event_id = "ping." + "t" * 250, "i" * 255
    out = fnrun("emit", event_type, "--id", event_id, "--project", str(echo.root)).stdout
    assert out == f"{event_id}\n" and pending(echo) == 1


def test_new_with_an_empty_event_pattern_is_refused_not_defaulted(project: Project) -> None:
    """`--event "$TOPIC"` with TOPIC unset: say so, rather than subscribe to demo.hello."""
    proc = fnrun("new", "hello", "--event", "", "--project", str(project.root), check=False)
    assert one_line(proc) == "fnrun: --event: event pattern must not be empty"
    assert list(project.functions.iterdir()) == []


@pytest.fixture
def odd(tmp_path: Path) -> Project:
    """A project whose path has a space and letters beyond ASCII."""
    project = Project(tmp_path / "my prøject ü" / "中文")
    project.add("echo", ECHO, ECHO_CODE)
    return project


def test_a_project_path_with_spaces_and_unicode_works_end_to_end(odd: Project) -> None:
    root = str(odd.root)
    assert fnrun("emit", "ping.x", "--id", "e1", "--project", root).stdout == "e1\n"
    assert pending(odd) == 1
    out = fnrun("invoke", "echo", "--data", '{"k": "ü"}', "--project", root).stdout
    assert json.loads(out) == {"echo": {"k": "ü"}}
    assert fnrun("validate", "--project", root).stdout == f"ok: 1 function in {odd.functions}\n"
    assert (odd.root / ".fnrun" / "state.db").is_file()


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_output_a_terminal_cannot_encode_is_escaped_not_a_traceback(
    odd: Project, encoding: str
) -> None:
    """A non-UTF-8 locale (or PYTHONIOENCODING): shown escaped, as Python does on stderr."""
    def run(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "runtime", *args, "--project", str(odd.root)],
            capture_output=True, timeout=60, check=False,
            env={**os.environ, "PYTHONIOENCODING": encoding},
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.decode(encoding)

    shown = str(odd.functions).encode(encoding, "backslashreplace").decode(encoding)
    assert "\\u4e2d\\u6587" in shown
    assert run("validate") == f"ok: 1 function in {shown}\n"
    assert run("new", "hello").count("created ") == 2
    assert (odd.functions / "hello.py").is_file()


@pytest.mark.parametrize("name", ["true", "no", "off", "null"])
def test_new_with_a_name_yaml_reads_as_a_bool_or_null_writes_a_string_key(
    project: Project, name: str
) -> None:
    """`true:` unquoted is YAML's True: the scaffold failed its own validation."""
    out = fnrun("new", name, "--project", str(project.root)).stdout
    assert out.count("created ") == 2
    assert fnrun("validate", "--project", str(project.root)).stdout.startswith("ok: 1 function")
    out = fnrun("invoke", name, "--data", "[1]", "--project", str(project.root)).stdout
    assert json.loads(out) == {"ok": True, "function": name, "data": [1]}


def test_tables_show_control_characters_escaped_on_one_line(project: Project) -> None:
    """An id stored before ids were checked (POST /_/events took any) or by another
    writer of the store: `history` and `dead-letters list` must stay one row each and
    never pass an escape sequence on to the terminal."""
    project.add("boom", """
        functions:
          boom: {handler: boom.py:handle, triggers: [{event: "t.*"}], retry: false}
    """, """
        def handle(event, ctx):
            record(event, ctx)
            raise ValueError("no")
    """)
    store = f"sqlite:///{project.root / 'state.db'}"
    project.write("fnrun.yaml", f"store: {store}\n")
    project.start()
    event = Event(type="t.x", id="a\nb\x1b[31mc\u202e", source="t")

    async def publish() -> None:  # no producer takes such an id any more: write it as is
        async with SqliteStore(store) as writer:
            await writer.publish([(event, ["boom"])])

    anyio.run(publish)
    wait_until(lambda: json.loads(fnrun("dead-letters", "list", "--json", "--project",
                                        str(project.root)).stdout))
    shown = "a\\nb\\x1b[31mc\\u202e"
    for command in (["history"], ["dead-letters", "list"]):
        out = fnrun(*command, "--project", str(project.root)).stdout
        header, row = out.splitlines()
        assert f"  {shown}  " in row and "\x1b" not in out
        assert header.index("EVENT") == row.index(shown)


def test_emit_with_an_id_already_stored_says_nothing_new_was_published(echo: Project) -> None:
    """Ids are idempotent: a retry is fine (exit 0), but a reused id must not pass silently."""
    root = str(echo.root)
    first = fnrun("emit", "ping.a", "--id", "same", "--project", root)
    assert (first.stdout, first.stderr) == ("same\n", "")
    again = fnrun("emit", "ping.b", "--id", "same", "--data", "2", "--project", root)
    assert again.stdout == "same\n"
    assert again.stderr == "fnrun: event 'same' was already stored; nothing new was published\n"
    assert pending(echo) == 1


def test_data_file_with_a_utf8_byte_order_mark_is_read_as_post_events_reads_it(
    echo: Project,
) -> None:
    """Editors on Windows save one; RFC 8259 lets a parser ignore it, and the HTTP side does."""
    data = echo.root / "bom.json"
    data.write_bytes(b'\xef\xbb\xbf{"from": "notepad"}')
    out = fnrun("invoke", "echo", "--data", f"@{data}", "--project", str(echo.root)).stdout
    assert json.loads(out) == {"echo": {"from": "notepad"}}
