"""Worker start-up helpers that run in the supervisor."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.errors import Where
from runtime.pool import process
from runtime.pool.launcher import Spawned
from runtime.specs import FunctionSpec


def test_compile_worker_writes_fresh_bytecode_even_when_python_would_not() -> None:
    """Under PYTHONDONTWRITEBYTECODE (set on CI) each worker would compile itself."""
    source = Path(process.source_files("runtime.worker.child")[-1])
    assert source.is_file()
    cached = Path(importlib.util.cache_from_source(str(source)))
    if cached.exists():
        os.utime(cached, (0, 0))  # make it look stale
    process.compile_worker.cache_clear()
    process.compile_worker()
    assert cached.exists()
    assert cached.stat().st_mtime >= source.stat().st_mtime


def test_compile_worker_covers_every_module_a_worker_imports() -> None:
    """A module missing from WORKER_MODULES is compiled from source by every worker."""
    code = ("import sys\n"
            "import runtime.worker.child, runtime.worker.forkserver, runtime.worker.confine\n"
            "print(' '.join(m for m in sys.modules if m.split('.')[0] == 'runtime'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=process.RUNTIME_ROOT, timeout=60, check=True).stdout
    # Each module with the packages it is in: compile_worker writes their __init__ too.
    covered = {module.rsplit(".", n)[0] for module in process.WORKER_MODULES
               for n in range(module.count(".") + 1)}
    assert set(out.split()) <= covered


@pytest.mark.parametrize(("code", "words"), [
    (0, "worker exited with code 0"),
    (3, "worker exited with code 3"),
    (-9, "worker died from signal SIGKILL"),
    (-200, "worker died from signal 200"),
    (None, "worker exited (status unknown: its fork server died)"),
])
def test_describe_exit_table(code: int | None, words: str) -> None:
    assert process.describe_exit(code) == words


def test_spawned_and_forked_workers_share_one_command_shape() -> None:
    """A forked worker gets `worker_options` after proto/lifeline, as a spawned one does."""
    spec = FunctionSpec(name="fn", where=Where(Path("f.yaml"), 1, 1),
                        handler_file=Path("/x/h.py"), handler_attr="run", memory_mb=64)
    command = process.child_command(spec, 7)
    assert command[:2] == [sys.executable, "-S"]
    assert "from runtime.worker.child import main" in command[3]
    assert command[4:] == ["proto=7", f"lifeline={process.lifeline()}",
                           *process.worker_options(spec)]
    assert process.worker_options(spec) == [
        "file=/x/h.py", "attr=run", "function=fn", "memory_mb=64"]
    assert process.child_path()[0] == process.RUNTIME_ROOT


def test_a_wait_that_times_out_raises_timeout_error() -> None:
    """Both handle kinds time out the same way, so `WorkerProcess.finish` treats them alike."""
    popen = subprocess.Popen([sys.executable, "-S", "-c", "import time; time.sleep(30)"],
                             stdout=subprocess.PIPE, start_new_session=True)
    handle = Spawned(popen)
    try:
        with pytest.raises(TimeoutError):
            handle.wait(0.05)
    finally:
        process.kill_group(handle.pid)
    assert handle.wait(5) == -signal.SIGKILL
    handle.output.close()
