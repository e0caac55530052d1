"""The fnrun error tree: one root, one subtree per concern."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class FnrunError(Exception):
    """Root of every error fnrun raises on purpose."""


class UsageError(FnrunError):
    """A user mistake on the command line or in a request (one line, exit 2)."""


class NotFound(FnrunError):
    """A record asked for by id (a run, an event) is not stored, or no longer (exit 1)."""


@dataclass(frozen=True)
class Where:
    """A position in a source file, 1-based, as editors count."""

    file: Path
    line: int
    column: int

    def __str__(self) -> str:
        # A newline or escape in a file name must not break the one-line report.
        name = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(self.file))
        return f"{name}:{self.line}:{self.column}"


class ManifestError(FnrunError):
    """A declaration (YAML or handler) is invalid; reported as FILE:LINE:COL: message."""

    MAX_MESSAGE = 400
    """Longest message kept: one quoting a megabyte key stays one readable line."""

    def __init__(self, where: Where | None, message: str) -> None:
        if "\n" in message or "\r" in message:
            message = " ".join(message.split())
        if len(message) > self.MAX_MESSAGE:  # the middle goes: the end says what is wrong
            cut = len(message) - self.MAX_MESSAGE
            message = f"{message[:250]}...[{cut} characters]...{message[-150:]}"
        super().__init__(message)
        self.where = where
        self.message = message

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class ManifestErrors(FnrunError):
    """Several declaration errors found in one pass over a project."""

    def __init__(self, errors: list[ManifestError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


class StoreError(FnrunError):
    """The store cannot be opened or a store operation failed."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or written for now: Redis is down, SQLite is
    locked by another process or its disk failed. The same call may succeed
    later."""


class WorkerError(FnrunError):
    """A call reached a worker pool that was closed or retired (a crash, a timeout or
    a failed import is an invocation's outcome, not an exception)."""
