"""A Redis that accepts connections and never answers: webhooks answer 503 within seconds.

The private redis-server is stopped with SIGSTOP (never the shared one on
:6379), so its kernel still completes connections while nothing replies. A
webhook sender waits seconds for its answer, so the publish behind a webhook
or `POST /_/events` must give up before it does; once the server runs
again, the same node takes events and runs them.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.harness import Project, RedisServer, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(180)]

ANSWER_BOUND = 20.0
"""Seconds a request may take to answer 503 (about 5 s, on a loaded 2-core machine)."""

HOOK = (
    """
    functions:
      hook:
        handler: hook.py:handle
        triggers: [{webhook: {path: /hook}}, {event: "job.*"}]
    """,
    """
    def handle(event, ctx):
        record(event, ctx)
    """,
)


@pytest.fixture
def stoppable(own_redis: RedisServer) -> Iterator[int]:
    """The private server's pid, continued after the test whatever happened."""
    assert own_redis.proc is not None
    yield own_redis.proc.pid
    os.kill(own_redis.proc.pid, signal.SIGCONT)


def event(event_id: str) -> dict[str, str]:
    return {"specversion": "1.0", "id": event_id, "source": "t", "type": "job.run"}


def test_webhooks_answer_503_within_seconds_while_redis_hangs_then_work_again(
    project: Project, own_redis: RedisServer, stoppable: int
) -> None:
    project.add("hook", *HOOK)
    project.start("--store", f"redis://127.0.0.1:{own_redis.port}/9")
    with httpx.Client(timeout=60) as client:
        assert client.post(project.url("/hook"), json={"n": 0}).status_code == 202
        os.kill(stoppable, signal.SIGSTOP)
        answers = []
        for send in (
            lambda: client.post(project.url("/hook"), json={"n": 1}),
            lambda: client.post(project.url("/_/events"), json=event("e1"),
                                headers={"content-type": "application/cloudevents+json"}),
        ):
            started = time.monotonic()
            answer = send()
            answers.append((answer.status_code, answer.json(), time.monotonic() - started))
        os.kill(stoppable, signal.SIGCONT)
        for status, body, took in answers:
            assert (status, body) == (503, {"error": "store unavailable, try again later"})
            assert took < ANSWER_BOUND
        last = str(uuid.uuid4())
        accepted = client.post(project.url("/_/events"), json=event(last),
                               headers={"content-type": "application/cloudevents+json"})
        assert accepted.status_code == 202, accepted.text
    wait_until(lambda: last in project.handled("hook"), timeout=60)
