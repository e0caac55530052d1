"""The Redis store: Streams with consumer groups, so several nodes share the work (SPEC 9).

Each function has a stream `fnrun:q:{fn}` read by one consumer group; every
node is a consumer named hostname-pid-random. A claim is XREADGROUP plus due
retries (a sorted set moved into a second stream, `r:{fn}`, read first so they
do not wait behind the backlog) plus XAUTOCLAIM of entries idle past the
function's lease; the deliveries of a node whose heartbeat key
expired are requeued at once. Every state change is one Lua script (see
`redis_scripts`), so XACK and the emits of a success commit atomically, and
concurrent calls share one pipelined round trip (`redis_batch`). A node
blocks on a small wake-up stream instead of polling (`redis_wake`). This
module is the delivery path; inspection and operations are inherited from
`redis_operations`, value encoding is in `redis_records`.

Durability is Redis's: with `appendonly yes` and `appendfsync always` an
acknowledged write survives a crash of Redis itself; with the default
`everysec` up to one second of writes can be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runtime.errors import StoreError
from runtime.events import Event, Outcome
from runtime.flow.rules import FlowRules
from runtime.store.base import Delivery, Success, Targets
from runtime.store.envelope import StoredEvent
from runtime.store.failing import FailureLog
from runtime.store.polling import idle_poll
from runtime.store.redis_batch import Arg, ScriptRunner, redis_errors
from runtime.store.redis_flow import RedisFlow
from runtime.store.redis_operations import RedisOperations
from runtime.store.redis_records import CHUNK, P, publish_args, record_json
from runtime.store.redis_scripts import SCRIPTS
from runtime.store.redis_wake import WakeListener

DEFAULT_LEASE = 60.0
"""Seconds an attempt may run when `configure` did not say (the default timeout)."""
HEARTBEAT_TTL = 10.0
"""A node whose heartbeat is older than this is dead; its deliveries are requeued."""
REAP_EVERY = 1.0
"""How often (s) a claim also looks for dead nodes' and lease-expired deliveries."""
WAKE_POLL = 1.0
"""Longest wait for work: the safety net under the wake-up stream (`redis_wake`)."""
RUNS_MAX = 10_000
"""Most run records kept (besides `retention.history`): each holds up to 64 KiB of logs."""
RETRIES = 40
"""Reconnect attempts per command (backoff capped at 1 s): rides out a Redis restart."""
PUBLISH_RETRIES = 7
"""Reconnect attempts per publish: about 4.5 s of backoff (0.1, 0.2, 0.4, 0.8, then 1 s
each), so that a webhook or `POST /_/events` answers 503 while its sender still waits
for the answer; with `RETRIES` it took over a minute. Claims and outcome writes keep
`RETRIES`: no one waits on them, and they must ride out a restart."""
CONNECT_TIMEOUT = 2.0
"""Seconds to open a connection (TCP); a host that drops packets fails within it."""
COMMAND_TIMEOUT = 10.0
"""Seconds to wait for a reply on the main client (claims, outcome writes, inspection),
then reconnect and retry (`RETRIES`): a hung server (stopped, or the link half-open)
would otherwise hold a call forever. No command there blocks (claims are Lua scripts;
only `redis_wake` blocks, on its own connection), so any reply is far quicker."""
PUBLISH_TIMEOUT = 5.0
"""Seconds a publish waits for its reply. A timeout is not retried, unlike a refused or
dropped connection: a hung server gives a 503 after this, not `PUBLISH_RETRIES` times it."""
SETTLE_CHUNK = 256
"""Most successes per `succeed_many` script call (and Lua `unpack` stays far below its limit)."""


def connect(url: str, retry: Retry, timeout: float) -> Redis:
    """A client (and its connection pool) whose commands wait `timeout` seconds for a
    reply and reconnect as `retry` says (on the errors it lists)."""
    return Redis.from_url(
        url,
        decode_responses=True,
        retry=retry,
        socket_timeout=timeout,
        socket_connect_timeout=CONNECT_TIMEOUT,
        health_check_interval=5,
    )


