"""Planning how `fnrun run` confines its workers (SPEC 6), from the supervisor's side.

Three layers, each doing what only it can:

- **The user.** As root, workers run as `isolation.user` (default `nobody`)
  with no supplementary groups: the supervisor's `/proc` files, its signals
  and the store (folder 0700, file 0600, see `seal_store`) are another
  user's. As an ordinary user, workers keep that user.
- **A mount namespace** made by bubblewrap (`bwrap`, Debian's `bubblewrap`),
  around the fork server's template and every spawned worker: the SQLite
  store's folder (or, if it holds the project, its files) is covered by an
  empty tmpfs, so a handler cannot open it even as the supervisor's user.
  As root it also makes reachable what an unprivileged user could not reach
  through a 0700 folder (the interpreter under `/root/.pyenv`, a project in
  `/tmp/pytest-of-root`): the blocking folder is covered by a tmpfs holding
  only bind mounts of what workers need; everything else in it stays hidden.
- **The process itself** (`runtime.worker.confine`): no new privileges, not
  dumpable, and a Landlock domain of its own per worker.

Only the template and spawned workers pay for bubblewrap (once each); a
forked worker pays for `confine.seal` alone.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import UsageError
from runtime.pool.process import child_path
from runtime.specs import Settings
from runtime.store.sqlite_schema import SQLITE_PREFIX, path_of
from runtime.worker import confine

log = logging.getLogger("fnrun.sandbox")

PROBE_WAIT = 10.0
"""How long the one trial run of bubblewrap at start may take."""
STORE_SUFFIXES = ("", "-wal", "-shm", "-journal", ".lock")
"""The database file and those SQLite and `runtime.store.sqlite_lock` keep beside it."""


@dataclass(frozen=True)
class Sandbox:
    """How workers start: the wrapper command, the user to become, the folder to start in.

    The default is no confinement at all (library use, `fnrun invoke`).
    """

    confined: bool = False
    wrapper: tuple[str, ...] = ()
    """bubblewrap and its mounts, ending in `--`; empty without a namespace."""
    uid: int | None = None
    gid: int | None = None
    cwd: str | None = None
    """Where workers start, when the supervisor's own folder is out of their reach."""
    notes: tuple[str, ...] = field(default=(), compare=False)
    """What this sandbox does not give, for the log."""


NONE = Sandbox()


def plan(settings: Settings, bwrap: str | None = None) -> Sandbox:
    """The sandbox of this supervisor's workers (blocking: it tries bubblewrap once).

    Raises:
        UsageError: `isolation.user` is unknown or root, or, without
            bubblewrap, that user cannot reach the interpreter or project.
    """
    bwrap = bwrap or shutil.which("bwrap")
    uid = gid = None
    if os.geteuid() == 0:
        uid, gid = _user(settings.isolation.user)
    needed = sorted(set(_needed(settings)))
    masks = [] if uid is None else _masks(needed, uid, gid)
    exposed = _exposed(needed, masks)
    mounts = [*_expose(masks, exposed), *_hide_store(settings, needed, masks, exposed)]
    notes: list[str] = []
    wrapper: tuple[str, ...] = ()
    if bwrap is not None and mounts:
        wrapper = (bwrap, "--dev-bind", "/", "/", *mounts, "--")
        problem = _probe(wrapper)
        if problem:
            notes.append(f"bubblewrap cannot make a mount namespace here ({problem})")
            wrapper = ()
    elif mounts:
        notes.append("bubblewrap (bwrap) is not installed")
    if not wrapper and masks:
        raise UsageError(
            f"workers run as user {settings.isolation.user!r} (isolation.user), who cannot "
            f"reach {exposed[0]} through {masks[0]}: {'; '.join(notes)}. Install "
            "bubblewrap (apt-get install bubblewrap) or make the folder reachable")
    if not wrapper and mounts:
        notes.append("handlers running as the supervisor's user can open the store")
    abi = confine.landlock_abi()
    if abi < confine.SIGNAL_ABI:
        notes.append(f"Landlock ABI {abi} (6 needs Linux 6.12): handlers can signal "
                     + ("each other" if uid is not None else "the supervisor and each other"))
    cwd = os.getcwd() if _reaches(os.getcwd(), uid, gid, masks, exposed) else None
    return Sandbox(True, wrapper, uid, gid, cwd or str(settings.project), tuple(notes))


def seal_store(settings: Settings) -> None:
    """Close the SQLite store to other users: its file 0600, its own folder 0700.

    SQLite gives the -wal and -shm files the database file's mode. The
    folder is closed only when it is the store's own (like `.fnrun`), not
    when it also holds the project or the functions.
    """
    if not settings.store.startswith(SQLITE_PREFIX):
        return
    database = path_of(settings.store)
    for suffix in STORE_SUFFIXES:
        _tighten(Path(f"{database}{suffix}"), 0o600)
    if not _holds(database.parent, _needed(settings)):
        _tighten(database.parent, 0o700)


