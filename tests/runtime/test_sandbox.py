"""The supervisor's side of worker isolation: what bubblewrap mounts, and the store's modes."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from runtime.errors import ManifestError, UsageError
from runtime.pool import sandbox
from runtime.project.settings_loader import load_settings
from tests.e2e.harness import wait_until

NOBODY = 65534


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """A readable file two levels under a 0700 folder (as /root/.pyenv/... is)."""
    locked = tmp_path / "locked"
    target = locked / "a" / "b"
    target.mkdir(parents=True)
    (target / "code.py").write_text("x = 1\n")
    (locked / "a" / "secret.txt").write_text("hidden\n")
    locked.chmod(0o700)
    (locked / "a").chmod(0o700)
    return locked, target


def test_reach_masks_the_topmost_blocked_folder_and_binds_back_only_the_target(
    tmp_path: Path,
) -> None:
    locked, target = _tree(tmp_path)
    blocked_above = [p for p in locked.parents if not sandbox._traversable(p, NOBODY, NOBODY)]
    mask = blocked_above[-1] if blocked_above else locked  # pytest's own 0700 folder, if any
    mounts = sandbox.reach([target], NOBODY, NOBODY)
    assert mounts[:2] == ["--tmpfs", str(mask)]
    assert mounts[-3:] == ["--bind", str(target), str(target)]
    made = [mounts[i + 1] for i, arg in enumerate(mounts) if arg == "--dir"]
    assert made == [str(p) for p in reversed(target.parents) if mask in p.parents]
    assert all(mounts[i - 2:i] == ["--perms", "0755"]
               for i, arg in enumerate(mounts) if arg == "--dir")
    # Nothing to do for what the user can already reach, or for a folder inside a bound one.
    assert sandbox.reach([Path("/usr/lib")], NOBODY, NOBODY) == []
    assert sandbox.reach([target, target / "code.py"], NOBODY, NOBODY) == mounts


def test_nobody_reads_the_target_and_nothing_else_through_those_mounts(tmp_path: Path) -> None:
    bwrap, setpriv = shutil.which("bwrap"), shutil.which("setpriv")
    if os.geteuid() != 0 or bwrap is None or setpriv is None:
        pytest.skip("needs root, bubblewrap and setpriv (CI has all three)")
    locked, target = _tree(tmp_path)
    mounts = sandbox.reach([target], NOBODY, NOBODY)

    def as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [bwrap, "--dev-bind", "/", "/", *mounts, "--", setpriv, f"--reuid={NOBODY}",
             f"--regid={NOBODY}", "--clear-groups", *command],
            capture_output=True, text=True, timeout=30)

    assert as_nobody("cat", str(target / "code.py")).stdout == "x = 1\n"
    hidden = as_nobody("cat", str(locked / "a" / "secret.txt"))
    assert hidden.returncode != 0 and "No such file" in hidden.stderr
    assert as_nobody("cat", str(target / "code.py")).returncode == 0
    denied = subprocess.run([setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}",
                             "--clear-groups", "cat", str(target / "code.py")],
                            capture_output=True, text=True, timeout=30)
    assert denied.returncode != 0  # without the namespace, the 0700 folder stops nobody


def _project(tmp_path: Path, store: str) -> Path:
    project = tmp_path / "proj"
    (project / "functions").mkdir(parents=True)
    (project / "fnrun.yaml").write_text(f"store: {store}\n")
    return project


def test_seal_store_closes_its_own_folder_and_its_files(tmp_path: Path) -> None:
    project = _project(tmp_path, "sqlite:///.fnrun/state.db")
    folder = project / ".fnrun"
    folder.mkdir(mode=0o755)
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (folder / name).write_bytes(b"")
        (folder / name).chmod(0o644)
    sandbox.seal_store(load_settings(project))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}


def test_seal_store_leaves_a_folder_that_holds_the_project_open(tmp_path: Path) -> None:
    project = _project(tmp_path, "sqlite:///state.db")
    (project / "state.db").write_bytes(b"")
    (project / "state.db").chmod(0o644)
    project.chmod(0o755)
    sandbox.seal_store(load_settings(project))
    assert stat.S_IMODE(project.stat().st_mode) == 0o755  # workers read their code here
    assert stat.S_IMODE((project / "state.db").stat().st_mode) == 0o600


def test_the_store_is_hidden_by_folder_or_by_file(tmp_path: Path) -> None:
    own = load_settings(_project(tmp_path / "a", "sqlite:///.fnrun/state.db"))
    (own.project / ".fnrun").mkdir()
    assert sandbox._hide_store(own, [own.project], [], []) == [
        "--tmpfs", str(own.project / ".fnrun"), "--remount-ro", str(own.project / ".fnrun")]
    shared = load_settings(_project(tmp_path / "b", "sqlite:///state.db"))
    (shared.project / "state.db").write_bytes(b"")
    (shared.project / "state.db-wal").write_bytes(b"")
    assert sandbox._hide_store(shared, [shared.project], [], []) == [
        "--ro-bind", "/dev/null", str(shared.project / "state.db"),
        "--ro-bind", "/dev/null", str(shared.project / "state.db-wal")]
    redis = load_settings(_project(tmp_path / "c", "redis://127.0.0.1:6379/0"))
    assert sandbox._hide_store(redis, [redis.project], [], []) == []


def test_without_bubblewrap_a_root_supervisor_names_what_nobody_cannot_reach(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("only a root supervisor drops its workers to another user")
    locked, _ = _tree(tmp_path)
    project = locked / "a" / "b" / "proj"
    (project / "functions").mkdir(parents=True)
    with pytest.raises(UsageError) as caught:
        sandbox.plan(load_settings(project), bwrap="/nonexistent/bwrap")
    message = str(caught.value)
    assert "'nobody'" in message and "install bubblewrap" in message.lower()
    assert "\n" not in message


def test_isolation_user_is_read_from_fnrun_yaml(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    assert load_settings(project).isolation.user == "nobody"
    (project / "fnrun.yaml").write_text("isolation: {user: fnrun-worker}\n")
    assert load_settings(project).isolation.user == "fnrun-worker"
    for text, words in (("isolation: {user: 'two words'}\n", "1:19: isolation.user"),
                        ("isolation: {user: 7}\n", "1:19: isolation.user must be a string"),
                        ("isolation: {group: x}\n", "1:13:")):
        (project / "fnrun.yaml").write_text(text)
        with pytest.raises(ManifestError) as caught:
            load_settings(project)
        assert words in str(caught.value), str(caught.value)


def test_configuring_a_sandbox_replaces_a_template_started_without_it(tmp_path: Path) -> None:
    from runtime.pool.launcher import FORK_SERVER

    try:
        FORK_SERVER.start()
        old = FORK_SERVER.pid
        assert old is not None
        confined = sandbox.Sandbox(confined=True, cwd=str(tmp_path))
        FORK_SERVER.configure(confined)
        assert FORK_SERVER.pid is None and FORK_SERVER.sandbox == confined
        FORK_SERVER.start()
        new = FORK_SERVER.pid
        assert new is not None and new != old
        # Right after exec, /proc/PID/cmdline can still read empty: wait for it.
        argv = wait_until(lambda: Path(f"/proc/{new}/cmdline").read_bytes()).split(b"\0")
        assert b"confine=1" in argv and any(b"enter(None, None)" in arg for arg in argv)
        assert Path(f"/proc/{new}/cwd").resolve() == tmp_path.resolve()
    finally:
        FORK_SERVER.stop()
    assert FORK_SERVER.sandbox == sandbox.NONE
