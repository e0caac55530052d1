"""The project's own checks, so the README's one test line runs them too (STYLE: Tooling)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def check(tool: str, *args: str) -> None:
    exe = BIN / tool if (BIN / tool).exists() else shutil.which(tool)
    if exe is None:
        pytest.fail(f"{tool} is not installed: pip install -e '.[test]'")
    proc = subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{tool} {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"


def test_ruff() -> None:
    # Named here too, so new code is held to them even if pyproject.toml's list shrinks:
    # a broad except logs what it swallows (BLE, S110), a noqa names a live rule (RUF100).
    check("ruff", "check", "--extend-select", "BLE,S110,RUF100", ".")


def test_mypy_strict() -> None:
    check("mypy")


def test_import_contracts() -> None:
    check("lint-imports")


def test_worker_child_imports_no_supervisor_code() -> None:
    """Starting a worker must never load supervisor code, anyio or yaml (SPEC 6, STYLE)."""
    code = (
        "import sys, runtime.worker.child; "
        "bad = [m for m in sys.modules if m.split('.')[0] in {'anyio', 'yaml', 'triggers', "
        "'starlette', 'uvicorn', 'redis'} or m in {'runtime.supervisor', "
        "'runtime.pool.workerpool', 'runtime.delivery.dispatcher', 'runtime.store', "
        "'runtime.project.manifest'}]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60, check=True).stdout
    assert out.strip() == "[]"
