"""Log setup for the supervisor: plain lines when piped, colour for `fnrun dev` on a tty."""

from __future__ import annotations

import logging
import re
import sys
import zlib

_COLOURS = {
    logging.DEBUG: "\033[2m",
    logging.INFO: "",
    logging.WARNING: "\033[33m",
    logging.ERROR: "\033[31m",
    logging.CRITICAL: "\033[1;31m",
}
_DIM, _RESET = "\033[2m", "\033[0m"
_NAME_COLOURS = ("\033[36m", "\033[35m", "\033[34m", "\033[32m", "\033[96m", "\033[95m")
# What the pool logs for each line a handler writes: "[function invocation] text",
# at the line's level (ctx.log's own, WARNING for stderr, INFO for stdout).
_HANDLER_LINE = re.compile(r"\[(?P<fn>[^\s\]]+) (?P<inv>[^\s\]]+)\] (?P<text>.*)", re.S)


class HumanFormatter(logging.Formatter):
    """Short time, a column per function and invocation, level colours; for people."""

    def __init__(self, colour: bool) -> None:
        super().__init__(datefmt="%H:%M:%S")
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        name = record.name.removeprefix("fnrun.fn.").removeprefix("fnrun.")
        text, level, invocation = record.getMessage(), record.levelno, ""
        line = _HANDLER_LINE.fullmatch(text)
        if line is not None:
            name, invocation, text = line["fn"], line["inv"][:8], line["text"]
        else:  # fnrun's own: "reload skipped" under the name "reload" read "reload reload"
            text = text.removeprefix(f"{name} ")
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        when = self.formatTime(record, self.datefmt)
        if not self.colour:
            tag = f" {invocation}" if invocation else ""
            word = f"{record.levelname} " if level >= logging.WARNING else ""
            return f"{when} {name:>14}{tag} {word}{text}"
        hue = _NAME_COLOURS[zlib.crc32(name.encode()) % len(_NAME_COLOURS)]
        level_colour = _COLOURS.get(level, "")
        tag = f" {_DIM}{invocation}{_RESET}" if invocation else ""
        return (
            f"{_DIM}{when}{_RESET} {hue}{name:>14}{_RESET}{tag} "
            f"{level_colour}{text}{_RESET if level_colour else ''}"
        )


def configure(human: bool = False, level: int = logging.INFO) -> None:
    """Send fnrun's logs to stderr, readable for people when `human` is set."""
    handler = logging.StreamHandler(sys.stderr)
    if human:
        handler.setFormatter(HumanFormatter(colour=sys.stderr.isatty()))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn", "uvicorn.error", "uvicorn.access", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A line per finished run in `fnrun dev` (SPEC 11), not in `fnrun run`'s log.
    logging.getLogger("fnrun.runs").setLevel(logging.INFO if human else logging.WARNING)
