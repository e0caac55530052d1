"""Loading handlers in workers before they serve: at start, on reload, by `validate --load`.

A handler whose import fails (a missing package, an exception at import, a
name that is not callable) is found when its function starts, not when its
first event arrives. Each distinct load (same file, callable, environment
and memory limit) is tried once, in a worker of the function's own pool,
never in the supervisor. The error is put as `FILE:LINE:COL: message`, at
the deepest frame of the traceback inside the handler's folder, else at the
function's declaration.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from runtime.errors import Where
from runtime.specs import FunctionSpec

if TYPE_CHECKING:
    from runtime.pool.workerpool import WorkerPool

AT_ONCE = 1
"""Workers started at the same time to try handlers. One: with 4, two handlers of one
file failing to import at once lost one load error about half the time (its worker
reported "exited with code 1" instead, a race not yet found; see the session note)."""
FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line (?P<line>\d+)')


@dataclass(frozen=True)
class LoadFailure:
    """A version of a function whose handler does not load."""

    fingerprint: str
    """Of the version tried: the same files are not tried again until one changes."""
    line: str
    """`FILE:LINE:COL: message`."""


def locate(spec: FunctionSpec, error: str, traceback: str | None) -> str:
    """`FILE:LINE:COL: error`, at the failing line of the handler's own code if any.

    A traceback prints source lines without their indentation, so the column
    comes from the file (or, for a syntax error, from its caret line).
    """
    lines = (traceback or "").splitlines()
    folder = spec.handler_file.parent
    for index in range(len(lines) - 1, -1, -1):
        match = FRAME.match(lines[index])
        if match is None or not Path(match["file"]).is_relative_to(folder):
            continue
        file, number = Path(match["file"]), int(match["line"])
        caret = _caret(lines, index)
        return f"{Where(file, number, _column(file, number, caret))}: {error}"
    return f"{spec.where}: handler {spec.handler_file.name}:{spec.handler_attr}" \
           f" does not load: {error}"


def _caret(lines: Sequence[str], frame: int) -> int | None:
    """Offset of a syntax error's `^` within its (dedented) source line, if shown."""
    if frame + 2 < len(lines) and lines[frame + 2].strip().startswith("^"):
        source, marks = lines[frame + 1], lines[frame + 2]
        return marks.index("^") - (len(source) - len(source.lstrip()))
    return None


def _column(file: Path, number: int, caret: int | None) -> int:
    try:
        with file.open("rb") as source:
            for _ in range(number - 1):
                source.readline()
            text = source.readline(64 * 1024).decode("utf-8", "replace")
    except OSError:
        return 1 + (caret or 0)
    indent = len(text) - len(text.lstrip())
    return indent + 1 + max(0, caret or 0)


def load_key(spec: FunctionSpec) -> Hashable:
    """What decides whether a handler loads: functions sharing it are tried once."""
    return (spec.handler_file, spec.handler_attr, spec.memory_mb,
            tuple(sorted(spec.env.items())), spec.secrets)


async def warm_all(
    specs: Sequence[FunctionSpec],
    new_pool: Callable[[FunctionSpec], WorkerPool],
    check: Callable[[WorkerPool], Awaitable[str | None]],
) -> tuple[dict[str, WorkerPool], dict[str, str]]:
    """Try each distinct handler in a new pool: ({name: warm pool}, {name: error line}).

    The first function of each group keeps its warmed pool (its first
    invocation finds a worker ready); the others of a group that loads get
    none, and start their workers when work comes, as before.

    Args:
        check: starts a pool's first worker: the load error, or None.
    """
    groups: dict[Hashable, list[FunctionSpec]] = {}
    for spec in specs:
        groups.setdefault(load_key(spec), []).append(spec)
    pools: dict[str, WorkerPool] = {}
    failed: dict[str, str] = {}
    limiter = anyio.CapacityLimiter(AT_ONCE)

    async def warm(group: list[FunctionSpec]) -> None:
        pool = new_pool(group[0])
        async with limiter:
            error = await check(pool)
        if error is None:
            pools[group[0].name] = pool
            return
        failure = pool.load_failure
        traceback = failure.traceback if failure else None
        for spec in group:
            failed[spec.name] = locate(spec, error, traceback)
        await pool.aclose(grace=0)

    async with anyio.create_task_group() as tg:
        for group in groups.values():
            tg.start_soon(warm, group)
    return pools, failed


async def probe(specs: Sequence[FunctionSpec]) -> dict[str, str]:
    """Start each distinct handler in an isolated worker, as `fnrun run` does, and stop
    it: {function: error line} of those that do not load (`fnrun validate --load`)."""
    from runtime.pool.workerpool import WorkerPool  # the pool imports this module

    quiet = logging.getLogger("fnrun.probe")  # the errors are the caller's to print
    quiet.propagate = False
    quiet.addHandler(logging.NullHandler())
    pools, failed = await warm_all(
        specs, lambda spec: WorkerPool(spec, log=quiet), lambda pool: pool.warm()
    )
    for pool in pools.values():
        await pool.aclose(grace=0)
    return failed
