"""Confining a process from inside: what a worker does to itself before a handler runs.

Standard library only (ctypes for the three system calls Python does not
wrap), so the fork server's template and a spawned worker can import it
before anything else. The supervisor plans the confinement from outside
(`runtime.pool.sandbox`: the user, the mount namespace); this module is the part
only the process itself can do:

- `drop`: the unprivileged user, with no supplementary groups (SPEC 6).
- `seal`: no new privileges (setuid programs do not raise a handler's
  rights), not dumpable (its `/proc/<pid>/environ` and `/mem` are closed to
  processes of the same user: a worker of another function), and a Landlock
  domain of its own. Landlock confines ptrace-style access (reading
  `/proc/<pid>/environ` or `/mem`) to the domain's own processes and their
  descendants (ABI 1), and, from ABI 6 (Linux 6.12), signals too: a handler
  cannot signal the supervisor, the template or another worker, whichever
  user they run as.

A template seals itself once and keeps a ruleset (`keep_ruleset`); each
worker it forks restricts itself with it (`nest`), which makes a new domain
nested in the template's: workers are siblings, so none can reach another.
No new privileges and not dumpable come with the fork. `nest` is one system
call (~20 us); sealing from scratch in each child cost ~300 us, mostly
first-touch page faults of the Python objects involved.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes

PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
SYS_LANDLOCK_CREATE_RULESET = 444
"""The Landlock calls have one number on every architecture (asm-generic)."""
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_ACCESS_FS_MAKE_BLOCK = 1 << 11
"""The one file-system right the domain handles: before ABI 6 a ruleset must handle
some right, and making block devices is one a handler has no use for."""
LANDLOCK_SCOPE_SIGNAL = 1 << 1
SIGNAL_ABI = 6

_libc: ctypes.CDLL | None = None
_kept: int | None = None
"""The ruleset fd a template keeps for the workers it forks (`nest`)."""


def _call(name: str, *args: object) -> int:
    """A libc function by name; the result, or -errno as a negative number."""
    global _libc
    import ctypes  # only a confined process pays for it (~2 ms, once per template)

    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    result = int(getattr(_libc, name)(*args))
    return result if result >= 0 else -ctypes.get_errno()


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where it has none (or it is disabled)."""
    return max(_call("syscall", SYS_LANDLOCK_CREATE_RULESET, None, 0,
                     LANDLOCK_CREATE_RULESET_VERSION), 0)


def undumpable() -> None:
    """Close this process's `/proc/<pid>/environ`, `/mem` and ptrace to its own user.

    Only processes with CAP_SYS_PTRACE (root, not a worker) can still read
    them. Lasts until exec.
    """
    _call("prctl", PR_SET_DUMPABLE, 0, 0, 0, 0)


def seal() -> int:
    """No new privileges, not dumpable, and a Landlock domain of its own.

    Returns the Landlock ABI the domain was made with (0: none; then only
    the user and dumpable stand between workers).

    Raises:
        OSError: the kernel refused no-new-privileges (never expected).
    """
    if _call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0:
        raise OSError("prctl(PR_SET_NO_NEW_PRIVS) failed")
    undumpable()
    abi = landlock_abi()
    ruleset = _ruleset(abi)
    if ruleset < 0:
        return 0
    try:
        done = _call("syscall", SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0)
    finally:
        os.close(ruleset)
    return abi if done == 0 else 0


def _ruleset(abi: int) -> int:
    """A Landlock ruleset fd: block devices, and signals from ABI 6; -1 without Landlock."""
    if not abi:
        return -1
    import ctypes

    scoped = LANDLOCK_SCOPE_SIGNAL if abi >= SIGNAL_ABI else 0
    # struct landlock_ruleset_attr {handled_access_fs, handled_access_net, scoped};
    # an older kernel takes the larger struct as long as what it does not know is 0.
    attr = (ctypes.c_uint64 * 3)(LANDLOCK_ACCESS_FS_MAKE_BLOCK, 0, scoped)
    return _call("syscall", SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr),
                 ctypes.sizeof(attr), 0)


def keep_ruleset() -> None:
    """In a sealed template: make the ruleset its forked workers `nest` with."""
    global _kept
    fd = _ruleset(landlock_abi())
    _kept = fd if fd >= 0 else None


def nest() -> None:
    """In a worker forked from a sealed template: a Landlock domain of its own.

    Without a kept ruleset (no Landlock), `seal` again: it does no harm.
    """
    global _kept
    if _kept is None:
        seal()
        return
    fd, _kept = _kept, None
    try:
        if _call("syscall", SYS_LANDLOCK_RESTRICT_SELF, fd, 0) < 0:
            raise OSError("landlock_restrict_self failed in a forked worker")
    finally:
        os.close(fd)


def drop(uid: int, gid: int) -> None:
    """Become `uid`:`gid` with no supplementary groups, for good (root only)."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)  # from root, a full switch: no way back, no capabilities left


def enter(uid: int | None, gid: int | None) -> None:
    """What a confined interpreter does first: drop to the user (if any), then `seal`."""
    import ctypes  # noqa: F401 - while root: the user may not reach the standard library

    if uid is not None and gid is not None:
        drop(uid, gid)
    seal()
