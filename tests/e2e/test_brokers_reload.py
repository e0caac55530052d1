"""Hot reload of brokers, sources and sinks (SPEC 10) under `fnrun run --reload`, on Redis
Streams: a source added starts importing, a changed one restarts, a removed one stops
with everything it read stored and acknowledged (what came after waits in the stream),
and added back it imports what waited; a sink added exports what is emitted from then
on. Every message is handled, none twice."""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NoReturn

import anyio
import httpx
import pytest
import redis.asyncio

from tests.e2e.harness import Project, fnrun
from tests.runtime.brokers.conftest import make_rig
from tests.runtime.brokers.rigs import RedisRig, body_of

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

RELAY = '''
def handler(event, ctx):
    record(event, ctx, n=event.data["n"])
    ctx.emit("test.out", {"n": event.data["n"]}, id=f"out-{event.id}")
'''


@pytest.fixture
async def rig(
    tmp_path: Path, service_missing: Callable[[str], NoReturn]
) -> AsyncIterator[RedisRig]:
    made = make_rig("redis", tmp_path, service_missing)
    assert isinstance(made, RedisRig)
    await made.setup()
    try:
        yield made
    finally:
        await made.teardown()


def config(rig: RedisRig, source: dict[str, Any] | None, sink: bool) -> str:
    out: dict[str, Any] = {"brokers": {"b": {"url_env": "FNRUN_TEST_BROKER"}}}
    if source is not None:
        out["sources"] = {"s": {"broker": "b", "stream": rig.name, "group": "g",
                                "type": "test.in", **source}}
    if sink:
        out["sinks"] = {"out": {"broker": "b", "stream": f"{rig.name}-out", "events": "test.out"}}
    return json.dumps(out)


async def until(check: Callable[[], Any], within: float = 20) -> Any:
    with anyio.fail_after(within):
        while True:
            value = await anyio.to_thread.run_sync(check)
            if value:
                return value
            await anyio.sleep(0.1)


def health(project: Project) -> dict[str, Any]:
    return dict(httpx.get(project.url("/_/health"), timeout=5).json())


async def test_sources_and_sinks_follow_the_yaml(rig: RedisRig, tmp_path: Path) -> None:
    project = Project(tmp_path / "project")
    project.write("fnrun.yaml", config(rig, None, sink=False))
    project.add("relay", """
        functions:
          relay: {handler: relay.py:handler, triggers: [{event: test.in}]}
    """, RELAY)
    direct = redis.asyncio.Redis.from_url(rig.url.replace(str(rig.proxy.port), str(rig.port)))
    sent = 0

    async def produce(count: int) -> None:
        nonlocal sent
        for i in range(sent, sent + count):
            await rig.native_publish(body_of(i), {}, "application/json")
        sent += count

    def handled() -> set[int]:
        return {c["n"] for c in project.calls()}

    try:
        await anyio.to_thread.run_sync(
            lambda: project.start("--reload", env={"FNRUN_TEST_BROKER": rig.url}))
        assert health(project)["sources"] == {}

        project.write("fnrun.yaml", config(rig, {"prefetch": 10}, sink=False))  # added
        await until(lambda: "s" in health(project)["sources"])
        await produce(20)
        await until(lambda: handled() == set(range(20)))

        # A mistake keeps the last good declarations running and is named in /_/health.
        project.write("fnrun.yaml", config(rig, {"prefetch": 5, "broker": "nope"}, sink=True))
        await until(lambda: "unknown broker 'nope'" in str(health(project)["reload_error"]))
        assert health(project)["sources"]["s"]["prefetch"] == 10
        assert "out" not in health(project)["sinks"]

        project.write("fnrun.yaml", config(rig, {"prefetch": 5}, sink=True))  # changed
        await until(lambda: health(project)["sources"]["s"]["prefetch"] == 5
                    and "out" in health(project)["sinks"])
        assert health(project)["reload_error"] is None
        await produce(20)
        await until(lambda: handled() == set(range(40)))
        await until(lambda: _len(direct, f"{rig.name}-out", 20))  # only what came after

        project.write("fnrun.yaml", config(rig, None, sink=True))  # removed
        await until(lambda: health(project)["sources"] == {})
        groups = await direct.xinfo_groups(rig.name)
        assert [int(g["pending"]) for g in groups] == [0]  # all it read is acknowledged
        await produce(10)
        await anyio.sleep(0.5)  # nothing consumes them: they wait in the stream
        assert handled() == set(range(40))

        project.write("fnrun.yaml", config(rig, {"prefetch": 5}, sink=True))  # back
        await until(lambda: handled() == set(range(50)))
        counts = project.handled()
        assert max(counts.values()) == 1, counts  # none twice

        # fnrun ls and GET /_/brokers show them with the running supervisor's state.
        env = {**os.environ, "FNRUN_PORT": str(project.port), "FNRUN_TOKEN": ""}
        listed = await anyio.to_thread.run_sync(
            lambda: fnrun("ls", "--project", str(project.root), env=env).stdout)
        assert re.search(r"^b +redis +redis://127\.0\.0\.1:\d+/10 +up$", listed, re.M), listed
        assert re.search(r"^s +b +test\.in +running +50$", listed, re.M), listed
        assert re.search(r"^out +b +test\.out +binary +0$", listed, re.M), listed
        async with httpx.AsyncClient(timeout=5) as client:
            live = (await client.get(project.url("/_/brokers"))).json()
        assert live["brokers"]["b"]["state"] == "up"
        assert live["sources"]["s"]["messages"] == 50  # over the source's restarts
        assert live["sinks"]["out"]["pending"] == 0
    finally:
        project.close()
        await direct.aclose()


def _len(client: redis.asyncio.Redis, stream: str, count: int) -> bool:
    return bool(anyio.from_thread.run(client.xlen, stream) == count)
