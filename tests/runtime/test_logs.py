"""The human log format of `fnrun dev`: handler lines readable, colour only on request."""

from __future__ import annotations

import logging
import re

import pytest

from runtime.logs import HumanFormatter


def record(name: str, msg: str, *args: object, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_handler_line_shows_function_invocation_and_text_plainly() -> None:
    line = HumanFormatter(colour=False).format(
        record("fnrun.fn.charge", "[%s %s] %s", "charge", "87159ea3ecbc", "INFO charging 42")
    )
    assert line.endswith("charge 87159ea3 INFO charging 42")
    assert "\033[" not in line


def test_supervisor_lines_have_no_invocation_column() -> None:
    line = HumanFormatter(colour=False).format(record("fnrun.reload", "added x in 3 ms"))
    assert line.endswith("reload added x in 3 ms")


@pytest.mark.parametrize(("text", "colour"), [
    ("ERROR card declined", "\033[31m"), ("WARNING slow", "\033[33m"),
])
def test_handler_levels_are_coloured_on_a_terminal(text: str, colour: str) -> None:
    line = HumanFormatter(colour=True).format(
        record("fnrun.fn.charge", "[%s %s] %s", "charge", "abc", text)
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
