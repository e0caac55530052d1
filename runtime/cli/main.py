"""The `fnrun` command: parsing (the grammar is `runtime.cli.options`) and the only place
errors become exit codes."""

from __future__ import annotations

import argparse
import io
import os
import shlex
import sys
from collections.abc import Sequence

from runtime.cli.options import Parser, build_parser
from runtime.errors import FnrunError, ManifestError, ManifestErrors, UsageError


def _options_first(parser: Parser, argv: Sequence[str]) -> None:
    """Options before the command (`fnrun --project X ls`) are named as such; argparse
    took X for the command and said "invalid choice: 'X'"."""
    if not argv or not argv[0].startswith("-") or argv[0] in ("-h", "--help", "--version"):
        return
    at = next((i for i, arg in enumerate(argv) if arg in parser.commands), None)
    order = ([argv[at], *argv[:at], *argv[at + 1:]] if at is not None
             else ["COMMAND", *argv])
    parser.error(f"options go after the command: fnrun {shlex.join(order)}")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `fnrun` console script and `python -m runtime`."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    _options_first(parser, argv)
    args = parser.parse_args(argv)
    from runtime.cli import commands  # after parsing, so --help stays fast

    if isinstance(sys.stdout, io.TextIOWrapper):
        # A path or message in a non-UTF-8 locale (or PYTHONIOENCODING=ascii) is shown
        # escaped, as Python shows it on stderr, rather than ending in UnicodeEncodeError.
        sys.stdout.reconfigure(errors="backslashreplace")

    try:
        _check_utf8(args)
        code = commands.run_command(args)
        sys.stdout.flush()  # here, so a closed pipe shows below, not at exit
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = _reader_left()
    except BaseException as exc:  # noqa: B036 - re-raised below unless it is ours
        error = _our_error(exc)
        if error is None:
            raise
        code = _report(error)
    sys.exit(code)


def _check_utf8(args: argparse.Namespace) -> None:
    """Refuse arguments that are not UTF-8 (Python keeps such bytes as lone surrogates,
    which fail later, deep in a store or an encoder, with a traceback)."""
    for value in vars(args).values():
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise UsageError(f"argument {text!r} is not valid UTF-8") from None


def _reader_left() -> int:
    """stdout's reader went away (`fnrun history | head -1`): stop quietly, as `cat` does.

    Python's own advice (docs: signal, "Note on SIGPIPE"): point stdout at
    devnull so the flush at exit cannot raise a second time.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # 128 + SIGPIPE, what a shell shows for a program killed by it


def _our_error(exc: BaseException) -> FnrunError | None:
    """The FnrunError behind `exc`, also when a task group wrapped it in a group."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, FnrunError) else None


def _report(error: FnrunError) -> int:
    """One line (or one per declaration error) on stderr; the exit code."""
    if isinstance(error, ManifestErrors | ManifestError):
        for each in error.errors if isinstance(error, ManifestErrors) else [error]:
            # FILE:LINE:COL: message, or (no position: a missing folder) fnrun: message
            print(each if each.where else f"fnrun: {each}", file=sys.stderr)
        return 1
    print(f"fnrun: {error}", file=sys.stderr)
    return 2 if isinstance(error, UsageError) else 1
