"""A retry whose backoff has passed does not wait behind the backlog (issue 17 point 12).

Claims took pending deliveries in due order, and a retry is due at its
backoff's end: under overload it waited behind every fresh delivery published
before then (17.9 s at 125% load). Here one function with one worker has
`BACKLOG` x `WORK` seconds of fresh work queued when an attempt fails; its
retry must start within `LATE` of the latest moment it can fall due.
"""

from __future__ import annotations

import pytest

from tests.e2e.harness import Project, wait_until

pytestmark = pytest.mark.timeout(120)

BACKLOG = 200
WORK = 0.02
"""Seconds each backlog event takes: the backlog is 4 s of work for the one worker."""
BACKOFF = 0.1
LATE = 1.0
"""Most seconds between the retry's latest due time and its start."""


def test_a_due_retry_starts_before_the_backlog_published_ahead_of_it(
    project: Project, store_url: str | None
) -> None:
    if store_url is not None:
        project.write("fnrun.yaml", f"store: {store_url}\n")
    project.add("busy", f"""
        functions:
          busy:
            handler: busy.py:handle
            triggers: [{{event: job.flaky}}, {{event: job.plain}}]
            retry: {{max_attempts: 2, backoff: {int(BACKOFF * 1000)}ms}}
    """, f"""
        import pathlib, time

        def handle(event, ctx):
            root = pathlib.Path(__file__).parent.parent
            if event.type == "job.flaky" and ctx.attempt == 1:
                # Fails once the backlog is queued: it is due before the retry.
                (root / "started").touch()
                deadline = time.monotonic() + 30
                while not (root / "queued").exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
                record(event, ctx)  # its "t" is when it failed
                raise RuntimeError("first attempt fails")
            record(event, ctx)
            time.sleep({WORK})
    """)
    project.start()
    [flaky] = project.publish([{"type": "job.flaky"}])
    wait_until(lambda: (project.root / "started").exists())
    project.publish([{"type": "job.plain"} for _ in range(BACKLOG)])
    (project.root / "queued").touch()
    wait_until(lambda: project.handled("busy")[flaky] == 2, timeout=60)

    [failed, retry] = [c for c in project.calls() if c["id"] == flaky]
    # Due at most one backoff after the attempt failed (equal jitter: half to all of it).
    latest_due = failed["t"] + BACKOFF
    plain_before = sum(1 for c in project.calls() if c["id"] != flaky and c["t"] < retry["t"])
    assert retry["t"] - latest_due < LATE, (
        f"the retry started {retry['t'] - latest_due:.2f}s after it fell due, "
        f"after {plain_before} of the {BACKLOG} backlog events")
