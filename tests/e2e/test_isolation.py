"""Handlers that attack: what `fnrun run` keeps out of their reach (SPEC 6).

A `spy` handler tries, from inside a real worker, to read the supervisor's
environment and memory, another function's secret (through that
function's live worker), FNRUN_TOKEN anywhere in /proc, to open the SQLite
store for reading and writing, and to signal the supervisor; it returns
what each attempt got. Every attempt must fail, and afterwards the
supervisor still serves and delivers.

The same attacks run twice: with the supervisor as root (workers drop to
`nobody`), and as an ordinary user (workers keep that user: only the
mount namespace, dumpable and Landlock stand between them).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime.pool import sandbox
from runtime.worker import confine
from tests.e2e.harness import Project, fnrun, free_port, wait_until

pytestmark = pytest.mark.timeout(120)

TEST_USER = "fnrun-iso-test"
TOKEN = f"token-{uuid.uuid4().hex}"
SECRET = f"victim-{uuid.uuid4().hex}"
LEAKS = {"PYTHON_API_TOKEN": f"py-{uuid.uuid4().hex}", "LC_SECRET": f"lc-{uuid.uuid4().hex}"}

SPY = '''
import os, signal, sqlite3

def attempt(action):
    try:
        return {"ok": True, "got": repr(action())[:200]}
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}

def mentions(value):
    """Every /proc/<pid>/environ and cmdline this worker can read that holds `value`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for name in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{name}", "rb") as file:
                    if value.encode() in file.read():
                        found.append(f"{pid}/{name}")
            except OSError:
                pass
    return found

def write_store(path):
    with open(path, "r+b") as file:
        file.write(b"x")

def append_store(path):
    with open(path, "ab") as file:
        file.write(b"x")

