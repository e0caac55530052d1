"""Scenario 6: hot reload, save -> new code serving, over ~20 saves.

`fnrun run --reload` serves a sync webhook whose handler returns a version
string. Each save rewrites the handler with the next version; the clock stops
when the webhook answers with it (polled every 5 ms).
"""

from __future__ import annotations

import time

import httpx

from bench import fnrun_app
from bench.harness import Case, Context, Scenario, Target
from bench.procs import high_ms, percentile, wait_until

DECLARATIONS = """\
functions:
  version:
    handler: version.py:version
    triggers:
      - webhook: {path: /hooks/version, methods: [POST], mode: sync}
"""
HANDLER = """\
def version(event):
    return "v{n}"
"""
GAP = 0.2
"""Seconds between one save being served and the next save."""


def _answers(client: httpx.Client, expected: str) -> bool:
    try:
        answer = client.post("/hooks/version", json={})
    except httpx.HTTPError:
        return False
    return answer.status_code == 200 and answer.text.strip().strip('"') == expected


def save_to_serve(ctx: Context) -> dict[str, float]:
    project = fnrun_app.write_project(ctx.scratch("reload"), DECLARATIONS,
                                      {"version.py": HANDLER.format(n=0)})
    handler = project / "functions" / "version.py"
    supervisor = fnrun_app.Supervisor(ctx, project, fnrun_app.sqlite_url(project), reload=True,
                                      name="fnrun-reload")
    delays = []
    try:
        supervisor.wait_ready()
        client = supervisor.http
        wait_until(lambda: _answers(client, "v0"), 30, "the first version to answer")
        for n in range(1, int(ctx.pick(20, 5)) + 1):
            time.sleep(GAP)
            handler.write_text(HANDLER.format(n=n))
            saved = time.monotonic()
            wait_until(lambda n=n: _answers(client, f"v{n}"), 30,  # type: ignore[misc]
                       f"version v{n} to answer", every=0.005)
            delays.append((time.monotonic() - saved) * 1000)
    finally:
        supervisor.stop()
    return {"save->serve p50 ms": percentile(delays, 50), **high_ms(delays, "save->serve ")}


SCENARIO = Scenario(
    name="reload",
    title="Hot reload: save -> new code serving",
    cases=[Case("fnrun --reload", save_to_serve)],
    targets={
        ("fnrun --reload", "save->serve p50 ms"): Target("<= 200 ms", lambda v: v <= 200),
        ("fnrun --reload", "save->serve max ms"): Target("<= 1,000 ms (a p99 target, held "
                                                         "by the max)", lambda v: v <= 1000),
    },
    notes=(
        "20 saves (5 with --quick) of the handler file, rewritten in place; each is timed "
        "until a sync webhook answers with the new version: p50 and the maximum (20 "
        "samples cannot place a p99; the issue's p99 target is checked against the "
        "maximum). No peer: the issue cites SAM at "
        "10 s or more per save and Azure/Celery without hot reload."
    ),
)
