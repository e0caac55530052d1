"""Group commit for the Redis store: concurrent script calls share one round trip.

Each call is one Lua script (atomic on its own). Calls made while a round
trip is in flight queue up and go out together in the next pipeline, the
way a database groups concurrent commits into one fsync.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.lowlevel
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runtime.errors import StoreError, StoreUnavailable

MAX_BATCH = 512
"""Most script calls per pipeline, so one round trip stays bounded."""

Arg = str | int | float | bytes
Params = ParamSpec("Params")
T = TypeVar("T")


def store_error(what: str, exc: RedisError) -> StoreError:
    """`exc` as fnrun's error: `StoreUnavailable` when Redis could not be reached
    (the client's reconnects with backoff have run out)."""
    unreachable = isinstance(exc, RedisConnectionError | RedisTimeoutError)
    error = (StoreUnavailable if unreachable else StoreError)(f"redis: {what}: {exc}")
    error.__cause__ = exc
    return error


def redis_errors(
    method: Callable[Params, Coroutine[Any, Any, T]],
) -> Callable[Params, Coroutine[Any, Any, T]]:
    """Raise a store method's redis-py errors as `StoreError`s (see `store_error`)."""

    @functools.wraps(method)
    async def translated(*args: Params.args, **kwargs: Params.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except RedisError as exc:
            raise store_error(method.__name__, exc) from exc

    return translated


@dataclass
class _Call:
    script: str
    args: Sequence[Arg]
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Any = None
    error: Exception | None = None


class ScriptRunner:
    """Runs named Lua scripts by SHA, batching concurrent calls into pipelines."""

    def __init__(self, client: Redis, scripts: Mapping[str, str]) -> None:
        self.client = client
        self.scripts = dict(scripts)
        self.shas: dict[str, str] = {}
        self.round_trips = 0
        self._queue: list[_Call] = []
        self._flushing = False

    async def load(self) -> None:
        """(Re)load every script; Redis forgets them on restart."""
        pipe = self.client.pipeline(transaction=False)
        for source in self.scripts.values():
            pipe.script_load(source)
        shas = await pipe.execute()
        self.shas = dict(zip(self.scripts, shas, strict=True))

    async def call(self, script: str, args: Sequence[Arg]) -> Any:
        """Run `script` with `args` (ARGV) and return its reply."""
        call = _Call(script, args)
        self._queue.append(call)
        if self._flushing:
            await call.done.wait()
        else:
            await self._lead()
        if call.error is not None:
            raise call.error
        return call.result

    async def _lead(self) -> None:
        self._flushing = True
        try:
            # Shielded: the callers waiting on this batch must not hang if
            # the caller that happens to lead it is cancelled.
            with anyio.CancelScope(shield=True):
                await anyio.lowlevel.checkpoint()  # let concurrent callers join this batch
                while self._queue:
                    batch = self._queue[:MAX_BATCH]
                    del self._queue[:MAX_BATCH]
                    await self._send(batch)
        finally:
            self._flushing = False

    async def _send(self, batch: list[_Call]) -> None:
        try:
            replies = await self._execute(batch)
            missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            if missing:
                # NOSCRIPT means not run at all, so running those again is safe.
                await self.load()
                again = await self._execute([batch[i] for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except Exception as exc:  # noqa: BLE001 - each caller raises it
            # Every caller in the batch gets the error; the leader must not
            # raise here, or the callers queued behind it would wait forever.
            replies = [exc] * len(batch)
        for call, reply in zip(batch, replies, strict=True):
            if isinstance(reply, RedisError):
                call.error = store_error(call.script, reply)
            elif isinstance(reply, Exception):
                call.error = reply
            else:
                call.result = reply
            call.done.set()

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for call in batch:
            pipe.evalsha(self.shas[call.script], 0, *call.args)
        self.round_trips += 1
        return list(await pipe.execute(raise_on_error=False))
