"""Store URLs fnrun cannot use are one line naming what is wrong, never a traceback."""

from __future__ import annotations

import os

import pytest

from tests.e2e.harness import Project, fnrun

pytestmark = pytest.mark.timeout(60)

TAKES = "fnrun takes redis://[USER:PASSWORD@]HOST:PORT/DB and no parameters"
BAD_URLS = {
    # redis-py raised TypeError (an unknown keyword) and ValueError: tracebacks
    "redis://127.0.0.1:6379/8?foo=bar":
        f"unknown parameter foo in store URL 'redis://127.0.0.1:6379/8?foo=bar': {TAKES}",
    "redis://127.0.0.1:6379/8?socket_timeout=abc":
        "unknown parameter socket_timeout in store URL "
        f"'redis://127.0.0.1:6379/8?socket_timeout=abc': {TAKES}",
    # redis-py took port 0 for 6379, an empty host for localhost: silently elsewhere
    "redis://127.0.0.1:0/8":
        "bad port 0 in store URL 'redis://127.0.0.1:0/8' (use a port from 1 to 65535, "
        "or leave it out)",
    "redis:///8": "no host in store URL 'redis:///8' (use redis://HOST:PORT/DB)",
    "rediss://127.0.0.1:6379/8#x": f"'#x' in store URL 'rediss://127.0.0.1:6379/8#x': {TAKES}",
}


@pytest.mark.parametrize("command", [["emit", "ping.x"], ["history"], ["run", "--port", "0"]],
                         ids=" ".join)
@pytest.mark.parametrize("url", sorted(BAD_URLS))
def test_a_store_url_fnrun_cannot_use_is_one_line(
    project: Project, command: list[str], url: str
) -> None:
    proc = fnrun(*command, "--store", url, "--project", str(project.root), check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr == f"fnrun: --store: {BAD_URLS[url]}\n"


def test_the_same_from_the_environment_names_fnrun_store(project: Project) -> None:
    env = {**os.environ, "FNRUN_STORE": "redis://127.0.0.1:6379/8?foo=bar"}
    proc = fnrun("history", "--project", str(project.root), check=False, env=env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("fnrun: FNRUN_STORE: unknown parameter foo in store URL")
    assert len(proc.stderr.splitlines()) == 1