def _tighten(path: Path, mode: int) -> None:
    try:
        current = stat.S_IMODE(path.stat().st_mode)
        if current & ~mode:
            path.chmod(current & mode)
    except FileNotFoundError:
        pass


def _user(name: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UsageError(f"isolation.user {name!r} is not a user on this machine "
                         "(workers of a root supervisor run as that user)") from None
    if entry.pw_uid == 0:
        raise UsageError(f"isolation.user {name!r} is root: workers must run as an "
                         "unprivileged user")
    return entry.pw_uid, entry.pw_gid


def reach(paths: Iterable[Path], uid: int, gid: int | None) -> list[str]:
    """bubblewrap's mounts that let `uid`:`gid` reach `paths` through folders it cannot pass."""
    needed = sorted({Path(os.path.realpath(p)) for p in paths})
    masks = _masks(needed, uid, gid)
    return _expose(masks, _exposed(needed, masks))


def _needed(settings: Settings) -> list[Path]:
    """What workers must reach: the interpreter, `runtime`, the project and its functions."""
    places = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
              os.path.dirname(os.path.realpath(sys.executable)),
              str(settings.project), str(settings.functions), *child_path()}
    return [Path(os.path.realpath(p)) for p in places if p and os.path.exists(p)]


def _traversable(folder: Path, uid: int, gid: int | None) -> bool:
    try:
        info = folder.stat()
    except OSError:
        return False
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _masks(needed: Iterable[Path], uid: int, gid: int | None) -> list[Path]:
    """The topmost folder on the way to each needed path that `uid` cannot pass."""
    masks: set[Path] = set()
    for path in needed:
        for folder in reversed(path.parents):
            if not _traversable(folder, uid, gid):
                masks.add(folder)
                break
    return sorted(masks)


def _under(path: Path, folders: Iterable[Path]) -> bool:
    return any(path == folder or folder in path.parents for folder in folders)


def _exposed(needed: list[Path], masks: list[Path]) -> list[Path]:
    """The needed paths to bind back under a mask (none inside another)."""
    exposed: list[Path] = []
    for path in needed:  # sorted: a folder comes before what it holds
        if _under(path, masks) and not _under(path, exposed):
            exposed.append(path)
    return exposed


def _expose(masks: list[Path], exposed: list[Path]) -> list[str]:
    """bubblewrap's mounts: a tmpfs over each mask, the exposed paths bound back into it."""
    args: list[str] = []
    for mask in masks:
        args += ["--tmpfs", str(mask)]
        made: set[Path] = {mask}
        for path in (p for p in exposed if mask in p.parents):
            for folder in reversed(path.parents):
                if mask in folder.parents and folder not in made:
                    # bwrap would make these 0700: the user could not pass them.
                    args += ["--perms", "0755", "--dir", str(folder)]
                    made.add(folder)
            args += ["--bind", str(path), str(path)]
    return args


def _hide_store(
    settings: Settings, needed: list[Path], masks: list[Path], exposed: list[Path]
) -> list[str]:
    """Mounts that cover the SQLite store: an empty tmpfs on its folder, or /dev/null on its files.

    Where the folder holds what workers need, the files are covered one by
    one (those there now: a -journal made later is not).
    """
    if not settings.store.startswith(SQLITE_PREFIX):
        return []
    database = Path(os.path.realpath(path_of(settings.store)))
    folder = database.parent
    if _under(folder, masks) and not _under(folder, exposed):
        return []  # out of the workers' sight already
    if not _holds(folder, [*needed, Path(os.getcwd())]):
        return ["--tmpfs", str(folder), "--remount-ro", str(folder)]
    files = (f"{database}{suffix}" for suffix in STORE_SUFFIXES)
    return [arg for file in files if os.path.exists(file)
            for arg in ("--ro-bind", "/dev/null", file)]


def _holds(folder: Path, paths: Iterable[Path]) -> bool:
    return any(path == folder or folder in path.parents for path in paths)


def _reaches(place: str, uid: int | None, gid: int | None, masks: list[Path],
             exposed: list[Path]) -> bool:
    """Whether a worker can start in `place`."""
    path = Path(place)
    if uid is None:
        return True
    if _under(path, masks) and not _under(path, exposed):
        return False
    skeleton = [p for p in [path, *path.parents] if _under(p, masks) and not _under(p, exposed)]
    return all(_traversable(p, uid, gid) for p in [path, *path.parents] if p not in skeleton)


def _probe(wrapper: tuple[str, ...]) -> str | None:
    """Why bubblewrap cannot run here (no user namespaces, say); None if it can."""
    try:
        done = subprocess.run([*wrapper, "true"], capture_output=True, timeout=PROBE_WAIT,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode:
        return done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
    return None


def describe(sandbox: Sandbox) -> str:
    """One log line: what confines the workers."""
    who = "the supervisor's user" if sandbox.uid is None else f"uid {sandbox.uid}"
    where = "in a bubblewrap mount namespace" if sandbox.wrapper else "without a mount namespace"
    return f"workers run as {who}, {where}"
