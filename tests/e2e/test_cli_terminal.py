"""What `fnrun` prints for a person at a terminal: history that fits it, a question
before replaying everything, handler lines at their own level, and Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.harness import Project, fnrun, wait_until

pytestmark = pytest.mark.timeout(120)

FAILING = """
    functions:
      fail:
        handler: fail.py:fail
        triggers: [{event: "job.*"}]
        retry: false
        concurrency: 2
"""
FAILING_CODE = """
    import time

    def fail(event, ctx):
        record(event, ctx)
        time.sleep(event.data["sleep"])
        raise ValueError("this error message is long enough to need eliding " * 3)
"""


@pytest.fixture
def failed(project: Project) -> Project:
    """Three failed attempts in the history."""
    project.add("fail", FAILING, FAILING_CODE)
    project.start()
    for name, sleep in (("slow", 0.5), ("quick", 0), ("later", 0)):
        fnrun("emit", "job.run", "--id", name, "--data", json.dumps({"sleep": sleep}),
              cwd=project.root)

    def recorded() -> list[dict[str, object]] | None:
        history = json.loads(fnrun("history", "--json", cwd=project.root).stdout)
        return history if len(history) == 3 else None

    wait_until(recorded)
    return project


def test_history_fits_the_terminal_sorted_by_start_in_local_time(failed: Project) -> None:
    records = json.loads(fnrun("history", "--json", cwd=failed.root).stdout)
    zone = "Asia/Kathmandu"  # UTC+05:45: no chance of matching UTC by accident
    env = {**os.environ, "COLUMNS": "104", "TZ": zone}
    lines = fnrun("history", cwd=failed.root, env=env).stdout.splitlines()
    assert lines[0].split() == ["STARTED", "FUNCTION", "EVENT", "ATTEMPT", "OUTCOME",
                                "DURATION", "INVOCATION", "ERROR"]
    assert all(len(line) <= 104 for line in lines), lines
    ordered = sorted(records, key=lambda r: r["started"])
    shown_ids = [line.split("  fail ")[1].split()[0] for line in lines[1:]]
    assert shown_ids == [r["event_id"] for r in ordered]
    now = datetime.now(ZoneInfo(zone))
    for line, record in zip(lines[1:], ordered, strict=True):
        moment = datetime.fromisoformat(record["started"]).astimezone(ZoneInfo(zone))
        shown = moment.strftime("%H:%M:%S" if moment.date() == now.date() else "%b %d %H:%M:%S")
        assert line.startswith(f"{shown}  fail"), line
        assert line.endswith("\u2026") and "ValueError: this error message" in line
        assert record["invocation"] in line


def test_history_utc_shows_exact_times_and_a_pipe_gets_whole_errors(failed: Project) -> None:
    records = json.loads(fnrun("history", "--json", cwd=failed.root).stdout)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    lines = fnrun("history", "--utc", cwd=failed.root, env=env).stdout.splitlines()
    assert lines[0].startswith("STARTED (UTC)")
    assert sorted(line.split()[0] for line in lines[1:]) == sorted(
        r["started"] for r in records)
    assert all(line.endswith("need eliding") for line in lines[1:])  # not cut: no terminal


# -- replay everything -------------------------------------------------------------------

GREET = """
    functions:
      greet: {handler: greet.py:greet, triggers: [{event: greet.requested}]}
"""


@pytest.fixture
def greet(project: Project) -> Project:
    project.add("greet", GREET, "def greet(event, ctx):\n    record(event, ctx)\n")
    fnrun("emit", "greet.requested", "--id", "old", cwd=project.root)
    return project


def test_replay_without_since_off_a_terminal_names_all(greet: Project) -> None:
    proc = fnrun("replay", "--function", "greet", cwd=greet.root, check=False,
                 stdin=subprocess.DEVNULL)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == ("fnrun: replay --function greet without --since delivers every "
                           "retained event again: add --all to mean that, or --since 1h\n")
    assert fnrun("replay", "--function", "greet", "--all", cwd=greet.root).stdout.startswith(
        "replaying 1 event(s) to greet")


def on_a_terminal(project: Project, args: list[str], answer: bytes) -> tuple[int, str]:
    """Run fnrun with a pty as its terminal; answer its question; (exit code, all output)."""
    main, child = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "runtime", *args], cwd=project.root,
                            stdin=child, stdout=child, stderr=child, start_new_session=True)
    os.close(child)
    seen, deadline, answered = b"", time.monotonic() + 60, False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and seen.endswith(b"[y/N] "):
                os.write(main, answer)
                answered = True
        return proc.wait(timeout=30), seen.decode().replace("\r\n", "\n")
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()


def test_replay_without_since_on_a_terminal_asks_first(greet: Project) -> None:
    args = ["replay", "--function", "greet"]
    code, out = on_a_terminal(greet, args, b"n\n")
    assert code == 1
    assert out == ("Deliver every retained event (greet.requested) to greet again? [y/N] n\n"
                   "nothing replayed\n")
    code, out = on_a_terminal(greet, args, b"y\n")
    assert code == 0
    assert out.splitlines()[-1] == ("replaying 1 event(s) to greet "
                                    "(since 1970-01-01T00:00:00+00:00)")


# -- the supervisor's log ------------------------------------------------------------------

TALK = """
    functions:
      talk:
        handler: talk.py:talk
        triggers: [{event: talk}]
        retry: false
"""
TALK_CODE = """
    import sys, time

    def talk(event, ctx):
        ctx.log.info("said %s", event.id)
        ctx.log.error("shouted %s", event.id)
        print("to stdout")
        print("to stderr", file=sys.stderr)
        record(event, ctx)
        if event.id == "long":
            time.sleep(110)
"""


@pytest.fixture
def talk(project: Project) -> Project:
    project.add("talk", TALK, TALK_CODE)
    return project


def test_handler_lines_show_their_level_once_and_stderr_as_warning(talk: Project) -> None:
    talk.start()
    fnrun("emit", "talk", "--id", "hi", cwd=talk.root)
    wait_until(lambda: "to stderr" in talk.output())
    lines = {line.split(" ", 2)[2] for line in talk.output().splitlines()
             if "fnrun.fn.talk" in line}
    tag = re.compile(r"\[talk [0-9a-f]+\] ")
    assert {tag.sub("[talk ID] ", line) for line in lines} == {
        "INFO fnrun.fn.talk: [talk ID] said hi",
        "ERROR fnrun.fn.talk: [talk ID] shouted hi",
        "INFO fnrun.fn.talk: [talk ID] to stdout",
        "WARNING fnrun.fn.talk: [talk ID] to stderr",
    }


def test_first_ctrl_c_says_a_second_stops_at_once_and_it_does(talk: Project) -> None:
    proc = talk.start("--grace", "100")
    fnrun("emit", "talk", "--id", "long", cwd=talk.root)
    wait_until(lambda: talk.handled("talk").get("long"))
    proc.send_signal(signal.SIGINT)
    wait_until(lambda: "SIGINT received (Ctrl-C again stops at once)" in talk.output())
    assert proc.poll() is None  # still waiting for the running invocation (grace 100 s)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)  # well before the invocation (110 s) or the grace period ends
    assert "second SIGINT: stopping now" in talk.output()
    pending = json.loads(fnrun("ls", "--json", cwd=talk.root).stdout)[0]
    assert pending["pending"] + pending["running"] == 1  # retried on the next start