def sqlite_read(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    return db.execute("SELECT count(*) FROM sqlite_master").fetchall()

def sqlite_write(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS spy (x)")
    db.execute("INSERT INTO spy VALUES (1)")
    db.commit()
    return db.execute("SELECT count(*) FROM sqlite_master").fetchall()

def handle(event):
    sup, victim, store = event.data["sup"], event.data["victim"], event.data["store"]
    seen = {
        "uid": os.getuid(), "ppid": os.getppid(), "groups": os.getgroups(),
        "env": sorted(os.environ),
        "token in env": "FNRUN_TOKEN" in os.environ,
        "token seen": mentions(event.data["token"]),
        "secret seen": mentions(event.data["secret"]),
    }
    attacks = {
        "supervisor environ": lambda: open(f"/proc/{sup}/environ", "rb").read(),
        "supervisor mem": lambda: open(f"/proc/{sup}/mem", "rb").read(1),
        "victim environ": lambda: open(f"/proc/{victim}/environ", "rb").read(),
        "victim mem": lambda: open(f"/proc/{victim}/mem", "rb").read(1),
        "store folder": lambda: os.listdir(os.path.dirname(store)) or 1 / 0,
        "store read": lambda: open(store, "rb").read(16) or 1 / 0,
        "store write": lambda: write_store(store),
        "store append": lambda: append_store(store),
        "store new file": lambda: open(store + "-spy", "wb").close(),
        "sqlite read": lambda: sqlite_read(store),
        "sqlite write": lambda: sqlite_write(store),
    }
    for name, signum in (("SIGTERM", signal.SIGTERM), ("SIGKILL", signal.SIGKILL),
                         ("SIGSTOP", signal.SIGSTOP), ("signal 0", 0)):
        attacks[f"supervisor {name}"] = lambda signum=signum: os.kill(sup, signum)
    attacks["victim SIGKILL"] = lambda: os.kill(victim, signal.SIGKILL)
    seen["attacks"] = {name: attempt(action) for name, action in attacks.items()}
    return seen
'''

VICTIM = '''
import os

def handle(event):
    return {"pid": os.getpid(), "has secret": os.environ.get("VICTIM_SECRET") is not None}
'''

OK = '''
def handle(event, ctx):
    record(event, ctx)
'''


def _test_user() -> tuple[int, int]:
    """An ordinary user for the supervisor: made with useradd when missing."""
    try:
        entry = pwd.getpwnam(TEST_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            pytest.skip("useradd is not installed: no ordinary user to run the supervisor as")
        subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        TEST_USER], check=True, capture_output=True)
        entry = pwd.getpwnam(TEST_USER)
    return entry.pw_uid, entry.pw_gid


def _as_user_prefix(project: Path) -> list[str]:
    """Run the supervisor as the test user, with the interpreter and project in its reach.

    This venv's interpreter may sit under /root (0700) and the project under
    pytest's 0700 tmp folder: a bubblewrap mount namespace made as root
    exposes just those (the same helper the supervisor uses for its workers).
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.skip("bubblewrap is not installed (.ci/run installs it)")
    uid, gid = _test_user()
    for path in [project, *project.rglob("*")]:
        os.chown(path, uid, gid)
    paths = [Path(p) for p in (sys.prefix, sys.base_prefix, *sys.path) if p and os.path.exists(p)]
    mounts = sandbox.reach([*paths, project, Path(os.path.realpath(sys.executable)).parent],
                           uid, gid)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    return [bwrap, "--dev-bind", "/", "/", *mounts, "--", setpriv, f"--reuid={uid}",
            f"--regid={gid}", "--clear-groups", "--"]


def _start(project: Project, prefix: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FNRUN_TOKEN": TOKEN, "VICTIM_SECRET": SECRET, **LEAKS}
    with open(project.root / "supervisor.log", "wb") as out:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "runtime", "run", "--project", str(project.root),
             "--port", str(project.port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=project.root,
        )
    project.procs.append(proc)
    wait_until(lambda: proc.poll() is not None or project.healthy(), timeout=60)
    assert proc.poll() is None, (project.root / "supervisor.log").read_text()
    return proc


def _supervisor_pid(proc: subprocess.Popen[bytes]) -> int:
    """The supervisor's own pid: `proc` itself, or the python under bwrap and setpriv."""
    def python(pid: int) -> int | None:
        if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3] == [b"-m", b"runtime"]:
            return pid
        for child in _children(pid):
            found = python(child)
            if found:
                return found
        return None

    found = wait_until(lambda: python(proc.pid))
    return int(found)


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return children


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _assert_nothing_reached(seen: dict[str, Any], mode: str, prefix: list[str], sup: int) -> None:
    """Every attack the spy made failed, and it ran as the user it should."""
    succeeded = {name: r for name, r in seen["attacks"].items() if r["ok"]}
    assert succeeded == {}
    assert len(seen["attacks"]) == 16
    assert seen["token in env"] is False
    assert seen["token seen"] == [] and seen["secret seen"] == []
    assert seen["groups"] == []
    if mode == "root":
        assert seen["uid"] == pwd.getpwnam("nobody").pw_uid
    else:  # the same user: only the sandbox and Landlock stood in the way
        user = pwd.getpwnam(TEST_USER).pw_uid if prefix else os.geteuid()
        assert seen["uid"] == user
        status = Path(f"/proc/{sup}/status").read_text()
        assert f"Uid:\t{seen['uid']}\t" in status
        # Not dumpable: its /proc files belong to root, not to its own user.
        assert Path(f"/proc/{sup}/environ").stat().st_uid == 0 != seen["uid"]
    assert not set(LEAKS) & set(seen["env"])


@pytest.fixture(params=["root", "ordinary user"])
def attacked(
    request: pytest.FixtureRequest, project: Project
) -> Iterator[tuple[Project, str, list[str]]]:
    """The project the spy attacks from, the supervisor's user, and the command prefix."""
    if os.geteuid() != 0 and request.param == "root":
        pytest.skip("the supervisor is not root here (CI runs as root)")
    project.add("spy", """
        functions:
          spy:
            handler: spy.py:handle
            triggers: [{webhook: {path: /spy, mode: sync}}]
    """, SPY)
    # A variable read at interpreter start: this one's workers are spawned (in
    # bubblewrap, under `runtime.worker.confine.enter`), not forked from the template.
    project.add("spawnspy", """
        functions:
          spawnspy:
            handler: spawnspy.py:handle
            triggers: [{webhook: {path: /spawnspy, mode: sync}}]
            env: {PYTHONDONTWRITEBYTECODE: "1"}
    """, SPY)
    project.add("victim", """
        functions:
          victim:
            handler: victim.py:handle
            triggers: [{webhook: {path: /victim, mode: sync}}]
            secrets: [VICTIM_SECRET]
    """, VICTIM)
    project.add("ok", """
        functions:
          ok:
            handler: ok.py:handle
            triggers: [{event: still.works}]
    """, OK)
    prefix: list[str] = []
    if request.param == "ordinary user":
        if os.geteuid() == 0:
            prefix = _as_user_prefix(project.root)
        elif not shutil.which("bwrap"):
            pytest.skip("bubblewrap is not installed")
    yield project, request.param, prefix


def test_a_handler_reaches_nothing_that_is_not_its_own(
    attacked: tuple[Project, str, list[str]],
) -> None:
    project, mode, prefix = attacked
    if mode == "root":
        # The project sits under pytest's 0700 folder: workers as nobody still load it.
        assert stat.S_IMODE(project.root.parent.parent.parent.stat().st_mode) == 0o700
    proc = _start(project, prefix)
    sup = _supervisor_pid(proc)
    store = project.root / ".fnrun" / "state.db"
    with httpx.Client(timeout=30) as client:
        victim = client.post(project.url("/victim"), json={}).json()
        assert victim["has secret"] is True
        for spy in ("/spawnspy", "/spy"):
            seen = client.post(project.url(spy), json={
                "sup": sup, "victim": victim["pid"], "store": str(store),
                "token": TOKEN, "secret": SECRET}).json()
            print(f"\n{mode}, {spy}: the spy saw {json.dumps(seen)}")
            _assert_nothing_reached(seen, mode, prefix, sup)
            # The handler's parent is its worker's guard; the guard's, the template
            # (forked) or bubblewrap (spawned), itself the supervisor's child.
            guard = seen["ppid"]
            starter = int(Path(f"/proc/{guard}/stat").read_text().rpartition(")")[2].split()[1])
            argv = Path(f"/proc/{starter}/cmdline").read_bytes().split(b"\0")
            if spy == "/spy":
                assert any(b"runtime.worker.forkserver" in arg for arg in argv), argv
            else:
                assert argv[0].endswith(b"bwrap") and starter in _children(sup), argv
        # Unharmed: not stopped, it serves, delivers, and its store holds nothing of the spy's.
        assert "State:\tT" not in Path(f"/proc/{sup}/status").read_text()
        assert client.post(project.url("/victim"), json={}).json()["pid"] == victim["pid"]
        headers = {"authorization": f"Bearer {TOKEN}",
                   "content-type": "application/cloudevents+json"}
        event = {"specversion": "1.0", "source": "tests", "id": str(uuid.uuid4()),
                 "type": "still.works"}
        assert client.post(project.url("/_/events"), content=json.dumps(event),
                           headers=headers).status_code == 202
    wait_until(lambda: project.handled("ok")[event["id"]] == 1)
    assert not Path(f"{store}-spy").exists()
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert "deliveries" in tables and "spy" not in tables, tables
    assert proc.poll() is None
    os.kill(sup, signal.SIGTERM)  # itself: bwrap, if it runs under one, passes on no signal
    assert proc.wait(timeout=40) == 0


def test_the_environment_allowlist_matches_exact_names(project: Project) -> None:
    """PYTHON_API_TOKEN and LC_SECRET reach no worker, nor the template workers fork from."""
    project.add("envy", """
        functions:
          envy:
            handler: envy.py:handle
            triggers: [{webhook: {path: /envy, mode: sync}}]
    """, """
        import os

        def handle(event):
            return dict(os.environ)
    """)
    proc = _start(project, [])
    with httpx.Client(timeout=30) as client:
        env = client.post(project.url("/envy"), json={}).json()
    assert not set(LEAKS) & set(env)
    assert "FNRUN_TOKEN" not in env and "VICTIM_SECRET" not in env
    assert set(env) <= {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "VIRTUAL_ENV",
                        "PYTHONHOME", "PWD"}, env
    # Nor any process the supervisor started (the template's environment is readable
    # wherever its workers' are): root reads them all here.
    descendants = _descendants(proc.pid)
    assert descendants  # the template and the worker at least
    for pid in descendants:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
        for name, value in {**LEAKS, "FNRUN_TOKEN": TOKEN}.items():
            assert value.encode() not in environ, f"{name} in /proc/{pid}/environ"
    assert project.stop(proc) == 0


def test_the_supervisor_closes_its_store_to_other_users(project: Project) -> None:
    """The store's own folder 0700 and its file 0600 (SQLite gives -wal and -shm its mode)."""
    project.add("ok", """
        functions:
          ok:
            handler: ok.py:handle
            triggers: [{event: still.works}]
    """, OK)
    proc = _start(project, [])
    store = project.root / ".fnrun"
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert stat.S_IMODE((store / "state.db").stat().st_mode) == 0o600
    assert project.stop(proc) == 0


def test_an_unknown_or_root_isolation_user_is_one_line(project: Project) -> None:
    if os.geteuid() != 0:
        pytest.skip("isolation.user applies only when the supervisor is root")
    project.add("ok", """
        functions:
          ok:
            handler: ok.py:handle
            triggers: [{event: still.works}]
    """, OK)
    for user, words in (("no-such-user", "is not a user on this machine"),
                        ("root", "must run as an unprivileged user")):
        project.write("fnrun.yaml", f"isolation: {{user: {user}}}\n")
        done = fnrun("run", "--project", str(project.root), "--port", str(free_port()),
                     check=False)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], done.stderr
    project.write("fnrun.yaml", "isolation: {user: 'Bad User'}\n")
    done = fnrun("validate", "--project", str(project.root), check=False)
    assert done.returncode != 0
    assert "fnrun.yaml:1:" in done.stderr and "is not a user name" in done.stderr


def test_workers_seal_themselves_before_any_secret_exists() -> None:
    """Landlock's ABI here: 6 or more scopes signals (the README table's row)."""
    abi = confine.landlock_abi()
    print(f"\nLandlock ABI {abi}")
    if abi < confine.SIGNAL_ABI:
        pytest.skip(f"Landlock ABI {abi}: signals are not scoped on this kernel")
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            confine.seal()
            try:
                os.kill(os.getppid(), 0)
            except PermissionError:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # its signal to us was refused


def test_a_spawned_worker_in_bubblewrap_dies_with_its_timeout(project: Project) -> None:
    """The pool signals the worker under bubblewrap (its guard), not bubblewrap itself."""
    if not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed (.ci/run installs it)")
    project.add("stuck", """
        functions:
          stuck:
            handler: stuck.py:handle
            triggers: [{event: stuck.go}]
            timeout: 1s
            retry: false
            env: {PYTHONDONTWRITEBYTECODE: "1"}
    """, """
        import os, subprocess, time

        def handle(event, ctx):
            daemon = subprocess.Popen(["sleep", "300"], start_new_session=True)
            record(event, ctx, daemon=daemon.pid)
            time.sleep(300)
    """)
    proc = _start(project, [])
    headers = {"authorization": f"Bearer {TOKEN}",
               "content-type": "application/cloudevents+json"}
    event = {"specversion": "1.0", "source": "tests", "id": str(uuid.uuid4()), "type": "stuck.go"}
    assert httpx.post(project.url("/_/events"), content=json.dumps(event), headers=headers,
                      timeout=30).status_code == 202
    [call] = wait_until(project.calls)
    started = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in _descendants(proc.pid)]
    assert any(arg.startswith(b"/usr/bin/bwrap") or b"bwrap\0" in arg for arg in started)
    # Gone within timeout + 3 s: the handler's worker and the daemon it started.
    wait_until(lambda: not Path(f"/proc/{call['pid']}").exists()
               and not Path(f"/proc/{call['daemon']}").exists(), timeout=4 + 1)
    assert project.stop(proc) == 0
