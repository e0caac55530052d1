"""With `--port 0` the supervisor tells the port it got: in its log, its banner and
`GET /_/functions`, whose webhook URLs said `:0`."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import httpx
import pytest

from tests.e2e.harness import Project, wait_until

pytestmark = pytest.mark.timeout(60)

HOOK = """
    functions:
      hook:
        handler: hook.py:handle
        triggers: [{webhook: {path: /hooks/in}}]
"""
HOOK_CODE = """
    def handle(event, ctx):
        record(event, ctx)
"""


def start(project: Project, command: str, host: str) -> subprocess.Popen[bytes]:
    """`fnrun COMMAND --port 0` (the harness's `start` picks a port itself)."""
    with open(project.root / f"supervisor-{len(project.procs)}.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", command, "--project", str(project.root),
             "--host", host, "--port", "0"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    project.procs.append(proc)
    return proc


def shown(project: Project, pattern: str) -> re.Match[str]:
    match: re.Match[str] = wait_until(lambda: re.search(pattern, project.output()), timeout=20)
    return match


def test_run_on_port_0_logs_and_lists_the_port_it_listens_on(project: Project) -> None:
    project.add("hook", HOOK, HOOK_CODE)
    start(project, "run", "127.0.0.1")
    port = int(shown(project, r"ready: 1 functions, serving http://127\.0\.0\.1:(\d+)")[1])
    assert port != 0
    [hook] = httpx.get(f"http://127.0.0.1:{port}/_/functions", timeout=5).json()
    assert hook["triggers"][0]["url"] == f"http://127.0.0.1:{port}/hooks/in"
    answer = httpx.post(hook["triggers"][0]["url"], json={"n": 1}, timeout=5)
    assert answer.status_code == 202


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1) here")
def test_the_dev_banner_shows_the_real_port_and_an_ipv6_host_in_brackets(
    project: Project,
) -> None:
    project.add("hook", HOOK, HOOK_CODE)
    start(project, "dev", "::1")
    port = int(shown(project, r"  http   http://\[::1\]:(\d+)  \(health")[1])
    assert port != 0
    shown(project, rf"webhook  POST http://\[::1\]:{port}/hooks/in \(async\)")
    [hook] = httpx.get(f"http://[::1]:{port}/_/functions", timeout=5).json()
    assert hook["triggers"][0]["url"] == f"http://[::1]:{port}/hooks/in"
