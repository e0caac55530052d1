"""Worker start-up helpers that run in the supervisor."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from runtime import process


def test_compile_worker_writes_fresh_bytecode_even_when_python_would_not() -> None:
    """Under PYTHONDONTWRITEBYTECODE (set on CI) each worker would compile itself."""
    source = Path(process.RUNTIME_ROOT) / "runtime" / "worker.py"
    cached = Path(importlib.util.cache_from_source(str(source)))
    if cached.exists():
        os.utime(cached, (0, 0))  # make it look stale
    process.compile_worker.cache_clear()
    process.compile_worker()
    assert cached.exists()
    assert cached.stat().st_mtime >= source.stat().st_mtime
