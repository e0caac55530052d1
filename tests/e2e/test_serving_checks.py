"""`fnrun run` names a host it cannot serve on, and refuses a blank FNRUN_TOKEN."""

from __future__ import annotations

import os

import pytest

from tests.e2e.harness import Project, fnrun

pytestmark = pytest.mark.timeout(60)

WHERE = "(--host, FNRUN_HOST or http.host in fnrun.yaml)"


@pytest.mark.parametrize(("host", "why"), [
    ("bad host", f"not an IP address or a host name {WHERE}"),
    ("[::1]", "not an IP address or a host name (--host, FNRUN_HOST or http.host in "
              "fnrun.yaml; an IPv6 address goes without brackets)"),
    ("a..b", f"not an IP address or a host name {WHERE}"),
])
@pytest.mark.parametrize("token", [None, "s3cret"])
def test_a_host_that_cannot_be_served_on_is_named_not_a_token_problem(
    project: Project, host: str, why: str, token: str | None
) -> None:
    """It said "set FNRUN_TOKEN to serve beyond 127.0.0.1", which would not have helped."""
    env = {k: v for k, v in os.environ.items() if k != "FNRUN_TOKEN"}
    if token is not None:
        env["FNRUN_TOKEN"] = token
    proc = fnrun("run", "--host", host, "--port", "0", "--project", str(project.root),
                 check=False, env=env)
    assert proc.returncode == 2
    assert proc.stderr == f"fnrun: cannot serve on host {host!r}: {why}\n"
    assert not (project.root / ".fnrun").exists()


def test_a_host_from_fnrun_host_is_checked_too(project: Project) -> None:
    env = {**os.environ, "FNRUN_HOST": "a b"}
    proc = fnrun("run", "--port", "0", "--project", str(project.root), check=False, env=env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("fnrun: cannot serve on host 'a b': not an IP address")


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
@pytest.mark.parametrize("token", [" ", "\t \n"])
def test_a_blank_token_is_refused(project: Project, host: str, token: str) -> None:
    """A token of spaces guards nothing: `Authorization: Bearer  ` would pass."""
    env = {**os.environ, "FNRUN_TOKEN": token}
    proc = fnrun("run", "--host", host, "--port", "0", "--project", str(project.root),
                 check=False, env=env)
    assert proc.returncode == 2
    assert proc.stderr == (
        "fnrun: FNRUN_TOKEN is blank (only whitespace): set a real token, or unset it\n"
    )
