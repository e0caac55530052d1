"""A broker nobody answers for (SPEC 10): `fnrun run` starts and stays healthy (200), names
the broker down with its error in `/_/health`, `fnrun ls` and `/_/metrics`, keeps trying
without a crash loop, and a sink's deliveries wait as pending (retried, not lost)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import Project, fnrun, free_port, wait_until


@pytest.mark.slow  # ~4-8 s: a sink attempt waits its 1 s timeout, then a graceful stop
def test_a_broker_that_is_down_is_named_and_waited_for(tmp_path: Path) -> None:
    project = Project(tmp_path / "project")
    dead = free_port()  # nothing listens there
    project.write("fnrun.yaml", json.dumps({
        "brokers": {"gone": {"url": f"redis://127.0.0.1:{dead}/0"}},
        "sources": {"s": {"broker": "gone", "stream": "in", "type": "t.in"}},
        "sinks": {"out": {"broker": "gone", "stream": "out", "events": "t.out", "timeout": "1s",
                          "retry": {"max_attempts": 100, "backoff": "0.5s"}}},
    }))
    project.add("f", "functions:\n  f: {handler: f.py:main, triggers: [{event: t.in}]}\n",
                "def main(event, ctx):\n    pass\n")
    validated = fnrun("validate", "--project", str(project.root)).stdout
    assert validated.endswith("; 1 source and 1 sink on 1 broker\n"), validated
    try:
        project.start()
        project.publish([{"type": "t.out", "data": {"n": 1}}])

        def down() -> dict[str, object] | None:
            response = httpx.get(project.url("/_/health"), timeout=5)
            assert response.status_code == 200  # a broker down is informative, not a 503
            broker = response.json()["brokers"]["gone"]
            return broker if broker["state"] == "down" else None

        broker = wait_until(down, timeout=15)
        assert "Redis" in str(broker["error"]) and broker["since"]
        health = httpx.get(project.url("/_/health"), timeout=5).json()
        assert health["sources"]["s"]["state"] == "waiting"
        metrics = httpx.get(project.url("/_/metrics"), timeout=5).text
        assert 'fnrun_broker_up{broker="gone"} 0.0' in metrics
        assert 'fnrun_sink_pending{sink="out"} 1.0' in metrics
        env = {**os.environ, "FNRUN_PORT": str(project.port), "FNRUN_TOKEN": ""}
        listed = fnrun("ls", "--project", str(project.root), env=env).stdout
        assert re.search(rf"^gone +redis +redis://127\.0\.0\.1:{dead}/0 +down +\S", listed,
                         re.M), listed
        assert re.search(r"^out +gone +t\.out +binary +1$", listed, re.M), listed
        # Still running, still trying (a link reconnects; it never takes the supervisor down).
        [proc] = project.procs
        assert proc.poll() is None
        assert project.stop(proc) == 0
    finally:
        project.close()
    assert "Traceback" not in project.output()


HIDDEN_CLIENT = (
    "import sys; sys.modules['aiokafka'] = None  # as if fnrun[kafka] were not installed\n"
    "from runtime.cli.main import main; main(sys.argv[1:])"
)


def test_a_missing_client_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    """At validate and at start (`fnrun run` validates first), without a traceback."""
    project = Project(tmp_path / "project")
    project.write("fnrun.yaml", json.dumps({
        "brokers": {"k": {"url_env": "KAFKA_URL"}},
        "sources": {"s": {"broker": "k", "topic": "t", "type": "t.in"}},
    }))
    project.add("f", "functions:\n  f: {handler: f.py:main, triggers: [{event: t.in}]}\n",
                "def main(event, ctx):\n    pass\n")
    env = {**os.environ, "KAFKA_URL": "kafka://127.0.0.1:9", "FNRUN_TOKEN": ""}
    for command in (["validate"], ["run", "--port", "0"]):
        proc = subprocess.run(
            [sys.executable, "-c", HIDDEN_CLIENT, *command, "--project", str(project.root)],
            capture_output=True, text=True, timeout=60, env=env, cwd=project.root)
        assert proc.returncode == 1, proc.stderr
        [line] = proc.stderr.splitlines()
        assert line.startswith(f"{project.root / 'fnrun.yaml'}:1:31: broker 'k'"), line
        assert line.endswith("kafka:// brokers need the aiokafka client: "
                             "pip install 'fnrun[kafka]'"), line
