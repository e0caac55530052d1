"""Which files a handler's code is made of: its file and the local modules it imports.

Hot reload restarts a function only when one of these changed (its
fingerprint hashes them), so saving one handler no longer restarts every
function of the folder. Found statically, with `ast`, before any code runs:
the supervisor never imports user code, the answer exists for a handler that
does not load, and it covers imports made inside functions, which a worker's
`sys.modules` after loading would miss. A module is local when it resolves
where the worker finds it first: the handler's folder, which the worker puts
at the front of `sys.path`. Dynamic imports (`importlib.import_module(name)`)
cannot be seen: saving the handler reloads such a function.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from runtime.errors import ManifestError
from runtime.project.projectfiles import MAX_SOURCE_BYTES, read_regular

MAX_FILES = 500
"""Most local modules followed from one handler (a bound on a pathological tree)."""
MAX_BYTES = MAX_SOURCE_BYTES
"""Larger files are not parsed for imports."""


def code_files(handler: Path) -> list[Path]:
    """The handler file and the local modules it imports, transitively, sorted.

    Args:
        handler: the handler's .py file; its folder is where imports resolve.
    """
    root = handler.parent
    found = {handler}
    queue = [handler]
    while queue and len(found) < MAX_FILES:
        current = queue.pop()
        for module in _imports(*_identity(current)):
            for file in _candidates(root, current, module):
                if file not in found and len(found) < MAX_FILES:
                    found.add(file)
                    queue.append(file)
    return sorted(found)


def _identity(file: Path) -> tuple[Path, int, int]:
    """(file, mtime_ns, size): the cache key, so an edited module is parsed again."""
    try:
        stat = file.stat()
    except OSError:
        return file, -1, -1
    return file, stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=4096)
def _imports(file: Path, mtime_ns: int, size: int) -> tuple[tuple[int, str], ...]:
    """(level, dotted name) of every import in `file`, also inside functions.

    `from a import b` yields both `a` and `a.b` (b may be a submodule).
    A file that cannot be read or parsed imports nothing (it is still hashed).
    """
    if size < 0 or size > MAX_BYTES:
        return ()
    try:  # regular files only: a FIFO named x.py must not hang a reload
        tree = ast.parse(read_regular(file, MAX_BYTES), filename=str(file))
    except (ManifestError, SyntaxError, ValueError, RecursionError, MemoryError):
        return ()
    return tuple(dict.fromkeys(_names(tree)))


def _names(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if base:
                yield node.level, base
            for alias in node.names:
                if alias.name != "*":
                    yield node.level, f"{base}.{alias.name}" if base else alias.name


def _candidates(root: Path, importer: Path, module: tuple[int, str]) -> Iterator[Path]:
    """The existing files `module` (imported by `importer`) may load, under `root`.

    An absolute import `a.b` loads a/__init__.py and a/b.py (or a/b/__init__.py);
    a relative one resolves against the importer's package folder.
    """
    level, name = module
    if level:
        base = importer.parent
        for _ in range(level - 1):
            base = base.parent
        if not base.is_relative_to(root):
            return
    else:
        base = root
    parts = [p for p in name.split(".") if p]
    for depth in range(1, len(parts) + 1):
        stem = base.joinpath(*parts[:depth])
        for file in (stem.with_name(stem.name + ".py"), stem / "__init__.py"):
            if file.is_file():
                yield file
