"""The human log format of `fnrun dev`: handler lines readable, colour only on request."""

from __future__ import annotations

import json
import logging
import re

import pytest

from runtime.cli.logs import HumanFormatter


def record(name: str, msg: str, *args: object, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_handler_line_shows_function_invocation_and_text_plainly() -> None:
    line = HumanFormatter(colour=False).format(
        record("fnrun.fn.charge", "[%s %s] %s", "charge", "87159ea3ecbc", "charging 42")
    )
    assert line.endswith("charge 87159ea3 charging 42")
    assert "\033[" not in line


def test_without_colour_warnings_and_errors_name_their_level() -> None:
    """stderr lines arrive as WARNING (the worker marks them): they must stand out."""
    line = HumanFormatter(colour=False).format(
        record("fnrun.fn.charge", "[%s %s] %s", "charge", "abc", "oops", level=logging.WARNING)
    )
    assert line.endswith("charge abc WARNING oops")


def test_a_supervisor_line_does_not_repeat_its_name() -> None:
    """`fnrun dev` printed `reload reload skipped: 1 error`."""
    line = HumanFormatter(colour=False).format(
        record("fnrun.reload", "reload skipped: 1 error; still serving the last good version",
               level=logging.ERROR)
    )
    assert line.split(None, 1)[1] == ("reload ERROR skipped: 1 error; "
                                      "still serving the last good version")


def test_supervisor_lines_have_no_invocation_column() -> None:
    line = HumanFormatter(colour=False).format(record("fnrun.reload", "added x in 3 ms"))
    assert line.endswith("reload added x in 3 ms")


@pytest.mark.parametrize(("text", "level", "colour"), [
    ("card declined", logging.ERROR, "\033[31m"), ("slow", logging.WARNING, "\033[33m"),
])
def test_handler_levels_are_coloured_on_a_terminal(text: str, level: int, colour: str) -> None:
    line = HumanFormatter(colour=True).format(
        record("fnrun.fn.charge", "[%s %s] %s", "charge", "abc", text, level=level)
    )
    assert f"{colour}{text}\033[0m" in line


def test_each_function_keeps_one_colour() -> None:
    fmt = HumanFormatter(colour=True)

    def hue(function: str, invocation: str) -> str:
        line = fmt.format(record(f"fnrun.fn.{function}", "[%s %s] %s", function, invocation, "x"))
        found = re.search(r"(\033\[[0-9;]+m) *" + function + "\033", line)
        assert found is not None, line
        return found[1]

    assert hue("charge", "1") == hue("charge", "2")
    assert len({hue(name, "1") for name in ("a", "b", "c", "d", "e", "f", "g")}) > 1


def run_record(status: str = "ok", error: str | None = None) -> logging.LogRecord:
    from runtime.store.base import RunRecord

    run = RunRecord(invocation="3f2a9c1b77aa", event_id="0193a4b2-7c1d-7e5f-9a1b-3f2a9c1b7d4e",
                    event_type="greet.requested", function="greet", attempt=1, status=status,
                    started=0.0, duration=0.012, error=error, traceback=None, result=None,
                    emitted=(), logs=(), seq=0)
    rec = record("fnrun.runs", "run %s", "3f2a9c1b77aa")
    rec.run = run
    return rec


def test_fnrun_dev_prints_one_line_per_finished_run() -> None:
    line = HumanFormatter(colour=False).format(run_record())
    assert line.split(None, 1)[1].split() == [
        "greet", "3f2a9c1b", "greet.requested", "9c1b7d4e", "ok", "12", "ms"]
    failed = HumanFormatter(colour=False).format(run_record("error", "KeyError: 'name'\nmore"))
    assert failed.endswith("greet.requested  9c1b7d4e  error  12 ms  KeyError: 'name'")
    assert " WARNING " in failed


def test_json_lines_name_function_invocation_and_event() -> None:
    from runtime.cli.logs import JsonFormatter

    fmt = JsonFormatter()
    run = json.loads(fmt.format(run_record()))
    assert (run["logger"], run["level"], run["function"], run["invocation"], run["event_id"]) == (
        "fnrun.runs", "info", "greet", "3f2a9c1b77aa", "0193a4b2-7c1d-7e5f-9a1b-3f2a9c1b7d4e")
    handler = json.loads(fmt.format(
        record("fnrun.fn.charge", "[%s %s] %s", "charge", "87159ea3ecbc", "charging\n42")))
    assert (handler["function"], handler["invocation"], handler["message"]) == (
        "charge", "87159ea3ecbc", "charging\n42")
    assert set(handler) >= {"time", "level", "logger", "message"}