def reconnects(retries: int, on_timeout: bool = True) -> Retry:
    """redis-py's retry policy: up to `retries` reconnects, backoff doubling from 0.1 s to 1 s,
    after a lost or refused connection and, if `on_timeout`, after a reply timed out."""
    errors: tuple[type[RedisError], ...] = (RedisConnectionError,)  # a restart's LOADING too
    if on_timeout:
        errors += (RedisTimeoutError,)
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=retries, supported_errors=errors)


def lease_margin(lease: float) -> float:
    """Extra idle time past the lease before another node takes a delivery over."""
    return min(30.0, max(1.0, lease / 2))


class RedisStore(RedisOperations):
    """`Store` on Redis Streams; any number of processes may share one database."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.heartbeat_ttl = HEARTBEAT_TTL
        self._client: Redis | None = None
        self._runner: ScriptRunner | None = None
        self._publisher: ScriptRunner | None = None
        """Runs publishes on a client of their own, with `PUBLISH_RETRIES`."""
        self._beat: asyncio.Task[None] | None = None
        self._beat_client: Redis | None = None
        self.beat_trouble: FailureLog | None = None
        self._listener: asyncio.Task[None] | None = None
        self._wake_listener: WakeListener | None = None
        self._wake_poll = idle_poll(WAKE_POLL)
        self._entries: dict[str, str] = {}  # delivery id -> stream entry it was claimed as
        self._reaped: dict[str, float] = {}

    def flow(self, function: str, rules: FlowRules) -> RedisFlow:
        return RedisFlow(self, function, rules)

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        """Connect, load the scripts and start this node's heartbeat."""
        # A wrong URL fails at once.
        client = connect(self.url, Retry(NoBackoff(), retries=0), COMMAND_TIMEOUT)
        # A retry policy belongs to a connection pool: publishes get a pool of their own.
        publisher = connect(self.url, reconnects(PUBLISH_RETRIES, on_timeout=False),
                            PUBLISH_TIMEOUT)
        try:
            await client.ping()
            # From now on commands retry with backoff while Redis restarts; every
            # script is safe to run twice (publish is idempotent by id, settles by XACK).
            client.set_retry(reconnects(RETRIES))
            self._runner = ScriptRunner(client, SCRIPTS)
            await self._runner.load()
            self._publisher = ScriptRunner(publisher, SCRIPTS)
            await self._publisher.load()
            await self._heartbeat(client)
            self._wake_listener = WakeListener(self.url, self._wake_up)
            await self._wake_listener.start()
        except RedisError as exc:
            await client.aclose()
            await publisher.aclose()
            if self._wake_listener is not None:
                await self._wake_listener.stop()
                self._wake_listener = None
            raise StoreError(f"cannot open Redis store {self.url}: {exc}") from exc
        self._client = client
        # Its own client, without reconnect retries: a beat that waited out the
        # main client's 40 reconnects would report a failure only after other
        # nodes had taken this one for dead; the next beat is the retry.
        self._beat_client = connect(self.url, Retry(NoBackoff(), retries=0), HEARTBEAT_TTL / 4)
        loop = asyncio.get_running_loop()
        self._beat = loop.create_task(self._beat_forever(self._beat_client))
        self._listener = loop.create_task(self._wake_listener.run())

    async def close(self) -> None:
        """Stop the heartbeat and say goodbye, so others requeue our running work now."""
        if self._wake_listener is not None:
            await self._wake_listener.stop()
        for task in (self._beat, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._beat = self._listener = self._wake_listener = None
        if self._beat_client is not None:
            await self._beat_client.aclose()
            self._beat_client = None
        if self._client is not None:
            with contextlib.suppress(RedisError):
                await self._client.delete(f"{P}node:{self.consumer}")
            await self._client.aclose()
            self._client = None
        if self._publisher is not None:
            await self._publisher.client.aclose()
            self._publisher = None

    async def _heartbeat(self, client: Redis) -> None:
        await client.set(f"{P}node:{self.consumer}", "1", px=int(self.heartbeat_ttl * 1000))

    async def _beat_forever(self, client: Redis) -> None:
        trouble = self.beat_trouble = FailureLog(
            "the Redis heartbeat", "other nodes take this node's running deliveries over "
            f"once its last heartbeat is {self.heartbeat_ttl:g} s old")
        while True:
            await asyncio.sleep(self.heartbeat_ttl / 4)
            try:
                await self._heartbeat(client)
            except Exception as exc:  # noqa: BLE001 - RedisError, or a bug: the beat goes on; trouble logs it
                trouble.failed(exc)
            else:
                trouble.worked()

    @property
    def client(self) -> Any:
        # Any: redis-py's stubs cannot express that decode_responses=True
        # makes every reply a str.
        if self._client is None:
            raise StoreError("the Redis store is not open")
        return self._client

    async def _call(self, script: str, args: Sequence[Arg]) -> Any:
        if self._runner is None or self._client is None:
            raise StoreError("the Redis store is not open")
        return await self._runner.call(script, args)

    @property
    def round_trips(self) -> int:
        """Script round trips so far (for the benchmark)."""
        runners = (self._runner, self._publisher)
        return sum(runner.round_trips for runner in runners if runner is not None)

    # -- ingress -----------------------------------------------------------

    async def publish(self, items: Sequence[tuple[Event, Targets]]) -> list[bool]:
        # Its own runner (and client): a publish gives up after PUBLISH_RETRIES,
        # while the claims and settles batched on the main one keep reconnecting.
        if self._publisher is None or self._client is None:
            raise StoreError("the Redis store is not open")
        new: list[bool] = []
        for start in range(0, len(items), CHUNK):
            part = items[start : start + CHUNK]
            flags = await self._publisher.call("publish", publish_args(part))
            new += [bool(f) for f in flags]
        self._wake(items)
        self.outage.recovered()
        return new

    def _wake(self, items: Sequence[tuple[Event, Targets]]) -> None:
        for function in {t for _, targets in items for t in targets}:
            self.notify(function)

    # -- delivery ----------------------------------------------------------

    def _min_idle_ms(self, function: str) -> int:
        lease = self.leases.get(function, DEFAULT_LEASE)
        return int((lease + lease_margin(lease)) * 1000)

    async def claim(self, function: str, limit: int, now: float) -> list[Delivery]:
        if limit <= 0:
            return []
        min_idle = -1
        if time.monotonic() - self._reaped.get(function, 0.0) >= REAP_EVERY:
            self._reaped[function] = time.monotonic()
            await self._call("reap", [function, self.consumer, 0, -1])
            min_idle = self._min_idle_ms(function)
        args: list[Arg] = [function, self.consumer, limit, int(now * 1000), min_idle]
        rows = await self._call("claim", args)
        out = []
        for entry, first, attempt, body in rows:
            delivery = Delivery(
                id=f"{function}/{first}",
                function=function,
                event=StoredEvent.of(json.loads(body)),
                attempt=int(attempt),
            )
            self._entries[delivery.id] = entry
            out.append(delivery)
        return out

    async def next_due(self, function: str) -> float | None:
        due = await self._call("next_due", [function])
        return None if due is None else float(due) / 1000

    def _settle_args(self, delivery: Delivery, outcome: Outcome) -> list[Arg]:
        entry = self._entries.pop(delivery.id, None)
        if entry is None:
            raise StoreError(f"delivery {delivery.id} was not claimed by this store")
        return [
            delivery.function, self.consumer, entry, *self._item_args(delivery, outcome), RUNS_MAX,
        ]  # fmt: skip

    @staticmethod
    def _item_args(delivery: Delivery, outcome: Outcome) -> list[Arg]:
        """First entry id, event id and run record of a settled attempt."""
        record = record_json(delivery.function, delivery.event, delivery.attempt, outcome)
        return [delivery.id.partition("/")[2], delivery.event.id, record]

    async def succeed(
        self, delivery: Delivery, outcome: Outcome, emits: Sequence[tuple[Event, Targets]]
    ) -> None:
        args = self._settle_args(delivery, outcome) + publish_args(emits)
        await self._call("succeed", args)
        self._wake(emits)

    async def succeed_many(self, items: Sequence[Success]) -> None:
        # One script call per chunk instead of one per delivery: the client's
        # per-call encoding and reply parsing is what bounds a node.
        for start in range(0, len(items), SETTLE_CHUNK):
            part = items[start : start + SETTLE_CHUNK]
            args: list[Arg] = [self.consumer, RUNS_MAX, len(part)]
            for delivery, outcome, emits in part:
                entry = self._entries.get(delivery.id)
                if entry is None:
                    raise StoreError(f"delivery {delivery.id} was not claimed by this store")
                first = delivery.id.partition("/")[2]
                args += [f"{delivery.function} {entry} {first} {len(emits)}", delivery.event.id]
                function, event, attempt = delivery.function, delivery.event, delivery.attempt
                args.append(record_json(function, event, attempt, outcome))
                if emits:
                    args += publish_args(emits)[1:]
            await self._call("succeed_many", args)
            # Entries are dropped only once written: a failed call is retried one by one.
            for delivery, _, emits in part:
                self._entries.pop(delivery.id, None)
                self._wake(emits)

    async def fail(self, delivery: Delivery, outcome: Outcome, retry_at: float | None) -> None:
        args = self._settle_args(delivery, outcome)
        due = "" if retry_at is None else int(retry_at * 1000)
        args += [due, repr(time.time()), delivery.attempt]
        args += [outcome.error or "", outcome.traceback or ""]
        await self._call("fail", args)

    async def record(self, calls: Sequence[tuple[str, Event, Outcome]]) -> None:
        for start in range(0, len(calls), CHUNK):  # Lua's unpack takes a few thousand
            part = calls[start : start + CHUNK]
            args: list[Arg] = [RUNS_MAX, len(part)]
            for function, event, outcome in part:
                args += [function, event.id, record_json(function, event, 1, outcome)]
            await self._call("record", args)

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        args: list[Arg] = []
        for delivery in deliveries:
            entry = self._entries.pop(delivery.id, None)
            if entry is not None:
                args += [delivery.function, entry]
        if args:
            await self._call("release", [self.consumer, len(args) // 2, *args])
        for function in {d.function for d in deliveries}:
            self.notify(function)

    @redis_errors
    async def recover(self) -> int:
        """Requeue what dead nodes, lease-expired attempts and this node (starting) hold."""
        functions = await self.client.smembers(f"{P}fns")
        moved = 0
        for function in sorted(functions):
            args = [function, self.consumer, 1, self._min_idle_ms(function)]
            moved += int(await self._call("reap", args))
        self._entries.clear()
        return moved

    def _wake_up(self, functions: Iterable[str]) -> None:
        """The wake listener's callback: the functions named, or () for all of them."""
        if not functions:
            # Entries may be lost: every dispatcher, also those busy claiming,
            # whose claim may have run before the work its entry announced.
            self.wake_all()
        for function in functions:
            self.notify(function)

    async def wait_for_work(self, function: str, timeout: float) -> None:  # noqa: ASYNC109
        await self.wait_for_notify(function, min(timeout, self._wake_poll))

    # -- schedules ---------------------------------------------------------

    async def fire_tick(self, function: str, tick: float, event: Event, targets: Targets) -> bool:
        args = [function, repr(tick), *publish_args([(event, targets)])[1:]]
        fired = bool(await self._call("fire_tick", args))
        if fired:
            self._wake([(event, targets)])
        return fired

