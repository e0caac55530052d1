"""Log setup for the supervisor: plain lines when piped, colour for `fnrun dev` on a tty."""

from __future__ import annotations

import logging
import sys

_COLOURS = {
    logging.DEBUG: "\033[2m",
    logging.INFO: "",
    logging.WARNING: "\033[33m",
    logging.ERROR: "\033[31m",
    logging.CRITICAL: "\033[1;31m",
}
_RESET = "\033[0m"


class _HumanFormatter(logging.Formatter):
    """Short time, function name in bold, level colour; for people at a terminal."""

    def __init__(self, colour: bool) -> None:
        super().__init__("%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        name = record.name.removeprefix("fnrun.fn.").removeprefix("fnrun.")
        line = f"{self.formatTime(record, self.datefmt)} {name:>14} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if not self.colour:
            return line
        return f"{_COLOURS.get(record.levelno, '')}{line}{_RESET}"


def configure(human: bool = False, level: int = logging.INFO) -> None:
    """Send fnrun's logs to stderr, readable for people when `human` is set."""
    handler = logging.StreamHandler(sys.stderr)
    if human:
        handler.setFormatter(_HumanFormatter(colour=sys.stderr.isatty()))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn", "uvicorn.error", "uvicorn.access", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
