"""Reading a project's files without trusting them (issue 17, points 6 and 7).

A project folder may hold anything: a FIFO named `x.yaml` (opening it for
reading waits for a writer forever), a link to `/dev/zero` (endless), a link
loop, a handler too deep for Python's parser. Every file fnrun reads to
validate a project goes through `read_regular`: it opens only regular files,
never blocks on open, and reads at most a stated number of bytes. Paths are
resolved by `resolve`, which turns a link loop into a ManifestError.
Handler sources are parsed with `ast` (user code is never run) by
`top_level_names`, whose parser failures (RecursionError on a 300,000-term
expression) become one line too.
"""

from __future__ import annotations

import ast
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from runtime.errors import ManifestError, Where

__all__ = ["MAX_SOURCE_BYTES", "read_regular", "resolve", "top_level_names"]

MAX_SOURCE_BYTES = 16 * 1024 * 1024
"""Largest handler source `fnrun validate` parses (16 MiB: far past any handler)."""

_KINDS = (
    (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words (`a FIFO (named pipe)`)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_regular(path: Path, limit: int, where: Where | None = None) -> bytes:
    """The bytes of the regular file `path` (links followed), at most `limit` of them.

    The file is checked before it is opened (a FIFO's open would block, a
    device's open may act), opened with O_NONBLOCK in case it was swapped
    since, and checked again on the open descriptor.

    Raises:
        ManifestError: at `where` (default `path`:1:1): the file is missing,
            unreadable, not a regular file, or larger than `limit` bytes.
    """
    at = where or Where(path, 1, 1)
    try:
        _check_regular(os.stat(path).st_mode, at)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ManifestError(at, f"cannot read: {_reason(exc)}") from None
    except ValueError as exc:  # a NUL in the path
        raise ManifestError(at, f"cannot read: {exc}") from None
    try:
        info = os.fstat(fd)
        _check_regular(info.st_mode, at)
        if info.st_size > limit:
            raise ManifestError(at, f"larger than {limit} bytes ({info.st_size} bytes)")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(limit + 1)
    except OSError as exc:
        raise ManifestError(at, f"cannot read: {_reason(exc)}") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # grew since fstat
        raise ManifestError(at, f"larger than {limit} bytes")
    return data


def _check_regular(mode: int, at: Where) -> None:
    if not stat.S_ISREG(mode):
        raise ManifestError(at, f"is {kind_of(mode)}, not a regular file")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def resolve(path: Path, where: Where | None = None) -> Path:
    """`path` with every link resolved (as `Path.resolve`), a loop refused.

    Raises:
        ManifestError: at `where` (default `path`:1:1) for a link loop, a name
            the system refuses (too long, a NUL) or one that is not text.
    """
    at = where or Where(path, 1, 1)
    try:
        return path.resolve()
    except RuntimeError:  # Python < 3.13 raises this for a loop
        raise ManifestError(at, "is a symbolic link loop") from None
    except OSError as exc:
        raise ManifestError(at, f"cannot be resolved: {_reason(exc)}") from None
    except ValueError as exc:
        raise ManifestError(at, f"has a bad path: {exc}") from None


def top_level_names(file: Path) -> set[str] | None:
    """Names a module binds at top level, read with `ast` (user code is never run).

    None means a star import hides them.

    Raises:
        ManifestError: the file cannot be read, is over MAX_SOURCE_BYTES, or
            does not parse (syntax, encoding, nesting past the parser's depth).
    """
    source = read_regular(file, MAX_SOURCE_BYTES)
    try:
        tree = ast.parse(source, filename=str(file))
    except SyntaxError as exc:
        # An unknown encoding cookie comes with offset -1: clamp to the line's start.
        where = Where(file, max(exc.lineno or 1, 1), max(exc.offset or 1, 1))
        raise ManifestError(where, f"syntax error: {exc.msg}") from None
    except ValueError as exc:  # null bytes, bad encoding cookie
        raise ManifestError(Where(file, 1, 1), f"cannot parse: {exc}") from None
    except (RecursionError, MemoryError):
        # CPython's parser recurses per nesting level (a+a+...+a counts):
        # python -c fails on such a file the same way.
        raise ManifestError(
            Where(file, 1, 1), "cannot parse: nested too deeply for Python's parser"
        ) from None
    return _bound_names(tree)


def _bound_names(tree: ast.Module) -> set[str] | None:
    names: set[str] = set()
    for node in _statements(tree.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.partition(".")[0])
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    # Module-level `if`/`try`/`with` blocks bind module names too
    # (`try: from fast import parse` / `except ImportError: def parse...`).
    # Iterative: Python's own nesting limit (100 blocks) bounds it anyway.
    stack = [iter(body)]
    while stack:
        node = next(stack[-1], None)
        if node is None:
            stack.pop()
            continue
        yield node
        if isinstance(node, ast.If | ast.With | ast.Try | ast.TryStar):
            parts = [node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])]
            parts += [handler.body for handler in getattr(node, "handlers", [])]
            stack.extend(iter(part) for part in reversed(parts))
